"""The uploaded code pool: duplicates are quarantined at ingest; available codes are ranked by a
seeded hash of the code (never by upload order) inside their pool (a market, or the campaign)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

CAMPAIGN_WIDE = "*"


def flag_duplicate_codes(parsed: DataFrame, earlier: DataFrame) -> DataFrame:
    """Adds a reason to every code_pool row whose code appeared before: in an earlier file of the
    campaign, or earlier in this upload (file, then line). The first occurrence stays."""
    # Only usable rows compete: a code on a row quarantined for another reason claims nothing.
    first = Window.partitionBy("campaign_id", "code", "_usable").orderBy("source_file", "source_line")
    seen = earlier.select(
        "campaign_id",
        "code",
        F.element_at(F.split("source_file", "/"), -1).alias("_prev_file"),
        F.col("source_line").alias("_prev_line"),
    ).dropDuplicates(["campaign_id", "code"])
    ok = F.size("reasons") == 0
    ranked = (
        parsed.withColumn("_usable", ok)
        .withColumn("_n", F.when(ok & F.col("code").isNotNull(), F.row_number().over(first)))
        .withColumn("_first_file", F.when(ok, F.first(F.element_at(F.split("source_file", "/"), -1)).over(first)))
        .withColumn("_first_line", F.when(ok, F.first("source_line").over(first)))
    )
    joined = ranked.join(seen, ["campaign_id", "code"], "left")
    where_first = F.coalesce(
        F.when(F.col("_prev_file").isNotNull(), F.concat(F.col("_prev_file"), F.lit(" line "), F.col("_prev_line"))),
        F.concat(F.col("_first_file"), F.lit(" line "), F.col("_first_line")),
    )
    duplicate = ok & ((F.col("_n") > 1) | F.col("_prev_file").isNotNull())
    reason = F.concat(
        F.lit("code: duplicate code, got '"), F.col("code"), F.lit("' again (first at "), where_first, F.lit(")")
    )
    return joined.withColumn("reasons", F.when(duplicate, F.array(reason)).otherwise(F.col("reasons"))).drop(
        "_usable", "_n", "_first_file", "_first_line", "_prev_file", "_prev_line"
    )


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
