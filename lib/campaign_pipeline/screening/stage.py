"""The screen stage: one `registrants` row per (campaign, fan) with tags and eligibility.

Rule book (SPEC §3 stage 2, issue "Screening"):

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

Inside a cluster the account that stays is: confirmed phone first, then earliest registration,
then smallest id. A fan registered twice keeps the latest registration (ties: latest file/line).
"""

from __future__ import annotations

import time
from pathlib import Path

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign, default_conf_dir
from campaign_pipeline.errors import InputError, PipelineError
from campaign_pipeline.runner import StageContext, StageResult, stage
from campaign_pipeline.screening.emails import tag_emails
from campaign_pipeline.screening.identity import keep_one_per_cluster, with_identity_clusters
from campaign_pipeline.screening.phones import phone_details
from campaign_pipeline.session import checkpoint_folder, set_stage_description

DISQUALIFYING = (
    "INTL_PHONE",
    "INVALID_EMAIL",
    "BLOCKED_EMAIL",
    "BLOCKED_DOMAIN",
    "DUPLICATE_ACCOUNT",
    "FRAUD_RING",
    "VELOCITY",
    "SCALPER_SIGNALS",
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
)
OUTPUT_COLUMNS = [
    "campaign_id",
    "global_user_id",
    "member_id",
    "email",
    "email_canonical",
    "phone_e164",
    "phone_country",
    "phone_type",
    "phone_confirmed",
    "do_not_text",
    "first_name",
    "last_name",
    "locale",
    "country",
    "market_preferences",
    "registered_at",
    "identity_cluster_id",
    "cluster_size",
    "tags",
    "eligible",
    "ineligible_reasons",
]


def latest_registration(registrations: DataFrame) -> DataFrame:
    """One row per (campaign, fan): the latest registration; file and line break ties."""
    order = Window.partitionBy("campaign_id", "global_user_id").orderBy(
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
            group = F.coalesce(F.col(key), F.concat(F.lit("\u0000"), F.col("global_user_id")))
            ordered = Window.partitionBy(F.col("campaign_id"), group).orderBy("_t")
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
            "_t", *[f"_burst_{k}" for k in ("ip_address", "device_id")]
        )

    return transform


def scalper_flags(activity: DataFrame, min_resale_listings: int, min_chargebacks: int):
    """`_scalper`: resale listings or chargebacks at the thresholds and no event attended."""
    per_fan = activity.groupBy("campaign_id", "global_user_id").agg(
        F.max("resale_listings_24m").alias("_resale"),
        F.max("chargebacks_24m").alias("_chargebacks"),
        F.max("events_attended_24m").alias("_attended"),
    )

    def transform(df: DataFrame) -> DataFrame:
        joined = df.join(per_fan, ["campaign_id", "global_user_id"], "left")
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
    }
    disqualifying = [t for t in DISQUALIFYING if not (t == "INTL_PHONE" and allow_intl_phones)]

    def transform(df: DataFrame) -> DataFrame:
        tags = F.array_compact(F.array(*[F.when(F.col(flag_of[t]), F.lit(t)) for t in TAG_ORDER]))
        out = df.withColumn("tags", tags)
        out = out.withColumn(
            "ineligible_reasons", F.array_intersect(F.col("tags"), F.array(*[F.lit(t) for t in disqualifying]))
        )
        return out.withColumn("eligible", F.size("ineligible_reasons") == 0).drop(*flag_of.values())

    return transform


def screen_registrants(
    ctx_spark,
    campaign: Campaign,
    registrations: DataFrame,
    activity: DataFrame,
    lists: dict[str, list[str]],
    cut_lineage,
) -> tuple[DataFrame, dict[str, int]]:
    """Pure screening: registrations + activity + lists → registrants (the stage's whole rule book)."""
    cfg = campaign.screening
    base = latest_registration(registrations)
    base = base.transform(normalise_phones(campaign)).transform(
        tag_emails(
            ctx_spark,
            cfg.plus_tag_providers,
            lists["blocked_emails"],
            lists["blocked_domains"],
            lists["allowed_patterns"],
        )
    )
    base = cut_lineage(base)
    clustered, figures = with_identity_clusters(base, cfg.max_shared, cut_lineage)
    screened = (
        clustered.transform(cluster_verdicts(cfg.ring_size))
        .transform(velocity_flags(cfg.velocity.max_registrations, cfg.velocity.window_minutes))
        .transform(scalper_flags(activity, cfg.scalper.min_resale_listings, cfg.scalper.min_chargebacks))
        .transform(assign_tags(campaign.options.allow_intl_phones))
    )
    return screened.select(*OUTPUT_COLUMNS), figures


