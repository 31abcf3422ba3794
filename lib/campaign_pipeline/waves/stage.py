"""The plan_waves stage: `waves` rows, one `wave_messages` row per message, and the legacy zips.

Wave membership is read, never decided here: a coded fan's wave is the one recorded in
`code_assignments.wave_id` when a wave first took him (assign_codes, `waves/membership.py`).

A wave that is sending or sent (its `waves.status` is no longer `scheduled`) never changes: its
messages and its `waves` row are kept exactly as they are, and the messages write leaves its
partition alone. While it plans, the run holds the scheduled waves (`waves/holding.py`), so no
notify run takes one of them between the read of their status and the write of their messages. Re-planning never changes a message
that already has a `notification_log` row: such messages are kept as they are (matched by
`message_id`), and the plan adds no message of another wave for their (fan, market), so a fan can
never get a second message because a wave was re-planned. Messages of scheduled waves without a
log row are re-planned, never dropped: with `channels: both`, a fan whose SMS was sent keeps his
planned email; a changed template changes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN_MARKET
from campaign_pipeline.channels import all_channels, names
from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import catalog_rows, sql_literal
from campaign_pipeline.quality.expectations import check_tables
from campaign_pipeline.stage_context import StageContext, StageReport, local_cut
from campaign_pipeline.warehouse import Warehouse
from campaign_pipeline.waves import holding
from campaign_pipeline.waves.checks import CHECKS
from campaign_pipeline.waves.export import export_wave, legacy_lines
from campaign_pipeline.waves.membership import ordered_waves, wave_status, wave_times
from campaign_pipeline.waves.plan import PROBLEM, plan_messages, unreachable
from campaign_pipeline.waves.render import validate_templates


@dataclass
class WaveInputs:
    assignments: DataFrame  # code_assignments: the code and the recorded wave of each coded fan
    registrants: DataFrame
    planned: DataFrame  # wave_messages as planned before
    logged: DataFrame  # (campaign_id, message_id) with a notification_log row
    waves: DataFrame | None = None  # the campaign's `waves` rows (status of each planned wave)


@dataclass
class WavePlan:
    members: DataFrame  # (fan, market) → wave, as recorded in code_assignments
    messages: DataFrame  # wave_messages rows: kept ones plus fresh ones
    kept: DataFrame  # messages kept as they were: already sent, or of a wave that is sending or sent
    frozen: list[str]  # waves that are sending or sent
    quarantined: DataFrame | None = None  # planned messages that cannot be sent, with `_problem`


def read_inputs(wh: Warehouse, campaign_id: str) -> WaveInputs:
    return WaveInputs(
        wh.read("code_assignments", campaign_id),
        wh.read("registrants", campaign_id),
        wh.read("wave_messages", campaign_id),
        wh.read("notification_log", campaign_id).select("campaign_id", "message_id").distinct(),
        wh.read("waves", campaign_id),
    )


def wave_members(campaign: Campaign, assignments: DataFrame) -> DataFrame:
    """(fan, market, wave, code, code type, notify_at) of coded fans with a recorded wave; a recorded
    wave missing from the config is an error (its fans hold validity dates from it)."""
    times = wave_times(campaign, assignments.sparkSession)
    members = (
        assignments.where(F.col("wave_id").isNotNull())
        .select(*FAN_MARKET, "wave_id", "code", "code_type")
        .join(times, ["campaign_id", "wave_id"], "left")
    )
    unknown = members.where(F.col("notify_at").isNull()).groupBy("wave_id").count().orderBy("wave_id").collect()
    if unknown:
        held = ", ".join(f"{r['wave_id']} ({r['count']:,} fans)" for r in unknown)
        raise PipelineError(
            f"plan_waves: code assignments of campaign {campaign.campaign_id} place fans in waves that are no longer "
            f"in the campaign config: {held}. A wave that holds fans cannot be removed: put it back in waves "
            "(its notify_at may move while it is still scheduled)"
        )
    return members


def plan_wave_messages(campaign: Campaign, inputs: WaveInputs, run_id: str, cut=local_cut) -> WavePlan:
    """Pure: messages of the recorded wave members; messages of waves that are sending or sent and
    sent messages kept as they were, nothing new for a (fan, market) with a sent message."""
    frozen = sorted(w for w, status in wave_status(inputs.waves).items() if status != "scheduled")
    members = cut(wave_members(campaign, inputs.assignments), "wave membership")
    open_members = members.where(~F.col("wave_id").isin(frozen)) if frozen else members
    planned = cut(plan_messages(campaign, open_members, inputs.registrants, run_id), "rendered messages")
    quarantined = planned.where(F.col(PROBLEM).isNotNull())
    planned = planned.where(F.col(PROBLEM).isNull()).drop(PROBLEM)
    in_frozen_wave = F.col("wave_id").isin(frozen) if frozen else F.lit(False)
    logged = inputs.planned.join(inputs.logged, ["campaign_id", "message_id"], "left_semi")
    kept = logged.unionByName(inputs.planned.where(in_frozen_wave)).dropDuplicates(["campaign_id", "message_id"])
    # Compared by message id: a fan's other channel in the same wave is still (re-)planned; only a
    # message of another wave is never added for a (fan, market) that already has a sent one.
    fresh = planned.join(kept.select("campaign_id", "message_id"), ["campaign_id", "message_id"], "left_anti")
    sent = logged.select(*[F.col(c).alias(f"_sent_{c}") for c in (*FAN_MARKET, "wave_id")])
    other_wave = [fresh[c] == sent[f"_sent_{c}"] for c in FAN_MARKET] + [fresh["wave_id"] != sent["_sent_wave_id"]]
    fresh = fresh.join(sent, other_wave, "left_anti")
    return WavePlan(members, cut(kept.unionByName(fresh), "render messages"), kept, frozen, quarantined)


def quarantine_rows(plan: WavePlan, run_id: str, at) -> DataFrame:
    """`quarantine` rows (stage plan_waves) for the messages that cannot be sent: the file is the
    wave (`plan_waves:<wave>`), the raw row names the message without personal data."""
    q = plan.quarantined
    return q.select(
        "campaign_id",
        F.lit("plan_waves").alias("stage"),
        F.concat(F.lit("plan_waves:"), F.col("wave_id")).alias("source_file"),
        F.lit(None).cast("long").alias("line"),
        F.concat_ws(
            " ",
            F.lit("message"),
            "message_id",
            F.lit("market"),
            "market_id",
            F.lit("channel"),
            "channel",
            F.lit("locale"),
            "locale",
        ).alias("raw"),  # fmt: skip
        F.col(PROBLEM).alias("reason"),
        F.lit(run_id).alias("run_id"),
        F.lit(None).cast("string").alias("source_checksum"),
        F.lit(at).cast("timestamp").alias("quarantined_at"),
    )


def write_quarantine(ctx: StageContext, plan: WavePlan) -> bool:
    """Replace the campaign's plan_waves quarantine rows of the waves that were planned (those of
    waves that are sending or sent stay as they are); nothing is written when they are unchanged."""
    frozen = [f"plan_waves:{w}" for w in plan.frozen]
    condition = "stage = 'plan_waves'" + (
        f" AND NOT (source_file IN ({', '.join(sql_literal(f) for f in frozen)}))" if frozen else ""
    )
    rows = quarantine_rows(plan, ctx.run_id, ctx.started_at)
    if rows.isEmpty() and (
        not ctx.warehouse.exists("quarantine")
        or ctx.warehouse.read("quarantine", ctx.campaign_id).where(condition).isEmpty()
    ):
        return False
    return ctx.warehouse.replace_if_changed(
        "quarantine", rows, ctx.campaign_id, ignore=("run_id", "quarantined_at"), condition=condition
    )


def message_counts(messages: DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    """(wave, channel) → (messages, SMS segments)."""
    return {
        (r["wave_id"], r["channel"]): (r["n"], r["segments"] or 0)
        for r in messages.groupBy("wave_id", "channel")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("sms_segments").alias("segments"))
        .collect()
    }


def wave_rows(ctx: StageContext, per: dict[tuple[str, str], tuple[int, int]]) -> DataFrame:
    """One `waves` row per configured wave, as planned now (scheduled, nothing sent)."""
    rows = []
    for w in ordered_waves(ctx.campaign):
        counts = {c: per.get((w.wave_id, c), (0, 0))[0] for c in names()}
        rows.append(
            {
                "campaign_id": ctx.campaign_id,
                "wave_id": w.wave_id,
                "notify_at": w.notify_at,
                "status": "scheduled",
                "attempts": 0,
                "total": sum(counts.values()),
                **counts,
                "sent": 0,
                "failed": 0,
                "skipped": 0,
                "planned_at": ctx.started_at,
                "run_id": ctx.run_id,
            }
        )
    return catalog_rows(ctx.spark, "waves", rows)


def changed_waves(ctx: StageContext, per: dict[tuple[str, str], tuple[int, int]]) -> DataFrame:
    """The `waves` rows (`wave_rows`) that differ from what the table holds."""
    same = ["campaign_id", "wave_id", "notify_at", "total", *names()]
    current = ctx.warehouse.read("waves", ctx.campaign_id).select(*same)
    return wave_rows(ctx, per).join(current, same, "left_anti")


def write_waves(ctx: StageContext, per: dict[tuple[str, str], tuple[int, int]]) -> None:
    """One `waves` row per configured wave; only still-scheduled waves whose plan changed are updated."""
    changed = changed_waves(ctx, per)
    if not changed.isEmpty():
        ctx.warehouse.merge_retrying(
            "waves", changed, ctx.campaign_id, "t.status = 'scheduled'", "writing the campaign's waves"
        )


def _outside(waves: list[str]) -> tuple[Column, str | None]:
    """(rows of the other waves, as a Column; the SQL condition for them) — all rows when `waves` is empty."""
    if not waves:
        return F.lit(True), None
    return ~F.col("wave_id").isin(waves), f"NOT (wave_id IN ({', '.join(sql_literal(w) for w in waves)}))"


def write_plan(ctx: StageContext, plan: WavePlan, inputs: WaveInputs) -> tuple[bool, dict]:
    """Write the plan's messages of every wave that is not sending or sent, and the waves rows,
    holding the scheduled waves meanwhile (`waves/holding.py`); nothing is committed, and nothing
    held, when the plan equals what is there. Returns (messages written?, message counts)."""
    wh, cid = ctx.warehouse, ctx.campaign_id
    keep, condition = _outside(plan.frozen)
    same, messages = wh.holds("wave_messages", plan.messages.where(keep), cid, condition=condition)
    per = message_counts(plan.messages)
    if same and not waves_changed(ctx, per):
        return False, per
    held = holding.hold_scheduled_waves(wh, cid, ctx.run_id)  # no notify run takes them meanwhile
    try:
        if (
            sorted(w for w, status in wave_status(wh.read("waves", cid)).items() if status != "scheduled")
            != plan.frozen
        ):
            # A wave started sending between the plan and the hold: plan again from what is there now.
            inputs = read_inputs(wh, cid)
            plan = plan_wave_messages(ctx.campaign, inputs, ctx.run_id, ctx.cut)
            per = message_counts(plan.messages)
        still = set(holding.renew(wh, cid, ctx.run_id))
        # Messages of a wave that is sending or sent are never rewritten; nor those of a wave whose
        # hold was lost (a notify run took it after the hold expired).
        keep, condition = _outside(sorted(set(plan.frozen) | (set(held) - still)))
        written = wh.replace_if_changed("wave_messages", plan.messages.where(keep), cid, condition=condition)
        write_waves(ctx, per)
    finally:
        holding.release(wh, cid, ctx.run_id)
    return written, per


def waves_changed(ctx: StageContext, per: dict) -> bool:
    return not changed_waves(ctx, per).isEmpty()


def export_root(ctx: StageContext) -> str:
    return (ctx.env.export_root or f"{ctx.warehouse.root}/_exports").rstrip("/")


def plan_waves(ctx: StageContext) -> StageReport:
    """Plan every configured wave's messages (a no-op when nothing changed) and export the zips."""
    wh, cid, campaign = ctx.warehouse, ctx.campaign_id, ctx.campaign
    validate_templates(campaign)
    if not campaign.waves:
        raise PipelineError(f"campaign {cid} has no waves: add waves (wave_id, notify_at) to the campaign config")
    inputs = read_inputs(wh, cid)
    with ctx.step("plan_messages"):
        plan = plan_wave_messages(campaign, inputs, ctx.run_id, ctx.cut)
    with ctx.step("write"):
        written, per = write_plan(ctx, plan, inputs)
        write_quarantine(ctx, plan)
    with ctx.step("counts"):
        report = waves_report(campaign, plan, inputs, per, written)
    with ctx.step("expectations"):
        for (table, _), line in zip(CHECKS, check_tables(ctx, CHECKS), strict=True):
            report.summary.append(f"expectations on {table}: {line}")
    with ctx.step("export"):
        for w in ordered_waves(campaign):
            ctx.describe(f"legacy export {w.wave_id}")
            lines = legacy_lines(plan.messages.where(F.col("wave_id") == w.wave_id))
            uri, rows = export_wave(lines, export_root(ctx), cid, w.wave_id, w.notify_at, f"{wh.root}/_staging")
            counts = {c: per.get((w.wave_id, c.name), (0, 0))[0] for c in all_channels()}
            report.counts[f"wave:{w.wave_id}"] = sum(counts.values())
            planned = " + ".join(f"{n:,} {c.label}" for c, n in counts.items())
            report.summary.append(f"{w.wave_id} at {w.notify_at:%Y-%m-%d %H:%M %Z}: {planned} → {uri} ({rows:,} rows)")
    return report


