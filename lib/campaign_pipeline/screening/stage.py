"""The screen stage: one `registrants` row per (campaign, fan) with tags and eligibility.

read (registrations, fan activity, block/allow lists) → `screen_registrants` (pure; the rule book
is in `screening.rules`) → replace the campaign's `registrants` (nothing is committed when the
result is unchanged) → expectations and tag counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN, FAN_SORT, columns
from campaign_pipeline.config import Campaign, default_conf_dir
from campaign_pipeline.errors import InputError
from campaign_pipeline.fan_ranges import keyed_by_fan_range, range_column
from campaign_pipeline.frames import require_columns
from campaign_pipeline.quality.expectations import check_tables
from campaign_pipeline.screening.checks import CHECKS
from campaign_pipeline.screening.emails import tag_emails
from campaign_pipeline.screening.identity import IDENTIFIERS, linked_accounts, with_cluster_columns
from campaign_pipeline.screening.rules import (
    TAG_ORDER,
    assign_tags,
    cluster_verdicts,
    latest_registration,
    normalise_phones,
    scalper_flags,
    velocity_flags,
)
from campaign_pipeline.screening.weak_links import PREFERENCE, WEAK_LINK_INPUTS, no_accounts, weak_links
from campaign_pipeline.stage_context import (
    KEEP_LAYOUT,
    StageContext,
    StageReport,
    layout_keeping,
    local_cut,
    session_settings,
)

LISTS = ("blocked_emails", "blocked_domains", "allowed_patterns")
OUTPUT_COLUMNS = columns("registrants", without=("run_id",))
Cut = Callable[[DataFrame, str], DataFrame]


def normalised_registrants(
    campaign: Campaign, registrations: DataFrame, lists: dict[str, list[str]], bounds: Sequence[str] | None = None
) -> DataFrame:
    """The latest registration per fan with phones and emails normalised and email lists applied,
    in the registrants' and the rules' columns only (`SCREEN_READS`).

    With fan-range `bounds` (the registrants table's file ranges) the registrations are keyed and
    partitioned by fan range (`RANGE`) before the latest one is picked: that is the only shuffle of
    the wide rows, and the rows stay in the layout `registrants` is written in."""
    require_columns(registrations, [*FAN, "registered_at", "phone", "email"], "screening")
    registrations = registrations.select(*[c for c in registrations.columns if c in SCREEN_READS])
    if bounds:
        registrations = keyed_by_fan_range(registrations, bounds)
    cfg = campaign.screening
    emails = tag_emails(
        registrations.sparkSession,
        cfg.plus_tag_providers,
        lists["blocked_emails"],
        lists["blocked_domains"],
        lists["allowed_patterns"],
    )
    return (
        latest_registration(registrations)
        .drop("source_file", "source_line")
        .transform(normalise_phones(campaign))
        .drop("phone")
        .transform(emails)
        .drop("email_domain")
    )


def phone_figures(normalised: DataFrame) -> dict[str, int]:
    """Valid phones, and how many needed the international-dialling-prefix fallback."""
    row = normalised.agg(
        F.count("phone_e164").alias("phones_valid"),
        F.sum(F.col("_phone_intl_prefix").cast("long")).alias("phones_intl_prefix"),
    ).first()
    return {k: int(v or 0) for k, v in row.asDict().items()}


# What the fraud rules read. They run on these columns only, and their flags join the wide
# registrant rows once: the identity graph, the velocity windows and the activity join each
# shuffle a dozen narrow columns instead of every registrant column.
RULE_INPUTS = tuple(
    dict.fromkeys(
        [
            *FAN,
            "phone_confirmed",
            "registered_at",
            "ip_address",
            "device_id",
            *IDENTIFIERS,
            *WEAK_LINK_INPUTS,
            PREFERENCE,
        ]
    )
)
# The registration columns the screen reads: the registrants' own, the rule inputs and what picks
# the latest registration. The others (the file's checksum, the ingest's time and run) would only
# widen the rows shuffled, sorted and checkpointed before the rules.
SCREEN_READS = frozenset({*OUTPUT_COLUMNS, *RULE_INPUTS, "phone", "email", "country", "source_file", "source_line"})
# What ranks the accounts of one identity cluster (`cluster_verdicts`), carried through the graph.
CLUSTER_RANKING = ("campaign_id", "phone_confirmed", "registered_at")
FRAUD_FLAGS = (
    "identity_cluster_id",
    "cluster_size",
    "_shared_identifier",
    "_fraud_ring",
    "_duplicate",
    "_velocity",
    "_scalper",
    "weak_cluster_id",
    "weak_cluster_size",
    "weak_signals",
    "_stealth_ring",
    "_review",
)
WEAK_VERDICTS = ("weak_cluster_id", "weak_cluster_size", "weak_signals", "_stealth_ring", "_review")


def weakly_linked(
    campaign: Campaign, normalised: DataFrame, activity: DataFrame, cut: Cut = local_cut
) -> tuple[DataFrame, dict[str, int]]:
    """(FAN + `WEAK_VERDICTS` of every weakly linked account, the step's figures); no rows when
    `screening.weak_links.enabled` is false."""
    cfg = campaign.screening
    if not cfg.weak_links.enabled:
        return no_accounts(normalised).select(*FAN, *WEAK_VERDICTS), {}
    result = weak_links(normalised.select(*RULE_INPUTS), activity, cfg.weak_links, cfg.ring_size, cut)
    return result.accounts.select(*FAN, *WEAK_VERDICTS), result.figures


def fraud_flags(
    campaign: Campaign,
    normalised: DataFrame,
    activity: DataFrame,
    cut: Cut = local_cut,
    weak: tuple[DataFrame, dict[str, int]] | None = None,
) -> tuple[DataFrame, dict[str, int]]:
    """(FAN + identity cluster + every fraud flag, graph figures) from the rule inputs alone.

    The cluster verdicts are decided on the few accounts that share an identifier (`linked_accounts`)
    and join the registrants by fan with the activity, so the registrants' rule inputs are shuffled
    by IP, by device and by fan (and, keyed by fan range, the flags into the ranges), and by nothing
    else. A fan-range key on `normalised` (`RANGE`) is carried to the flags.
    """
    cfg = campaign.screening
    inputs = normalised.select(*RULE_INPUTS, *range_column(normalised))
    linked, figures = linked_accounts(inputs, cfg.max_shared, cut, carry=CLUSTER_RANKING)
    verdicts = linked.transform(cluster_verdicts(cfg.ring_size))  # one join brings clusters and verdicts
    weak_accounts, weak_figures = weak if weak is not None else weakly_linked(campaign, normalised, activity, cut)
    figures = {**figures, **weak_figures}
    flags = (
        inputs.transform(velocity_flags(cfg.velocity.max_registrations, cfg.velocity.window_minutes))
        .transform(scalper_flags(activity, cfg.scalper.min_resale_listings, cfg.scalper.min_chargebacks))
        .transform(lambda df: with_cluster_columns(df, verdicts, on=FAN_SORT, verdicts=("_fraud_ring", "_duplicate")))
        # an account sharing nothing is a cluster of one: a ring only below a ring size of one
        .withColumn("_fraud_ring", F.coalesce(F.col("_fraud_ring"), F.col("cluster_size") > cfg.ring_size))
        .withColumn("_duplicate", F.coalesce(F.col("_duplicate"), F.lit(False)))
        # the few weakly linked accounts (a broadcast-sized table at any campaign size)
        .join(weak_accounts.select(*FAN, *WEAK_VERDICTS), FAN, "left")
        .withColumn("_stealth_ring", F.coalesce(F.col("_stealth_ring"), F.lit(False)))
        .withColumn("_review", F.coalesce(F.col("_review"), F.lit(False)))
        .select(*FAN, *range_column(inputs), *FRAUD_FLAGS)
    )
    return flags, figures


def apply_fraud_rules(campaign: Campaign, normalised: DataFrame, flags: DataFrame) -> DataFrame:
    """The normalised registrants with their fraud flags, then tags and eligibility (the registrants'
    columns, and the fan-range key when the rows carry one).

    Rows keyed by fan range join their flags within the range (the narrow flags move to the wide
    rows' partitions, as a hash table each) when the plan is made under `KEEP_RANGE_JOIN`."""
    keyed = range_column(normalised)
    on = [*keyed, *FAN]
    return (
        normalised.join(flags.hint("shuffle_hash") if keyed else flags, on)  # one flags row per fan
        .transform(assign_tags(campaign.options.allow_intl_phones))
        .select(*OUTPUT_COLUMNS, *keyed)
    )


# Spark re-shuffles both sides of a join unless they are partitioned on all its keys; rows laid out
# by fan range alone are grouped correctly for a join on (range, fan), so allow that plan. And plan
# it without adaptive execution: an adaptive plan keeps the writer's repartition into the ranges
# (the write drops the range key above it, so it cannot tell the rows are already there) and
# shuffles the 2M wide rows once more.
KEEP_RANGE_JOIN = {"spark.sql.requireAllClusterKeysForCoPartition": "false", **KEEP_LAYOUT}


def screen_registrants(
    campaign: Campaign,
    registrations: DataFrame,
    activity: DataFrame,
    lists: dict[str, list[str]],
    cut: Cut = local_cut,
) -> tuple[DataFrame, dict[str, int]]:
    """Pure screening: registrations + activity + lists → (registrants, graph figures)."""
    base = cut(normalised_registrants(campaign, registrations, lists), "normalise phones and emails")
    flags, figures = fraud_flags(campaign, base, activity, cut)
    return apply_fraud_rules(campaign, base, flags), {**phone_figures(base), **figures}


def screening_lists(campaign: Campaign, landing_entries: DataFrame) -> dict[str, list[str]]:
    """Block/allow entries from the campaign config, its rules files and the ingested landing lists."""
    cfg = campaign.screening
    lists = {name: list(getattr(cfg, name)) for name in LISTS}
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
    for row in landing_entries.select("list_name", "entry").collect():
        lists[row["list_name"]].append(row["entry"])
    return lists


def screen(ctx: StageContext) -> StageReport:
    """Screen every registrant of the campaign into `registrants`."""

    wh, cid, campaign = ctx.warehouse, ctx.campaign_id, ctx.campaign
    registrations, activity = wh.read("registrations", cid), wh.read("fan_activity", cid)
    with ctx.step("normalise"):
        lists = screening_lists(campaign, wh.read("screening_lists", cid))
        bounds = wh.fan_bounds(cid)  # the registrants' file ranges: the rows take that layout here
        normalised = normalised_registrants(campaign, registrations, lists, bounds)
        base = layout_keeping(ctx.cut)(normalised, "normalise phones and emails")
        phones = phone_figures(base)
    with ctx.step("weak_links"):
        weak = weakly_linked(campaign, base, activity, ctx.cut)
    with ctx.step("identity_graph"):
        flags, graph = fraud_flags(campaign, base, activity, ctx.cut, weak)
        figures = {**phones, **graph}
    with ctx.step("rules_and_write"), session_settings(ctx.spark, KEEP_RANGE_JOIN):
        registrants = apply_fraud_rules(campaign, base, flags)
        written = wh.replace_if_changed(
            "registrants", registrants.withColumn("run_id", F.lit(ctx.run_id)), cid, cut=ctx.cut
        )
    with ctx.step("counts_and_checks"):
        table = wh.read("registrants", cid)
        dq = check_tables(ctx, CHECKS)[0]
        report = screen_report(table, figures, dq, written)
        report.counts["registrations_read"] = registrations.count()
    return report


def screen_report(registrants: DataFrame, figures: dict[str, int], dq: str, written: bool) -> StageReport:
    """Counts per tag (and how many of them disqualify) and the summary lines."""

    # One pass, no shuffle: every tag is a known word of the rule book, counted where an array holds it.
    def holding(column: str, tag: str) -> Column:
        return F.sum(F.array_contains(column, tag).cast("long")).alias(f"{column}:{tag}")

    totals = registrants.agg(
        F.count(F.lit(1)).alias("registrants"),
        F.sum(F.col("eligible").cast("long")).alias("eligible"),
        *[holding(column, t) for column in ("tags", "ineligible_reasons") for t in TAG_ORDER],
    ).first()

    def per_tag(column: str) -> dict[str, int]:
        return {t: totals[f"{column}:{t}"] for t in TAG_ORDER if totals[f"{column}:{t}"]}

    tags, reasons = per_tag("tags"), per_tag("ineligible_reasons")
    n, eligible = totals["registrants"] or 0, totals["eligible"] or 0
    report = StageReport(counts={"registrants": n, "eligible": eligible, "ineligible": n - eligible, **figures})
    report.counts.update({f"tag:{t}": tags[t] for t in TAG_ORDER if t in tags})
    report.summary = [
        f"{n:,} registrants: {eligible:,} eligible, {n - eligible:,} ineligible"
        + ("" if written else " · unchanged since the last run (nothing written)")
    ]
    for tag in (t for t in TAG_ORDER if t in tags):
        disq = reasons.get(tag, 0)
        report.summary.append(f"{tag:<18} {tags[tag]:>10,}" + (f"  ({disq:,} disqualifying)" if disq else ""))
    valid, fallback = figures["phones_valid"], figures["phones_intl_prefix"]
    report.summary.append(
        f"phones: {valid:,} valid; {fallback:,} ({fallback / valid if valid else 0:.2%}) needed the "
        "international dialling prefix fallback (00 / 011)"
    )
    report.summary.append(f"identity graph: {figures['graph_rounds']} rounds; expectations: {dq}")
    if "weak_fresh_accounts" in figures:
        report.summary.append(
            f"weak links: {figures['weak_fresh_accounts']:,} fresh accounts, {figures['weak_candidate_pairs']:,} "
            f"candidate pairs, {figures['weak_links']:,} links ({figures['weak_rounds']} rounds); "
            f"{figures['weak_hot_blocks']:,} hot blocks (largest {figures['weak_largest_hot_block']:,} accounts)"
        )
    return report
