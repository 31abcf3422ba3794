"""The plan_waves stage: `waves` rows, one `wave_messages` row per message, and the legacy zips.

Re-planning never changes a message that already has a `notification_log` row: such messages are
kept as they are (matched by `message_id`), and the plan adds no message of another wave for their
(fan, market), so a fan can never get a second message because a wave was re-planned. Messages
without a log row are re-planned, never dropped: with `channels: both`, a fan whose SMS was sent
keeps his planned email. Unsent messages are re-planned freely (a changed
template or wave changes them). A wave whose status is no longer `scheduled` keeps its row.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.stage_context import StageContext, StageReport, local_cut
from campaign_pipeline.tables import FAN_MARKET, Warehouse, catalog_rows
from campaign_pipeline.waves.export import export_wave, legacy_lines
from campaign_pipeline.waves.membership import ordered_waves, wave_membership
from campaign_pipeline.waves.plan import plan_messages, unreachable
from campaign_pipeline.waves.render import validate_templates


@dataclass
class WaveInputs:
    selected: DataFrame  # `selected` rows of selections
    assignments: DataFrame
    registrants: DataFrame
    planned: DataFrame  # wave_messages as planned before
    logged: DataFrame  # (campaign_id, message_id) with a notification_log row


@dataclass
class WavePlan:
    members: DataFrame  # (fan, market) → wave
    messages: DataFrame  # wave_messages rows: kept sent ones plus fresh ones
    kept: DataFrame  # messages kept because they were already sent


def read_inputs(wh: Warehouse, campaign_id: str) -> WaveInputs:
    return WaveInputs(
        wh.read("selections", campaign_id).where(F.col("verdict") == "selected"),
        wh.read("code_assignments", campaign_id),
        wh.read("registrants", campaign_id),
        wh.read("wave_messages", campaign_id),
        wh.read("notification_log", campaign_id).select("campaign_id", "message_id").distinct(),
    )


def plan_wave_messages(campaign: Campaign, inputs: WaveInputs, run_id: str, cut=local_cut) -> WavePlan:
    """Pure: wave membership and messages; sent messages kept, nothing new for their (fan, market)."""
    members = cut(wave_membership(campaign, inputs.selected), "wave membership")
    planned = plan_messages(campaign, members, inputs.assignments, inputs.registrants, run_id)
    kept = inputs.planned.join(inputs.logged, ["campaign_id", "message_id"], "left_semi")
    # Compared by message id: a fan's other channel in the same wave is still (re-)planned; only a
    # message of another wave is never added for a (fan, market) that already has a sent one.
    fresh = planned.join(kept.select("campaign_id", "message_id"), ["campaign_id", "message_id"], "left_anti")
    sent = kept.select(*[F.col(c).alias(f"_sent_{c}") for c in (*FAN_MARKET, "wave_id")])
    other_wave = [fresh[c] == sent[f"_sent_{c}"] for c in FAN_MARKET] + [fresh["wave_id"] != sent["_sent_wave_id"]]
    fresh = fresh.join(sent, other_wave, "left_anti")
    return WavePlan(members, cut(kept.unionByName(fresh), "render messages"), kept)


def message_counts(messages: DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    """(wave, channel) → (messages, SMS segments)."""
    return {
        (r["wave_id"], r["channel"]): (r["n"], r["segments"] or 0)
        for r in messages.groupBy("wave_id", "channel")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("sms_segments").alias("segments"))
        .collect()
    }


def write_waves(ctx: StageContext, per: dict[tuple[str, str], tuple[int, int]]) -> None:
    """One `waves` row per configured wave; only still-scheduled waves whose plan changed are updated."""
    rows = []
    for w in ordered_waves(ctx.campaign):
        sms, email = per.get((w.wave_id, "sms"), (0, 0))[0], per.get((w.wave_id, "email"), (0, 0))[0]
        rows.append(
            {
                "campaign_id": ctx.campaign_id,
                "wave_id": w.wave_id,
                "notify_at": w.notify_at,
                "status": "scheduled",
                "attempts": 0,
                "total": sms + email,
                "sms": sms,
                "email": email,
                "sent": 0,
                "failed": 0,
                "skipped": 0,
                "planned_at": ctx.started_at,
                "run_id": ctx.run_id,
            }
        )
    same = ["campaign_id", "wave_id", "notify_at", "total", "sms", "email"]
    current = ctx.warehouse.read("waves", ctx.campaign_id).select(*same)
    changed = catalog_rows(ctx.spark, "waves", rows).join(current, same, "left_anti")
    if not changed.isEmpty():
        ctx.warehouse.merge("waves", changed, update_existing=True, update_condition="t.status = 'scheduled'")


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
        written = wh.replace_if_changed("wave_messages", plan.messages, cid)  # already cut
        per = message_counts(plan.messages)
        write_waves(ctx, per)
    with ctx.step("counts"):
        report = waves_report(plan, inputs, per, written)
    with ctx.step("export"):
        for w in ordered_waves(campaign):
            ctx.describe(f"legacy export {w.wave_id}")
            lines = legacy_lines(plan.messages.where(F.col("wave_id") == w.wave_id))
            uri, rows = export_wave(lines, export_root(ctx), cid, w.wave_id, w.notify_at)
            sms, email = per.get((w.wave_id, "sms"), (0, 0))[0], per.get((w.wave_id, "email"), (0, 0))[0]
            report.counts[f"wave:{w.wave_id}"] = sms + email
            report.summary.append(
                f"{w.wave_id} at {w.notify_at:%Y-%m-%d %H:%M %Z}: {sms:,} SMS + {email:,} email → {uri} ({rows:,} rows)"
            )
    return report


def waves_report(plan: WavePlan, inputs: WaveInputs, per: dict, written: bool) -> StageReport:
    """Messages per channel, SMS segments, fans in waves, unreachable fans, messages kept as sent."""
    no_channel = unreachable(plan.members, inputs.assignments, plan.messages).count()
    coded_members = plan.members.join(inputs.assignments.select(*FAN_MARKET), FAN_MARKET, "left_semi").count()
    report = StageReport(
        counts={
            "messages": sum(n for n, _ in per.values()),
            "sms": sum(n for (_, ch), (n, _) in per.items() if ch == "sms"),
            "email": sum(n for (_, ch), (n, _) in per.items() if ch == "email"),
            "sms_segments": sum(seg for (_, ch), (_, seg) in per.items() if ch == "sms"),
            "fans_in_waves": plan.members.count(),
            "coded_fans_in_waves": coded_members,
            "unreachable": no_channel,
            "kept_sent": plan.kept.count(),
        }
    )
    c = report.counts
    report.summary = [
        f"{c['messages']:,} messages: {c['sms']:,} SMS ({c['sms_segments']:,} segments), {c['email']:,} email"
        + ("" if written else " · unchanged since the last run (nothing written)")
    ]
    if no_channel:
        report.summary.append(f"{no_channel:,} coded fans have no usable channel for their wave (not messaged)")
    return report
