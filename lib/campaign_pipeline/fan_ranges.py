"""The file layout of the fan-lookup tables: each file holds one range of fan ids.

`explain` reads one fan's rows by skipping the files whose min/max fan id excludes it, so the
tables in `tables.FAN_CLUSTERED` are written with their rows split into ranges of
`global_user_id`. Spark's `repartitionByRange` finds its bounds by sampling the very frame being
written, which computes the whole stage once more before the write (the screen's fraud rules, the
allocation's standings: seconds to tens of seconds at 2M registrants). Here the bounds come from a
sample of the campaign's registered fan ids instead (one column of `registrations`, the fans of
every later table), and a row goes to its range's partition through hash partitioning on a key
chosen so that range i lands in partition i: one shuffle, nothing computed twice.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

FAN_ID = "global_user_id"
RANGE = "_fan_range"  # a row's range key (see `keyed_by_fan_range`); never written to a table
ROWS_PER_RANGE = 500_000  # rows per range (a file each) when the campaign has enough fans
SAMPLE_PER_RANGE = 1_000  # sampled fan ids per range (Spark's own range sampling takes 100 per partition)
_MASK = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def spark_hash_int(value: int, seed: int = 42) -> int:
    """Spark's `hash()` of a 32-bit int (Murmur3 x86_32, seed 42), which hash partitioning uses."""
    k1 = _rotl((value & _MASK) * 0xCC9E2D51 & _MASK, 15) * 0x1B873593 & _MASK
    h1 = (_rotl(seed ^ k1, 13) * 5 + 0xE6546B64) & _MASK
    h1 ^= 4  # the input's length in bytes
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & _MASK
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & _MASK
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


@functools.cache
def partition_keys(partitions: int) -> tuple[int, ...]:
    """For each partition p of `partitions`, the smallest int Spark's hash partitioning sends to p."""
    keys: dict[int, int] = {}
    value = 0
    while len(keys) < partitions:
        keys.setdefault(spark_hash_int(value) % partitions, value)  # Python's % is Spark's pmod here
        value += 1
    return tuple(keys[p] for p in range(partitions))


def range_key(bounds: Sequence[str], column: str = FAN_ID) -> Column:
    """An int whose hash partition (of len(bounds) + 1) is the index of the row's fan-id range.

    Range i holds the ids in (bounds[i - 1], bounds[i]]; the last range also holds a null id. The
    range is found by a balanced tree of comparisons (log2 of the ranges per row).
    """
    keys, fan = partition_keys(len(bounds) + 1), F.col(column)

    def pick(lo: int, hi: int) -> Column:
        if lo == hi:
            return F.lit(keys[lo])
        mid = (lo + hi) // 2
        return F.when(fan <= F.lit(bounds[mid]), pick(lo, mid)).otherwise(pick(mid + 1, hi))

    return pick(0, len(bounds))


def by_fan_range(df: DataFrame, bounds: Sequence[str]) -> DataFrame:
    """`df` in len(bounds) + 1 partitions, partition i holding fan-id range i (see `range_key`).

    A frame that carries its range key (`RANGE`, from `keyed_by_fan_range`) is partitioned on that
    column: when it is already laid out so (its rows kept their partitions since), Spark sees the
    partitioning is the same and shuffles nothing."""
    if not bounds:
        return df.repartition(1)
    if RANGE in df.columns:
        return df.repartition(len(bounds) + 1, RANGE)
    return df.repartition(len(bounds) + 1, range_key(bounds))


def keyed_by_fan_range(df: DataFrame, bounds: Sequence[str]) -> DataFrame:
    """`df` with its range key in column `RANGE` and partitioned on it: the layout `by_fan_range`
    writes, taken early so a stage's own shuffle by fan (and every narrow step after it) already
    leaves the rows where the write wants them. Group by (`RANGE`, fan) rather than fan alone to
    keep it: the key is a function of the fan id, so the groups are the same."""
    return df.withColumn(RANGE, range_key(bounds)).repartition(len(bounds) + 1, RANGE)


def range_column(df: DataFrame) -> list[str]:
    """`[RANGE]` when `df` carries its range key (`keyed_by_fan_range`), else `[]`: what a step
    keeps in its output or groups by so that the layout survives it."""
    return [RANGE] if RANGE in df.columns else []


def fan_bounds(fans: DataFrame, max_ranges: int, rows_per_range: int = ROWS_PER_RANGE) -> list[str] | None:
    """Ascending fan ids splitting the `global_user_id`s of `fans` into ranges of about
    `rows_per_range` (at most `max_ranges`), from a seeded sample: same fans, same bounds.
    None when `fans` has no fan id at all."""
    fans = fans.select(FAN_ID).where(F.col(FAN_ID).isNotNull())
    total = fans.count()
    if total == 0:
        return None
    ranges = max(1, min(max_ranges, -(-total // rows_per_range)))
    if ranges == 1:
        return []
    fraction = min(1.0, 1.5 * SAMPLE_PER_RANGE * ranges / total)
    sample = sorted(row[0] for row in fans.sample(fraction=fraction, seed=0).collect())
    if not sample:
        return []
    return sorted({sample[len(sample) * i // ranges] for i in range(1, ranges)})
