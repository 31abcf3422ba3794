"""The project's own jars, shipped inside the package: `campaign-pipeline-udfs.jar` (the JVM phone
parser) and `campaign-pipeline-localfs.jar` (a local file system that forks no processes).

`make install` builds them from jvm/ with Maven and puts them here, so a wheel carries them and
`location()` finds them wherever the package is installed.
"""

from __future__ import annotations

from pathlib import Path

UDF_JAR = "campaign-pipeline-udfs.jar"
LOCALFS_JAR = "campaign-pipeline-localfs.jar"


def location() -> Path:
    """The folder that holds the package's own jars."""
    return Path(__file__).resolve().parent


def path(name: str) -> Path | None:
    """One of the package's jars (`UDF_JAR`, `LOCALFS_JAR`), or None when it was not built."""
    jar = location() / name
    return jar if jar.is_file() else None
