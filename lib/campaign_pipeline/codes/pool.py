"""The uploaded code pool: available codes are ranked by a seeded hash of the code (never by upload
order) inside their pool (a market, or the campaign). Duplicates never get here: ingest
quarantines them (`ingest/code_pool.py`)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

CAMPAIGN_WIDE = "*"


def pool_key(per_market: bool, market: Column) -> Column:
    return market if per_market else F.lit(CAMPAIGN_WIDE)


def available_codes(pool: DataFrame, used: DataFrame, per_market: bool, seed: int) -> DataFrame:
    """(campaign_id, pool, code, code_rank): pool codes never assigned, in seeded-hash order.

    With `per_market`, a market draws only from codes uploaded for it; codes without a market are
    then unused (counted by the stage). Campaign-wide, every code is in one pool.
    """
    codes = pool.select("campaign_id", "code", "market_id")
    if per_market:
        codes = codes.where(F.col("market_id").isNotNull())
    codes = codes.withColumn("pool", pool_key(per_market, F.col("market_id"))).dropDuplicates(["campaign_id", "code"])
    free = codes.join(
        used.select("campaign_id", "code").where("code IS NOT NULL"), ["campaign_id", "code"], "left_anti"
    )
    order = Window.partitionBy("campaign_id", "pool").orderBy(F.xxhash64(F.lit(seed), F.col("code")), F.col("code"))
    return free.select("campaign_id", "pool", "code", F.row_number().over(order).cast("long").alias("code_rank"))
