"""MkDocs hook: the docs' generated sections (`tools/docs_gen.py`) filled in at build time."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docs_gen  # noqa: E402


def on_page_markdown(markdown: str, page, config, files) -> str:
    return docs_gen.expand(markdown)