def waves_report(campaign: Campaign, plan: WavePlan, inputs: WaveInputs, per: dict, written: bool) -> StageReport:
    """Messages per channel, SMS segments, fans in waves and in none, unreachable fans, kept messages."""
    messaged = plan.messages.select(*FAN_MARKET)
    if plan.quarantined is not None:  # a quarantined message's fan had a channel: counted apart
        messaged = messaged.unionByName(plan.quarantined.select(*FAN_MARKET))
    no_channel = unreachable(plan.members, messaged).count()
    per_wave = {
        r["wave_id"]: r["n"] for r in plan.members.groupBy("wave_id").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    without_wave = inputs.assignments.where(F.col("wave_id").isNull()).count()
    segmented = {c.name for c in all_channels() if c.counts_segments}
    report = StageReport(
        counts={
            "messages": sum(n for n, _ in per.values()),
            **{c: sum(n for (_, ch), (n, _) in per.items() if ch == c) for c in names()},
            "sms_segments": sum(seg for (_, ch), (_, seg) in per.items() if ch in segmented),
            "fans_in_waves": sum(per_wave.values()),
            "coded_fans_without_wave": without_wave,
            "unreachable": no_channel,
            "kept_sent": plan.kept.count(),
            "quarantined": plan.quarantined.count() if plan.quarantined is not None else 0,
        }
    )
    c = report.counts
    report.summary = [
        f"{c['messages']:,} messages: "
        + ", ".join(
            f"{c[ch.name]:,} {ch.label}" + (f" ({c['sms_segments']:,} segments)" if ch.counts_segments else "")
            for ch in all_channels()
        )
        + ("" if written else " · unchanged since the last run (nothing written)")
    ]
    if plan.frozen:
        report.summary.append(f"kept as they are (sending or sent): {', '.join(plan.frozen)}")
    for w in ordered_waves(campaign):
        if w.limit is not None and per_wave.get(w.wave_id, 0) > w.limit:
            report.summary.append(
                f"{w.wave_id} holds {per_wave[w.wave_id]:,} fans, more than its limit {w.limit:,} (the limit was "
                "lowered after fans were placed; placed fans keep their wave)"
            )
    if without_wave:
        report.summary.append(
            f"{without_wave:,} coded fans are in no wave yet: no open wave with room covers them (add a wave or raise "
            "a wave's limit in the campaign config, then run assign_codes and plan_waves)"
        )
    if no_channel:
        report.summary.append(f"{no_channel:,} coded fans have no usable channel for their wave (not messaged)")
    if c["quarantined"]:
        first = plan.quarantined.orderBy("wave_id", "message_id").select(PROBLEM).first()[0]
        report.summary.append(
            f"{c['quarantined']:,} messages could not be rendered or are too long: quarantined (stage plan_waves), not "
            f"sent; the first: {first}"
        )
    return report
