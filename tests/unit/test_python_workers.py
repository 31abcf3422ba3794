"""Spark's Python workers: `importlib.invalidate_caches()` (which PySpark calls before every task)
no longer re-reads an unchanged zip archive, and still re-reads one that changed — even rewritten
in place with the same size and modification time."""

from __future__ import annotations

import importlib
import os
import zipfile
import zipimport

import pytest

from campaign_pipeline import python_workers

pytestmark = pytest.mark.skipif(not python_workers._EAGER, reason="this Python reads zip archives lazily already")


def _write(archive, files: list[tuple[str, str]]) -> None:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for name, source in files:
            z.writestr(name, source)


@pytest.fixture
def kept(monkeypatch):
    """The patch installed for this test only."""
    monkeypatch.setattr(zipimport.zipimporter, "invalidate_caches", zipimport.zipimporter.invalidate_caches)
    monkeypatch.setattr(python_workers, "_installed", False)
    python_workers.keep_zip_directories()
    python_workers.keep_zip_directories()  # twice is once


def test_an_unchanged_archive_is_not_read_again(tmp_path, monkeypatch, kept):
    archive = tmp_path / "included.zip"
    _write(archive, [("cp_zip_first.py", "VALUE = 1\n")])
    monkeypatch.syspath_prepend(str(archive))
    assert importlib.import_module("cp_zip_first").VALUE == 1
    importlib.invalidate_caches()  # read once more: its stamp when read is now known
    reads: list[str] = []
    read = zipimport._read_directory
    monkeypatch.setattr(zipimport, "_read_directory", lambda path: reads.append(path) or read(path))
    importlib.invalidate_caches()
    importlib.invalidate_caches()
    assert str(archive) not in reads


def test_an_archive_rewritten_with_the_same_size_and_time_is_read_again(tmp_path, monkeypatch, kept):
    archive = tmp_path / "deps.zip"
    _write(archive, [("cp_zip_a.py", "A = 'first  '\n"), ("cp_zip_b.py", "B = 1\n")])
    before = os.stat(archive)
    monkeypatch.syspath_prepend(str(archive))
    assert importlib.import_module("cp_zip_a").A == "first  "
    importlib.invalidate_caches()
    # the same names and total size, another layout; the same modification time (a coarse file system)
    _write(archive, [("cp_zip_a.py", "A = 'x'\n"), ("cp_zip_b.py", "B = 1234567\n")])
    assert os.stat(archive).st_size == before.st_size
    os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns))
    importlib.invalidate_caches()  # what PySpark's worker does before the next task
    assert importlib.import_module("cp_zip_b").B == 1234567