def screening_lists(ctx: StageContext) -> dict[str, list[str]]:
    """Block/allow entries from the campaign config, its rules files and the ingested landing lists."""
    cfg = ctx.campaign.screening
    lists = {
        "blocked_emails": list(cfg.blocked_emails),
        "blocked_domains": list(cfg.blocked_domains),
        "allowed_patterns": list(cfg.allowed_patterns),
    }
    for name in cfg.rules_files:
        path = Path(name) if Path(name).is_absolute() else default_conf_dir() / name
        if not path.is_file():
            raise InputError(f"screening.rules_files: {path} not found")
        kind = next((k for k in lists if path.name.startswith(k)), None)
        if kind is None:
            raise InputError(f"screening.rules_files: {path.name} must start with one of {', '.join(lists)}")
        lists[kind] += [
            line.strip()
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
    # Lists are small (thousands of entries at most): bringing them to the driver is fine.
    for row in ctx.warehouse.read("screening_lists", ctx.campaign_id).select("list_name", "entry").collect():
        lists[row["list_name"]].append(row["entry"])
    return lists


@stage("screen", order=20, description="normalise, validate, resolve identities, detect fraud")
def screen(ctx: StageContext) -> StageResult:
    """Screen every registrant of the campaign into `registrants` (replacing the campaign's rows)."""
    from campaign_pipeline.quality.expectations import registrants_suite, run_suite

    spark, wh, cid = ctx.spark, ctx.warehouse, ctx.campaign_id
    registrations = wh.read("registrations", cid)
    if not wh.exists("registrations"):
        raise PipelineError(f"no registrations ingested for campaign {cid}: run the ingest stage first")
    steps: dict[str, float] = {}
    clock = {"n": 0, "t": time.perf_counter()}

    def lap(step: str) -> None:
        now = time.perf_counter()
        steps[step] = steps.get(step, 0.0) + now - clock["t"]
        clock["t"] = now

    def cut_lineage(df: DataFrame) -> DataFrame:
        # The first materialisation holds phone/email normalisation; the rest are graph rounds.
        clock["n"] += 1
        set_stage_description(
            spark,
            "screen",
            "normalise phones and emails" if clock["n"] == 1 else f"identity graph step {clock['n'] - 1}",
        )
        out = df.checkpoint(eager=True)
        lap("normalise" if clock["n"] == 1 else "identity_graph")
        return out

    with checkpoint_folder(spark, f"{wh.root}/_checkpoints/{ctx.run_id}"):
        registrants, figures = screen_registrants(
            spark, ctx.campaign, registrations, wh.read("fan_activity", cid), screening_lists(ctx), cut_lineage
        )
        set_stage_description(spark, "screen", "fraud rules, tags and write registrants")
        wh.replace("registrants", registrants.withColumn("run_id", F.lit(ctx.run_id)), cid)
        lap("rules_and_write")

    written = wh.read("registrants", cid)
    set_stage_description(spark, "screen", "count tags")
    totals = written.agg(
        F.count(F.lit(1)).alias("registrants"),
        F.sum(F.col("eligible").cast("long")).alias("eligible"),
    ).first()
    tag_counts = {
        r["tag"]: r["count"] for r in written.select(F.explode("tags").alias("tag")).groupBy("tag").count().collect()
    }
    reason_counts = {
        r["tag"]: r["count"]
        for r in written.select(F.explode("ineligible_reasons").alias("tag")).groupBy("tag").count().collect()
    }
    set_stage_description(spark, "screen", "expectations")
    dq = run_suite(spark, wh, ctx.run_id, cid, "registrants", written, registrants_suite(DISQUALIFYING))
    lap("counts_and_checks")

    result = StageResult()
    n, eligible = totals["registrants"] or 0, totals["eligible"] or 0
    result.counts = {"registrants": n, "eligible": eligible, "ineligible": n - eligible, **figures}
    result.counts["registrations_read"] = registrations.count()
    for step, seconds in steps.items():
        result.counts[f"ms:{step}"] = int(seconds * 1000)
    for tag in TAG_ORDER:
        if tag in tag_counts:
            result.counts[f"tag:{tag}"] = tag_counts[tag]
    result.summary = [f"{n:,} registrants: {eligible:,} eligible, {n - eligible:,} ineligible"]
    for tag in TAG_ORDER:
        if tag in tag_counts:
            disq = reason_counts.get(tag, 0)
            result.summary.append(f"{tag:<18} {tag_counts[tag]:>10,}" + (f"  ({disq:,} disqualifying)" if disq else ""))
    result.summary.append(f"identity graph: {figures['graph_rounds']} rounds; expectations: {dq}")
    result.summary.append("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
    return result
