"""The plan_waves stage: `waves` rows, one `wave_messages` row per message, and the legacy zips.

Re-planning never changes a message that already has a `notification_log` row: such messages are
kept as they are, and the plan adds nothing new for their (fan, market), so a fan can never get a
second message because a wave was re-planned. Unsent messages are re-planned freely (a changed
template or wave changes them). A wave whose status is no longer `scheduled` keeps its row.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from campaign_pipeline.errors import PipelineError
from campaign_pipeline.runner import StageContext, StageResult, stage
from campaign_pipeline.session import set_stage_description
from campaign_pipeline.tables import CATALOG, literal_frame
from campaign_pipeline.waves.export import export_wave, legacy_lines
from campaign_pipeline.waves.membership import ordered_waves, wave_membership
from campaign_pipeline.waves.plan import plan_messages, unreachable
from campaign_pipeline.waves.render import validate_templates

KEY = ["campaign_id", "global_user_id", "market_id"]


def export_root(ctx: StageContext) -> str:
    return (ctx.env.export_root or f"{ctx.warehouse.root}/_exports").rstrip("/")


@stage("plan_waves", order=60, description="split coded fans into waves and write one row per message")
def plan_waves(ctx: StageContext) -> StageResult:
    """Plan every configured wave's messages (a no-op when nothing changed) and export the zips."""
    spark, wh, cid, campaign = ctx.spark, ctx.warehouse, ctx.campaign_id, ctx.campaign
    validate_templates(campaign)
    if not wh.exists("code_assignments"):
        raise PipelineError(f"no code assignments for campaign {cid}: run the assign_codes stage first")
    if not campaign.waves:
        raise PipelineError(f"campaign {cid} has no waves: add waves (wave_id, notify_at) to the campaign config")
    selected = wh.read("selections", cid).where(F.col("verdict") == "selected")
    members = wave_membership(spark, campaign, selected).localCheckpoint(eager=True)
    assignments = wh.read("code_assignments", cid)
    set_stage_description(spark, "plan_waves", "render messages")
    planned = plan_messages(spark, campaign, members, assignments, wh.read("registrants", cid), ctx.run_id)
    logged = wh.read("notification_log", cid).select("campaign_id", "message_id").distinct()
    kept = wh.read("wave_messages", cid).join(logged, ["campaign_id", "message_id"], "left_semi")
    fresh = planned.join(kept.select(*KEY).distinct(), KEY, "left_anti")
    messages = kept.unionByName(fresh).localCheckpoint(eager=True)
    set_stage_description(spark, "plan_waves", "write wave_messages")
    written = wh.replace_if_changed("wave_messages", messages, cid)

    per = {
        (r["wave_id"], r["channel"]): (r["n"], r["segments"], r["codes"])
        for r in messages.groupBy("wave_id", "channel")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("sms_segments").alias("segments"),
            F.sum((F.col("code_type") != "tm").cast("int")).alias("codes"),
        )
        .collect()
    }
    no_channel = unreachable(members, assignments, messages).count()
    in_waves = members.count()
    coded_members = members.join(assignments.select(*KEY), KEY, "left_semi").count()

    per_wave = {
        w.wave_id: (per.get((w.wave_id, "sms"), (0, 0, 0))[0], per.get((w.wave_id, "email"), (0, 0, 0))[0])
        for w in ordered_waves(campaign)
    }
    wave_rows = []
    for w in ordered_waves(campaign):
        sms, email = per_wave[w.wave_id]
        wave_rows.append(
            (cid, w.wave_id, w.notify_at, "scheduled", 0, sms + email, sms, email, 0, 0, 0, ctx.started_at, ctx.run_id)
        )
    waves_df = literal_frame(spark, wave_rows, CATALOG["waves"].schema)
    current = wh.read("waves", cid)
    changed = waves_df.join(
        current.select("campaign_id", "wave_id", "notify_at", "total", "sms", "email", "status"),
        ["campaign_id", "wave_id", "notify_at", "total", "sms", "email"],
        "left_anti",
    )
    if not changed.isEmpty():
        wh.merge("waves", changed, update_existing=True, update_condition="t.status = 'scheduled'")

    result = StageResult()
    result.counts = {
        "messages": sum(v[0] for v in per.values()),
        "sms": sum(v[0] for (_, ch), v in per.items() if ch == "sms"),
        "email": sum(v[0] for (_, ch), v in per.items() if ch == "email"),
        "sms_segments": sum(v[1] or 0 for (_, ch), v in per.items() if ch == "sms"),
        "fans_in_waves": in_waves,
        "coded_fans_in_waves": coded_members,
        "unreachable": no_channel,
        "kept_sent": kept.count(),
    }
    result.summary = [
        f"{result.counts['messages']:,} messages: {result.counts['sms']:,} SMS ({result.counts['sms_segments']:,} "
        f"segments), {result.counts['email']:,} email"
        + ("" if written else " · unchanged since the last run (nothing written)")
    ]
    if no_channel:
        result.summary.append(f"{no_channel:,} coded fans have no usable channel for their wave (not messaged)")
    destination = export_root(ctx)
    for w in ordered_waves(campaign):
        sms, email = per_wave[w.wave_id]
        result.counts[f"wave:{w.wave_id}"] = sms + email
        set_stage_description(spark, "plan_waves", f"legacy export {w.wave_id}")
        uri, rows = export_wave(
            legacy_lines(messages.where(F.col("wave_id") == w.wave_id)), destination, cid, w.wave_id, w.notify_at
        )
        result.summary.append(
            f"{w.wave_id} at {w.notify_at:%Y-%m-%d %H:%M %Z}: {sms:,} SMS + {email:,} email → {uri} ({rows:,} rows)"
        )
    return result
