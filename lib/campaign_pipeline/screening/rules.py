"""The screening rule book as DataFrame transforms (pure: DataFrames and config in, DataFrames out).

| tag | when | disqualifies |
|---|---|---|
| INVALID_PHONE | a phone was given but libphonenumber finds no valid number | no |
| UNCONFIRMED_PHONE | a valid phone whose `phone_confirmed` is not true | no |
| INTL_PHONE | a valid phone outside `sms_countries` and the home country | yes, unless `allow_intl_phones` |
| INVALID_EMAIL | the email is not `local@domain.tld` | yes |
| BLOCKED_EMAIL | the canonical email is on a block list | yes |
| BLOCKED_DOMAIN | the domain or a parent is blocked or disposable | yes |
| ALLOWLISTED | an allow-list glob matched (blocks lifted) | no |
| SHARED_IDENTIFIER | an identifier held by more than `max_shared` accounts | no |
| DUPLICATE_ACCOUNT | another account of the same identity cluster stays | yes |
| FRAUD_RING | the identity cluster is larger than `ring_size` | yes |
| VELOCITY | more than K registrations from its IP or device within T minutes | yes |
| SCALPER_SIGNALS | resale listings or chargebacks at the thresholds and no attendance | yes |
| STEALTH_RING | a weak-link cluster larger than `ring_size`: at least `weak_links.ring_share` attended no event, `weak_links.resale_share` resell | yes |
| REVIEW | weakly linked, but not a STEALTH_RING (a smaller, attending or not reselling cluster): for an operator | no |

Weak links (`screening.weak_links`) join fresh accounts whose shared weak signals (IP range, email
domain, phone block, postal code, email pattern, first market) add up to `min_weight` bits of
evidence; `screening.weak_links` explains how.

Inside a cluster the account that stays is: confirmed phone first, then earliest registration,
then smallest id. A fan registered twice keeps the latest registration (ties: latest file/line).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN_SORT
from campaign_pipeline.config import Campaign
from campaign_pipeline.fan_ranges import range_column
from campaign_pipeline.screening.identity import keep_one_per_cluster
from campaign_pipeline.screening.phones import phone_details

DISQUALIFYING = (
    "INTL_PHONE",
    "INVALID_EMAIL",
    "BLOCKED_EMAIL",
    "BLOCKED_DOMAIN",
    "DUPLICATE_ACCOUNT",
    "FRAUD_RING",
    "VELOCITY",
    "SCALPER_SIGNALS",
    "STEALTH_RING",
)
TAG_ORDER = (
    "INVALID_PHONE",
    "UNCONFIRMED_PHONE",
    "INTL_PHONE",
    "INVALID_EMAIL",
    "BLOCKED_EMAIL",
    "BLOCKED_DOMAIN",
    "ALLOWLISTED",
    "SHARED_IDENTIFIER",
    "DUPLICATE_ACCOUNT",
    "FRAUD_RING",
    "VELOCITY",
    "SCALPER_SIGNALS",
    "STEALTH_RING",
    "REVIEW",
)


def latest_registration(registrations: DataFrame) -> DataFrame:
    """One row per (campaign, fan): the latest registration; file and line break ties. Rows keyed
    by fan range (`fan_ranges.RANGE`) are grouped within their range, so they keep that layout."""
    order = Window.partitionBy(*FAN_SORT, *range_column(registrations)).orderBy(
        F.col("registered_at").desc(), F.col("source_file").desc(), F.col("source_line").desc()
    )
    return registrations.withColumn("_n", F.row_number().over(order)).where("_n = 1").drop("_n")


def normalise_phones(campaign: Campaign):
    """Adds `phone_e164`, `phone_country`, `phone_type` and the phone flags."""
    home = campaign.home_country
    domestic = sorted(set(campaign.options.sms_countries) | {home})

    def transform(df: DataFrame) -> DataFrame:
        parsed = df.withColumn("_phone", phone_details(F.col("phone"), F.col("country"), home))
        return (
            parsed.withColumn("phone_e164", F.col("_phone.e164"))
            .withColumn("phone_country", F.col("_phone.country"))
            .withColumn("phone_type", F.col("_phone.type"))
            .withColumn("_invalid_phone", F.coalesce(F.col("_phone.valid") == F.lit(False), F.lit(False)))
            .withColumn(
                "_unconfirmed_phone",
                F.col("phone_e164").isNotNull() & ~F.coalesce(F.col("phone_confirmed"), F.lit(False)),
            )
            .withColumn("_intl_phone", F.col("phone_e164").isNotNull() & ~F.col("phone_country").isin(*domestic))
            .withColumn("_phone_intl_prefix", F.coalesce(F.col("_phone.intl_prefix"), F.lit(False)))
            .drop("_phone")
        )

    return transform


def velocity_flags(max_registrations: int, window_minutes: int):
    """`_velocity`: more than K registrations from one IP or one device within T minutes."""
    span = window_minutes * 60

    def transform(df: DataFrame) -> DataFrame:
        out = df.withColumn("_t", F.unix_timestamp("registered_at"))
        flags = []
        for key in ("ip_address", "device_id"):
            # A missing IP/device must not become one giant window partition: each such row gets a
            # partition of its own (the fan id), where it can never exceed K.
            # The group is a column, not an expression in each window: two windows over one
            # expression are planned as two partitionings, and the rows would be shuffled twice.
            out = out.withColumn("_group", F.coalesce(F.col(key), F.concat(F.lit("\u0000"), F.col("global_user_id"))))
            # A 64-bit hash of the group leads the partition keys: Spark sorts a window's rows on an
            # 8-byte prefix of its first key, and the campaign id (the same in every row) or an IP's
            # first characters (shared by its subnet) would send most comparisons to the whole row.
            out = out.withColumn("_group_hash", F.xxhash64("_group"))
            ordered = Window.partitionBy("_group_hash", "_group", "campaign_id").orderBy("_t")
            # A window [t - T, t] holding more than K registrations ends at a "burst end"; every
            # registration with a burst end within T after it lies inside such a window.
            end = f"_end_{key}"
            out = out.withColumn(
                end, (F.count(F.lit(1)).over(ordered.rangeBetween(-span, 0)) > max_registrations).cast("int")
            )
            flag = f"_burst_{key}"
            out = out.withColumn(
                flag, F.col(key).isNotNull() & (F.max(end).over(ordered.rangeBetween(0, span)) == 1)
            ).drop(end)
            flags.append(F.col(flag))
        return out.withColumn("_velocity", flags[0] | flags[1]).drop(
            "_t", "_group", "_group_hash", *[f"_burst_{k}" for k in ("ip_address", "device_id")]
        )

    return transform


def scalper_flags(activity: DataFrame, min_resale_listings: int, min_chargebacks: int):
    """`_scalper`: resale listings or chargebacks at the thresholds and no event attended."""
    per_fan = activity.groupBy(*FAN_SORT).agg(
        F.max("resale_listings_24m").alias("_resale"),
        F.max("chargebacks_24m").alias("_chargebacks"),
        F.max("events_attended_24m").alias("_attended"),
    )

    def transform(df: DataFrame) -> DataFrame:
        joined = df.join(per_fan, FAN_SORT, "left")
        signal = (F.coalesce(F.col("_resale"), F.lit(0)) >= min_resale_listings) | (
            F.coalesce(F.col("_chargebacks"), F.lit(0)) >= max(1, min_chargebacks)
        )
        no_attendance = F.coalesce(F.col("_attended"), F.lit(0)) == 0
        return joined.withColumn("_scalper", signal & no_attendance).drop("_resale", "_chargebacks", "_attended")

    return transform


def cluster_verdicts(ring_size: int):
    """`_fraud_ring` for clusters above the ring size; `_duplicate` for all but one account otherwise."""

    def transform(df: DataFrame) -> DataFrame:
        rank = keep_one_per_cluster(
            [
                F.coalesce(F.col("phone_confirmed"), F.lit(False)).desc(),
                F.col("registered_at").asc(),
                F.col("global_user_id").asc(),
            ]
        )
        ring = F.col("cluster_size") > ring_size
        return df.withColumn("_fraud_ring", ring).withColumn("_duplicate", ~ring & (rank > 1))

    return transform


def assign_tags(allow_intl_phones: bool):
    """`tags` (every finding, in rule-book order), `ineligible_reasons`, `eligible`."""
    flag_of = {
        "INVALID_PHONE": "_invalid_phone",
        "UNCONFIRMED_PHONE": "_unconfirmed_phone",
        "INTL_PHONE": "_intl_phone",
        "INVALID_EMAIL": "_invalid_email",
        "BLOCKED_EMAIL": "_blocked_email",
        "BLOCKED_DOMAIN": "_blocked_domain",
        "ALLOWLISTED": "_allowlisted",
        "SHARED_IDENTIFIER": "_shared_identifier",
        "DUPLICATE_ACCOUNT": "_duplicate",
        "FRAUD_RING": "_fraud_ring",
        "VELOCITY": "_velocity",
        "SCALPER_SIGNALS": "_scalper",
        "STEALTH_RING": "_stealth_ring",
        "REVIEW": "_review",
    }
    disqualifying = [t for t in DISQUALIFYING if not (t == "INTL_PHONE" and allow_intl_phones)]

    def transform(df: DataFrame) -> DataFrame:
        def found(kept) -> Column:  # the findings of `kept` tags, in rule-book order
            hits = [F.when(F.col(flag_of[t]), F.lit(t)) for t in TAG_ORDER if t in kept]
            return F.array_compact(F.array(*hits).cast("array<string>"))

        # The reasons are the disqualifying tags, built the way the tags are (no per-row set).
        out = df.withColumn("tags", found(TAG_ORDER)).withColumn("ineligible_reasons", found(disqualifying))
        return out.withColumn("eligible", F.size("ineligible_reasons") == 0).drop(*flag_of.values())

    return transform
