"""Ingest's rule for an uploaded code pool: a code seen before (in an earlier file of the campaign,
or earlier in this upload) is quarantined with where it was first seen; the first one stays."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


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
