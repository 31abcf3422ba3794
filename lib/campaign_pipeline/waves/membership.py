"""Which wave each selected (fan, market) belongs to.

Waves are taken in `notify_at` order (wave id breaks ties). A wave takes the selected fans of its
`markets` (all markets when empty) not already in an earlier wave, ordered by `market_rank`, then
market id, then fan id, up to its `limit`. A fan reached by no wave has no wave (and no validity
dates yet); the stages count them.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign
from campaign_pipeline.tables import FAN_MARKET as KEY


def ordered_waves(campaign: Campaign):
    return sorted(campaign.waves, key=lambda w: (w.notify_at, w.wave_id))


def wave_membership(campaign: Campaign, selected: DataFrame) -> DataFrame:
    """(campaign_id, global_user_id, market_id, wave_id, notify_at) for `selected` rows in a wave."""
    remaining = selected.select(*KEY, "market_rank")
    parts: list[DataFrame] = []
    for wave in ordered_waves(campaign):
        pool = remaining
        if wave.markets:
            pool = pool.where(F.col("market_id").isin(wave.markets))
        if wave.limit is not None:
            order = Window.partitionBy("campaign_id").orderBy(
                F.col("market_rank").asc_nulls_last(), F.col("market_id"), F.col("global_user_id")
            )
            pool = pool.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= wave.limit).drop("_n")
        taken = pool.select(
            *KEY, F.lit(wave.wave_id).alias("wave_id"), F.lit(wave.notify_at).cast("timestamp").alias("notify_at")
        )
        parts.append(taken)
        remaining = remaining.join(taken.select(*KEY), KEY, "left_anti")
    if not parts:
        return selected.sparkSession.createDataFrame(
            [], "campaign_id string, global_user_id string, market_id string, wave_id string, notify_at timestamp"
        )
    out = parts[0]
    for more in parts[1:]:
        out = out.unionByName(more)
    return out
