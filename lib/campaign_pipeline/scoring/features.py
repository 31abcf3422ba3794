"""Model features per registrant, null-safe: a fan without activity gets zeros, never a null score.

| feature | from | transform |
|---|---|---|
| account_age_years | registered_at − account_created_at | years, clipped to [0, 20] |
| tickets_24m | tickets_purchased_24m | log1p |
| events_24m | events_attended_24m | log1p |
| artist_tickets | artist_tickets_purchased | log1p |
| artist_streams | artist_streams_90d | log1p |
| resale_listings | resale_listings_24m | log1p |
| chargebacks | chargebacks_24m | clipped to [0, 5] |
| phone_confirmed | registration | 1 / 0 |
| has_activity | a fan_activity row exists | 1 / 0 |
| attendance_ratio | events / tickets | in [0, 1], 0 without tickets |
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN

FEATURES = (
    "account_age_years",
    "tickets_24m",
    "events_24m",
    "artist_tickets",
    "artist_streams",
    "resale_listings",
    "chargebacks",
    "phone_confirmed",
    "has_activity",
    "attendance_ratio",
)


def _count(name: str) -> Column:
    return F.greatest(F.coalesce(F.col(name).cast("double"), F.lit(0.0)), F.lit(0.0))


ROW_TIMESTAMP_KEYS = ("as_of", "scored_at")  # keys of `extra` that date a row of the scored file


def file_name(source_file: Column) -> Column:
    """The landing file's name: the last part of its path (a folder of parts counts by its folder name)."""
    return F.regexp_extract(source_file, r"([^/]+)/*$", 1)


def latest_row(df: DataFrame) -> DataFrame:
    """One row per (campaign, fan) of an ingested table, decided by the data, never by ingest history.

    The latest row is the one with the latest row timestamp when the file carries one (the scored
    file's `as_of` or `scored_at` column, kept in `extra`; rows without one come after those with
    one), then the greatest file name in sort order (`fan_activity_2027-03.tsv` after
    `fan_activity_2027-02.tsv`), then the greatest line number. When or in which run a file was
    ingested plays no part, so the same landing folder gives the same scores however it was ingested.
    """
    from pyspark.sql import Window

    order = []
    if "extra" in df.columns:
        stamps = [F.try_to_timestamp(F.col("extra")[k]) for k in ROW_TIMESTAMP_KEYS]
        order.append(F.coalesce(*stamps).desc_nulls_last())
    order += [file_name(F.col("source_file")).desc(), F.col("source_file").desc(), F.col("source_line").desc()]
    latest = Window.partitionBy(*FAN).orderBy(*order)
    return df.withColumn("_n", F.row_number().over(latest)).where("_n = 1").drop("_n")


def activity_per_fan(activity: DataFrame) -> DataFrame:
    """One activity row per (campaign, fan): a fan listed twice keeps the latest row (`latest_row`)."""
    return latest_row(activity).select(
        "campaign_id",
        "global_user_id",
        "account_created_at",
        "tickets_purchased_24m",
        "events_attended_24m",
        "artist_tickets_purchased",
        "artist_streams_90d",
        "resale_listings_24m",
        "chargebacks_24m",
        F.lit(True).alias("_has_activity"),
    )


def fan_features(registrants: DataFrame, activity: DataFrame) -> DataFrame:
    """`registrants` (campaign_id, global_user_id, registered_at, phone_confirmed) + the feature columns."""
    joined = registrants.select(*FAN, "registered_at", "phone_confirmed").join(activity_per_fan(activity), FAN, "left")
    age_days = F.datediff(F.col("registered_at"), F.col("account_created_at"))
    tickets = _count("tickets_purchased_24m")
    return joined.select(
        "campaign_id",
        "global_user_id",
        F.least(F.greatest(F.coalesce(age_days / 365.25, F.lit(0.0)), F.lit(0.0)), F.lit(20.0)).alias(
            "account_age_years"
        ),
        F.log1p(tickets).alias("tickets_24m"),
        F.log1p(_count("events_attended_24m")).alias("events_24m"),
        F.log1p(_count("artist_tickets_purchased")).alias("artist_tickets"),
        F.log1p(_count("artist_streams_90d")).alias("artist_streams"),
        F.log1p(_count("resale_listings_24m")).alias("resale_listings"),
        F.least(_count("chargebacks_24m"), F.lit(5.0)).alias("chargebacks"),
        F.coalesce(F.col("phone_confirmed"), F.lit(False)).cast("double").alias("phone_confirmed"),
        F.col("_has_activity").isNotNull().cast("double").alias("has_activity"),
        F.when(tickets > 0, F.least(_count("events_attended_24m") / tickets, F.lit(1.0)))
        .otherwise(F.lit(0.0))
        .alias("attendance_ratio"),
    )
