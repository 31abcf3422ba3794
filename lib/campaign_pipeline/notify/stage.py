"""The notify stage: send the messages of due waves, exactly once, at the gateway's pace.

A wave is due when its `notify_at` is at or before the decision time (`--now`, default: when the
run started). Lifecycle in `waves`: `scheduled → sending → completed | completed_with_failures |
failed`. A run takes a due wave by setting it `sending` (attempts + 1); a wave left `sending` by a
run that died, or `failed`, is taken again automatically while `attempts` < `notify.wave_attempts`
(default 2), and after that only by an operator's `--retry-failed`. A wave another run is sending
is left alone until it has shown no progress for `notify.lease_seconds`.

Exactly once: the messages to send are the wave's `wave_messages` without an outcome in
`notification_log` (`--retry-failed`: also those that failed). They are sent in chunks of
`notify.chunk_size` (a chunk is a hash bucket of `message_id`); each chunk is sent by Spark tasks on
the executors (`notify/send.py`, the campaign's limits divided between the tasks) and its outcomes
are committed to `notification_log` (MERGE on `message_id`) while the next chunk is sent, and
before the one after it starts. A message with a recorded outcome is never sent again; a crash
loses at most the outcomes of the two chunks in flight (the one sending, the one committing),
whose messages the next run sends again with the same `Idempotency-Key` (and, on a FIFO queue,
the same deduplication id). A message without a recipient is `skipped`.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.config import Wave
from campaign_pipeline.errors import ConfigError
from campaign_pipeline.notify.pace import Pace
from campaign_pipeline.notify.send import OUTCOME_SCHEMA, Senders, driver_aws_settings, partition_sender
from campaign_pipeline.ops import slack
from campaign_pipeline.stage_context import StageContext, StageReport
from campaign_pipeline.tables import Warehouse, catalog_rows, spec
from campaign_pipeline.waves.membership import ordered_waves

FINAL = ("completed", "completed_with_failures")
RESUMABLE = ("sending", "failed")


def pace_of(env) -> Pace:
    n = env.notify
    return Pace(
        max_in_flight=n.max_in_flight,
        rate_per_second=n.rate_per_second,
        max_attempts=n.max_attempts,
        timeout_seconds=n.timeout_seconds,
        backoff_seconds=n.backoff_seconds,
        backoff_max_seconds=n.backoff_max_seconds,
    )


def decide(wave: Wave, row, now: dt.datetime, retry_failed: bool, wave_attempts: int, last_progress, lease: float):
    """(send?, why) for one configured wave and its `waves` row."""
    if row is None:
        return False, "not planned yet: run plan_waves first"
    if wave.notify_at > now:
        return False, f"not due until {wave.notify_at:%Y-%m-%d %H:%M %Z}"
    status, attempts = row["status"], row["attempts"] or 0
    if status == "scheduled":
        return True, "due"
    if status in FINAL:
        if retry_failed and (row["failed"] or 0):
            return True, "re-sending its failed messages (--retry-failed)"
        return False, f"already {status}"
    if status == "sending" and last_progress is not None:
        quiet = (dt.datetime.now(dt.UTC) - last_progress).total_seconds()
        if quiet < lease:
            return False, (
                f"another notify run ({row['run_id']}) is sending it: last progress {quiet:.0f} s ago; it is taken "
                f"over after {lease:g} s without progress (notify.lease_seconds)"
            )
    if retry_failed:
        return True, f"{status} after {attempts} attempts: taken again (--retry-failed)"
    if attempts >= wave_attempts:
        return False, (
            f"{status} after {attempts} attempts (notify.wave_attempts {wave_attempts}): needs an operator — "
            f"check notification_log, then run notify --retry-failed --wave {wave.wave_id}"
        )
    return True, f"{status} after {attempts} attempt(s): taken again"


def _aware(value):
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def last_progress(wh: Warehouse, cid: str, wave_id: str, row) -> dt.datetime | None:
    """When the wave last moved: the latest committed outcome, or when a run took it."""
    latest = wh.read("notification_log", cid).where(F.col("wave_id") == wave_id).agg(F.max("logged_at")).first()[0]
    times = [t for t in (_aware(latest), _aware(row["sending_at"])) if t is not None]
    return max(times) if times else None


def senders_for(ctx: StageContext, channels: set[str], tasks: int) -> Senders:
    env = ctx.env
    if "sms" in channels and not env.sms_gateway_url:
        raise ConfigError(f"notify: environment {env.name} sets no sms_gateway_url, and the wave has SMS to send")
    if "email" in channels and not env.email_queue_url:
        raise ConfigError(f"notify: environment {env.name} sets no email_queue_url, and the wave has emails to send")
    token = os.environ.get(env.secrets.sms_token_env) if "sms" in channels else None
    return Senders(
        pace=pace_of(env).share(tasks),
        sms_url=env.sms_gateway_url,
        sms_token=token,
        queue_url=env.email_queue_url,
        region=env.aws_region,
        campaign_name=ctx.campaign.name,
        aws=driver_aws_settings() if "email" in channels else (),
    )


def outstanding(messages: DataFrame, log: DataFrame, retry_failed: bool) -> DataFrame:
    """The wave's messages without a recorded outcome (with `retry_failed`, failed ones too)."""
    final = ["sent", "skipped"] if retry_failed else ["sent", "skipped", "failed"]
    done = log.where(F.col("status").isin(final)).select("campaign_id", "message_id")
    return messages.join(done, ["campaign_id", "message_id"], "left_anti")


