"""Where a relative path in a notebook or a config points: the project's folder, wherever it is used from.

A notebook's kernel runs in `notebooks/`, a terminal anywhere in the checkout; `project_path`
makes `conf/campaigns/x.yaml` or `warehouse` mean the same in both. The project root is the
nearest folder, from the current one upward, that holds `conf/environments/` (else the current
folder: an installed package used outside any checkout).
"""

from __future__ import annotations

from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / "environments").is_dir():
            return folder
    return here


def project_path(path: str) -> str:
    """`path` as is when absolute or a URI (s3://…), else against the project root."""
    if "://" in path or Path(path).expanduser().is_absolute():
        return str(Path(path).expanduser()) if "://" not in path else path
    return str(project_root() / path)
