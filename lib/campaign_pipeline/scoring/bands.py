"""Score bands and the in-band lottery.

A fan's raw score puts him in one band of `scoring.bands` (the bands do not overlap, so the tiers
keep their order); inside his band his `band_score` is a uniform draw from xxhash64(seed,
campaign, fan), so the order within a tier is a reproducible lottery that no fan can influence.
Selection ranks fans by `band_score`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.config import Scoring


def band_of(bands, raw: Column) -> tuple[Column, Column, Column]:
    """(band name, band min, band max) for a raw score; null below the lowest band or without a score.

    Bands are [min, max) except the highest, which includes its max (so 1.0 is `high`).
    """
    ordered = sorted(bands, key=lambda b: b.min, reverse=True)
    top = ordered[0]
    name = None
    low = high = None
    for b in ordered:
        inside = (raw >= b.min) & ((raw <= b.max) if b is top else (raw < b.max))
        name = F.when(inside, F.lit(b.name)) if name is None else name.when(inside, F.lit(b.name))
        low = F.when(inside, F.lit(b.min)) if low is None else low.when(inside, F.lit(b.min))
        high = F.when(inside, F.lit(b.max)) if high is None else high.when(inside, F.lit(b.max))
    return name, low, high


def with_bands(scores: DataFrame, scoring: Scoring, seed: int) -> DataFrame:
    """`band` and `band_score`: uniform inside the band, drawn from xxhash64(seed, campaign, fan).

    Bands do not overlap, so band scores keep the tiers in order; inside a tier the order is a
    reproducible lottery that no fan can influence.
    """
    name, low, high = band_of(scoring.bands, F.col("raw_score"))
    # 53 bits of the hash → a double uniform in [0, 1).
    draw = F.pmod(F.xxhash64(F.lit(seed), F.col("campaign_id"), F.col("global_user_id")), F.lit(1 << 53)).cast(
        "double"
    ) / float(1 << 53)
    return scores.withColumn("band", name).withColumn("band_score", low + draw * (high - low))