def commit_outcomes(ctx: StageContext, rows: list[dict]) -> None:
    logged_at = dt.datetime.now(dt.UTC)
    full = [{**r, "logged_at": logged_at, "run_id": ctx.run_id} for r in rows]
    df = catalog_rows(ctx.spark, "notification_log", full)
    ctx.warehouse.merge("notification_log", df, update_existing=True, update_condition="t.status = 'failed'")


def wave_outcomes(wh: Warehouse, cid: str, wave_id: str) -> dict[str, int]:
    """'<channel>:<status>' → messages, over the wave's messages and their outcomes (pending if none)."""
    messages = (
        wh.read("wave_messages", cid).where(F.col("wave_id") == wave_id).select("campaign_id", "message_id", "channel")
    )
    log = wh.read("notification_log", cid).select("campaign_id", "message_id", "status")
    joined = messages.join(log, ["campaign_id", "message_id"], "left").fillna({"status": "pending"})
    return {
        f"{r['channel']}:{r['status']}": r["n"]
        for r in joined.groupBy("channel", "status").agg(F.count(F.lit(1)).alias("n")).collect()
    }


def wave_status_after(counts: dict[str, int]) -> str:
    sent = sum(v for k, v in counts.items() if k.endswith(":sent"))
    failed = sum(v for k, v in counts.items() if k.endswith(":failed"))
    pending = sum(v for k, v in counts.items() if k.endswith(":pending"))
    if pending:
        return "sending"
    if failed and not sent:
        return "failed"
    return "completed_with_failures" if failed else "completed"


def update_wave(wh: Warehouse, cid: str, wave_id: str, values: dict) -> None:
    from delta.tables import DeltaTable

    wh.ensure("waves")
    condition = (F.col("campaign_id") == cid) & (F.col("wave_id") == wave_id)
    DeltaTable.forPath(wh.spark, wh.path("waves")).update(condition, values)


