"""Spark's Python workers: a fixed cost of every Python task on Python 3.10–3.12, removed.

PySpark's worker calls `importlib.invalidate_caches()` at the start of every task (to see the
task's `--py-files`). On Python 3.10–3.12 that makes every zip importer re-read its archive's
whole directory at once: `pyspark.zip` once per package imported from it, and the spark-core jar
(5,000 entries) that Spark puts on its workers' Python path. Measured on 2 cores: ~0.15 s of a
~0.25 s trivial pandas-UDF task, paid by every task of every Python UDF — by each notify chunk
before its first request. `keep_zip_directories` (called in the worker by the functions that run
there: the first task of a worker pays, the next ones do not) lets an archive be re-read only
when it changed — its file, size, time or central directory's checksum (well under a
millisecond for the spark-core jar, against ~50 ms to read its directory) — which is what the
invalidation is for (a new `--py-files` archive has a path of its own and is read as before).
Python 3.13 reads lazily and is left alone.
"""

from __future__ import annotations

import os
import struct
import sys
import zipimport
import zlib

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
    read_as: dict[str, tuple] = {}  # archive → its stamp when its directory was read

    def invalidate_caches(self) -> None:
        try:
            stamp = _stamp(self.archive)
        except (OSError, ValueError, struct.error):
            stamp = None
        if stamp is None:
            read_as.pop(self.archive, None)
            return reread(self)
        cached = zipimport._zip_directory_cache.get(self.archive)
        if cached is not None and read_as.get(self.archive) == stamp:
            self._files = cached
            return None
        reread(self)
        read_as[self.archive] = stamp
        return None

    zipimport.zipimporter.invalidate_caches = invalidate_caches


def _stamp(archive: str) -> tuple | None:
    """What the archive's directory is now, without parsing it: size, times, inode and a CRC of the
    central directory's bytes (size and mtime alone miss a rewrite of the same size within the
    clock's tick, or on a coarse file system: the importer would then read the new archive at the
    old one's offsets). None when the directory cannot be located (zip64: re-read it)."""
    with open(archive, "rb") as f:
        st = os.fstat(f.fileno())
        tail_size = min(st.st_size, 22 + 65535)
        f.seek(st.st_size - tail_size)
        tail = f.read(tail_size)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        cd_size, cd_offset = struct.unpack("<II", tail[at + 12 : at + 20])
        if cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
            return None
        f.seek(cd_offset)
        directory = f.read(cd_size)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, zlib.crc32(directory), tail[at:])
