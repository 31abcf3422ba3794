"""Spark's Python workers: a fixed cost of every Python task on Python 3.10–3.12, removed.

PySpark's worker calls `importlib.invalidate_caches()` at the start of every task (to see the
task's `--py-files`). On Python 3.10–3.12 that makes every zip importer re-read its archive's
whole directory at once: `pyspark.zip` once per package imported from it, and the spark-core jar
(5,000 entries) that Spark puts on its workers' Python path. Measured on 2 cores: ~0.15 s of a
~0.25 s trivial pandas-UDF task, paid by every task of every Python UDF — by each notify chunk
before its first request. `keep_zip_directories` (called in the worker by the functions that run
there: the first task of a worker pays, the next ones do not) lets an archive be re-read only
when its size or modification time changed, which is what the invalidation is for (a new
`--py-files` archive has a path of its own and is read as before). Python 3.13 reads lazily and
is left alone.
"""

from __future__ import annotations

import os
import sys
import zipimport

_EAGER = (3, 10) <= sys.version_info[:2] <= (3, 12)
_installed = False


def keep_zip_directories() -> None:
    """Make zip importers skip re-reading an unchanged archive on `importlib.invalidate_caches()`
    (idempotent, cheap once installed; nothing on Python versions that read archives lazily)."""
    global _installed
    if _installed or not _EAGER:
        return
    _installed = True
    reread = zipimport.zipimporter.invalidate_caches
    read_as: dict[str, tuple[int, int]] = {}  # archive → (size, mtime) when its directory was read

    def invalidate_caches(self) -> None:
        try:
            st = os.stat(self.archive)
        except OSError:
            return reread(self)
        stamp = (st.st_size, st.st_mtime_ns)
        cached = zipimport._zip_directory_cache.get(self.archive)
        if cached is not None and read_as.get(self.archive) == stamp:
            self._files = cached
            return None
        reread(self)
        read_as[self.archive] = stamp
        return None

    zipimport.zipimporter.invalidate_caches = invalidate_caches