def send_wave(ctx: StageContext, wave: Wave, retry_failed: bool, dry_run: bool, report: StageReport) -> None:
    wh, cid = ctx.warehouse, ctx.campaign_id
    messages = wh.read("wave_messages", cid).where(F.col("wave_id") == wave.wave_id)
    todo = outstanding(messages, wh.read("notification_log", cid), retry_failed)
    todo = ctx.cut(todo, f"{wave.wave_id}: messages to send")
    per_channel = {r["channel"]: r["n"] for r in todo.groupBy("channel").agg(F.count(F.lit(1)).alias("n")).collect()}
    n = sum(per_channel.values())
    if dry_run:
        report.summary.append(
            f"{wave.wave_id}: would send {per_channel.get('sms', 0):,} SMS and {per_channel.get('email', 0):,} emails "
            "(--dry-run: nothing sent, nothing written)"
        )
        return
    now = dt.datetime.now(dt.UTC)
    update_wave(
        wh, cid, wave.wave_id,
        {"status": F.lit("sending"), "attempts": F.coalesce(F.col("attempts"), F.lit(0)) + 1,
         "sending_at": F.lit(now), "run_id": F.lit(ctx.run_id)},
    )  # fmt: skip
    no_recipient = F.coalesce(F.trim(F.col("recipient")), F.lit("")) == ""
    skipped = todo.where(no_recipient)
    n_skipped = skipped.count()
    if n_skipped:  # recorded without a driver round trip, however many there are
        logged_at = dt.datetime.now(dt.UTC)
        values = {"status": F.lit("skipped"), "attempts": F.lit(0), "last_error": F.lit("no recipient"),
                  "logged_at": F.lit(logged_at), "run_id": F.lit(ctx.run_id)}  # fmt: skip
        outcomes = skipped.select(*[
            values.get(f.name, F.col(f.name) if f.name in skipped.columns else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in spec("notification_log").schema.fields
        ])  # fmt: skip
        wh.merge("notification_log", outcomes, update_existing=True, update_condition="t.status = 'failed'")
        report.counts["skipped"] = report.counts.get("skipped", 0) + n_skipped
    sendable = todo.where(~no_recipient)
    chunk_size = ctx.env.notify.chunk_size
    chunks = max(1, math.ceil((n - n_skipped) / chunk_size))
    # One task slot stays free for the Delta commit of the previous chunk, which runs meanwhile.
    slots = max(1, ctx.spark.sparkContext.defaultParallelism - 1)
    pace = pace_of(ctx.env)
    tasks = pace.tasks_for(min(n, chunk_size), slots)
    senders = senders_for(ctx, {c for c, k in per_channel.items() if k}, tasks)
    sendable = sendable.withColumn("_chunk", F.pmod(F.xxhash64("message_id"), F.lit(chunks)))
    # Chunk i + 1 is sent while chunk i's outcomes are committed (one committer thread): at most two
    # chunks are ever without committed outcomes, and sending never waits for Delta.
    sent_now = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="notify-commit") as committer:
        pending: Future | None = None
        for i in range(chunks):
            ctx.describe(f"{wave.wave_id}: send chunk {i + 1} of {chunks}")
            part = sendable.where(F.col("_chunk") == i).drop("_chunk").repartition(tasks, "message_id")
            with ctx.step("send"):
                rows = [r.asDict() for r in part.mapInPandas(partition_sender(senders), OUTCOME_SCHEMA).collect()]
            with ctx.step("commit wait"):
                if pending is not None:
                    pending.result()
            pending = committer.submit(commit_outcomes, ctx, rows) if rows else None
            for r in rows:
                key = f"{r['channel']}:{r['status']}"
                report.counts[key] = report.counts.get(key, 0) + 1
                sent_now += r["status"] == "sent"
        with ctx.step("commit wait"):
            if pending is not None:
                pending.result()
    counts = wave_outcomes(wh, cid, wave.wave_id)
    status = wave_status_after(counts)
    total = sum(counts.values())

    def count(status_name):
        return sum(v for k, v in counts.items() if k.endswith(f":{status_name}"))

    update_wave(
        wh, cid, wave.wave_id,
        {"status": F.lit(status), "total": F.lit(total), "sent": F.lit(count("sent")),
         "failed": F.lit(count("failed")), "skipped": F.lit(count("skipped")),
         "counts": F.create_map(*[x for k, v in sorted(counts.items()) for x in (F.lit(k), F.lit(v).cast("long"))]),
         "finished_at": F.lit(dt.datetime.now(dt.UTC))},
    )  # fmt: skip
    slack.post(ctx.env, slack.wave_summary(cid, wave.wave_id, status, counts))
    report.summary.append(
        f"{wave.wave_id}: {status} · this run sent {sent_now:,}"
        f" · wave totals: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    )


def notify(ctx: StageContext) -> StageReport:
    """Send the messages of the campaign's due waves (README: Notify)."""
    wh, cid, campaign = ctx.warehouse, ctx.campaign_id, ctx.campaign
    options = ctx.options
    only = options.get("wave")
    retry_failed, dry_run = bool(options.get("retry_failed")), bool(options.get("dry_run"))
    if only and only not in {w.wave_id for w in campaign.waves}:
        raise ConfigError(f"notify --wave {only}: campaign {cid} has no such wave (waves in the campaign config)")
    settings = ctx.env.notify
    rows = {r["wave_id"]: r for r in wh.read("waves", cid).collect()}
    report = StageReport(counts={})
    taken = 0
    for wave in ordered_waves(campaign):
        if only and wave.wave_id != only:
            continue
        row = rows.get(wave.wave_id)
        progress = last_progress(wh, cid, wave.wave_id, row) if row and row["status"] == "sending" else None
        go, why = decide(wave, row, ctx.now, retry_failed, settings.wave_attempts, progress, settings.lease_seconds)
        if not go:
            report.summary.append(f"{wave.wave_id}: {why}")
            continue
        taken += 1
        send_wave(ctx, wave, retry_failed, dry_run, report)
    report.counts["waves_sent"] = 0 if dry_run else taken
    for key in ("sms:sent", "sms:failed", "email:sent", "email:failed"):
        report.counts.setdefault(key, 0)
    if not taken:
        report.summary.insert(0, "no wave to send")
    elif not dry_run:
        from campaign_pipeline.quality.suites import check_table

        with ctx.step("expectations"):
            report.summary.append(f"expectations on notification_log: {check_table(ctx, 'notification_log')}")
    return report


def due_campaigns(wh: Warehouse, now: dt.datetime) -> list[str]:
    """Campaigns with a wave still to send whose notify time has passed (for `notify --due`)."""
    if not wh.exists("waves"):
        return []
    rows = (
        wh.read("waves")
        .where(F.col("status").isin("scheduled", *RESUMABLE) & (F.col("notify_at") <= F.lit(now)))
        .select("campaign_id")
        .distinct()
        .orderBy("campaign_id")
        .collect()
    )
    return [r[0] for r in rows]
