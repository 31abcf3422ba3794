"""Spark's Python workers: `importlib.invalidate_caches()` (which PySpark calls before every task)
no longer re-reads an unchanged zip archive, and still re-reads one that changed."""

from __future__ import annotations

import importlib
import os
import zipfile
import zipimport

import pytest

from campaign_pipeline import python_workers


def _write(archive, name: str, source: str) -> None:
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{name}.py", source)


@pytest.mark.skipif(not python_workers._EAGER, reason="this Python reads zip archives lazily already")
def test_an_unchanged_archive_is_not_read_again_and_a_changed_one_is(tmp_path, monkeypatch):
    archive = tmp_path / "included.zip"
    _write(archive, "cp_zip_first", "VALUE = 1\n")
    monkeypatch.syspath_prepend(str(archive))
    python_workers.keep_zip_directories()
    python_workers.keep_zip_directories()  # twice is once
    assert importlib.import_module("cp_zip_first").VALUE == 1
    importlib.invalidate_caches()  # read once more: its stamp when read is now known

    reads: list[str] = []
    read = zipimport._read_directory
    monkeypatch.setattr(zipimport, "_read_directory", lambda path: reads.append(path) or read(path))
    importlib.invalidate_caches()
    assert str(archive) not in reads

    _write(archive, "cp_zip_second", "VALUE = 2\n")
    stamp = os.stat(archive).st_mtime_ns + 1_000_000_000  # a rewrite within the clock's tick still counts
    os.utime(archive, ns=(stamp, stamp))
    importlib.invalidate_caches()
    assert reads.count(str(archive)) >= 1
    assert importlib.import_module("cp_zip_second").VALUE == 2
