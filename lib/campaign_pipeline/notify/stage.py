"""The notify stage: send the messages of due waves, exactly once, at the gateway's pace.

A wave is due when its `notify_at` is at or before the decision time (`--now`, default: when the
run started). Lifecycle in `waves`: `scheduled → sending → completed | completed_with_failures |
failed`. Waves are taken one at a time, each re-read just before it is taken: a run sends a wave
only after winning it by a conditional write (`notify/lease.py`) and only while it holds the
lease it renews as it sends, so two runs (the scheduler's next tick, an operator, another
cluster) never send one wave at once. Taking a `scheduled` wave, or taking over one whose holder
stopped renewing (a run that died) or that `failed`, spends one of its `notify.wave_attempts`
(default 2); after that only an operator's `--retry-failed` takes it. A wave its last holder
paused because the gateway asked to wait (`Retry-After` above `notify.retry_after_max_seconds`)
is resumed once the pause is over, without spending an attempt. Before a wave is taken,
`notify/preflight.py` checks that its channels can be sent at all; if not, the wave is left as it
was.

Exactly once: the messages to send are the wave's `wave_messages` without an outcome in
`notification_log` (`--retry-failed`: also those that failed), found just before the wave is taken
(and found again once it is taken if `wave_messages` was written meanwhile: a re-plan that came
and went leaves the wave's row as it was). They are sent in chunks of about
`notify.chunk_size` (a chunk is a hash bucket of `message_id`, its own partitions of the cut);
each chunk is sent by Spark tasks on the executors (`notify/send.py`, the campaign's limits
divided between the tasks, no request started after the lease the tasks were given) and its
outcomes are committed to
`notification_log` (MERGE on `message_id`) while the next chunk is sent, and before the one after
it starts. A message with a recorded outcome is never sent again; a crash loses at most the
outcomes of the two chunks in flight (the one sending, the one committing), whose messages the
next run sends again with the same `Idempotency-Key` (and, on a FIFO queue, the same
deduplication id). A message without a recipient is `skipped`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.catalog import spec
from campaign_pipeline.channels import all_channels, names
from campaign_pipeline.channels.delivery import REFUSED
from campaign_pipeline.channels.email import driver_aws_settings
from campaign_pipeline.channels.pace import Pace
from campaign_pipeline.config import Wave
from campaign_pipeline.errors import ConfigError, PipelineError, PreflightError, first_line
from campaign_pipeline.frames import sql_literal, sql_value
from campaign_pipeline.notify.checks import CHECKS
from campaign_pipeline.notify.lease import Lease, claim
from campaign_pipeline.notify.preflight import preflight
from campaign_pipeline.notify.send import OUTCOME_SCHEMA, Senders, chunk_sender
from campaign_pipeline.ops import alerts
from campaign_pipeline.quality.expectations import check_tables
from campaign_pipeline.stage_context import StageContext, StageReport
from campaign_pipeline.times import aware, now_utc, ts
from campaign_pipeline.warehouse import Warehouse
from campaign_pipeline.waves.membership import ordered_waves

FINAL = ("completed", "completed_with_failures")
CLAIM_TRIES = 10  # a claim that meets a concurrent commit (another wave's renewal) is tried again


def pace_of(env) -> Pace:
    n = env.notify
    return Pace(
        max_in_flight=n.max_in_flight,
        rate_per_second=n.rate_per_second,
        max_attempts=n.max_attempts,
        timeout_seconds=n.timeout_seconds,
        backoff_seconds=n.backoff_seconds,
        backoff_max_seconds=n.backoff_max_seconds,
        retry_after_max_seconds=n.retry_after_max_seconds,
    )


def decide(
    wave: Wave, row, now: dt.datetime, wall: dt.datetime, retry_failed: bool, wave_attempts: int
) -> tuple[bool, str, bool]:
    """(take it?, why, does taking it spend an attempt?) for one configured wave and its `waves`
    row as read just now. `now` is the decision time (is the wave due?), `wall` the real clock
    (leases)."""
    if row is None:
        return False, "not planned yet: run plan_waves first", False
    if wave.notify_at > now:
        return False, f"not due until {wave.notify_at:%Y-%m-%d %H:%M %Z}", False
    status, attempts = row["status"], row["attempts"] or 0
    if status == "scheduled":
        planning = aware(row["planning_until"])
        if planning is not None and planning > wall:
            return (
                False,
                (
                    f"being re-planned by plan_waves run {row['planning_run']} (until {planning:%H:%M:%S} UTC): "
                    "the next notify run sends it"
                ),
                False,
            )
        return True, "due", True
    if status in FINAL:
        if retry_failed and (row["failed"] or 0):
            return True, "re-sending its failed messages (--retry-failed)", True
        return False, f"already {status}", False
    lease = aware(row["lease_until"])
    if status == "sending" and lease is not None and lease > wall:
        return (
            False,
            (
                f"held by notify run {row['run_id']} until {lease:%H:%M:%S} UTC (it renews its lease as it sends; "
                "another run takes the wave over only after that lease ran out, notify.lease_seconds)"
            ),
            False,
        )
    deferred = aware(row["deferred_until"])
    if status == "sending" and deferred is not None:
        if deferred > wall:
            return False, f"paused until {deferred:%H:%M:%S} UTC: the gateway asked notify to wait (Retry-After)", False
        return True, f"resuming after the gateway's pause (run {row['run_id']} paused it)", False
    if retry_failed:
        return True, f"{status} after {attempts} attempts: taken again (--retry-failed)", True
    if attempts >= wave_attempts:
        return (
            False,
            (
                f"{status} after {attempts} attempts (notify.wave_attempts {wave_attempts}): needs an operator — "
                f"check notification_log, then run notify --retry-failed --wave {wave.wave_id}"
            ),
            False,
        )
    return True, f"{status} after {attempts} attempt(s): taken again", True


def senders_for(
    ctx: StageContext, ready: dict, tasks: int, send_until: dt.datetime | None = None, after: float | None = None
) -> Senders:
    env = ctx.env
    return Senders(
        pace=pace_of(env).share(tasks),
        sms_url=env.sms_gateway_url,
        sms_token=ready.get("sms_token"),
        queue_url=env.email_queue_url,
        region=env.aws_region,
        campaign_name=ctx.campaign.name,
        aws=driver_aws_settings() if env.email_queue_url else (),
        run_id=ctx.run_id,
        send_until=send_until.timestamp() if send_until is not None else None,
        email_groups=env.notify.email_groups,
        facts=tuple(ready.items()),
        after=after,
    )


def outstanding(messages: DataFrame, log: DataFrame, retry_failed: bool) -> DataFrame:
    """The wave's messages without a recorded outcome (with `retry_failed`, failed ones too)."""
    final = ["sent", "skipped"] if retry_failed else ["sent", "skipped", "failed"]
    done = log.where(F.col("status").isin(final)).select("campaign_id", "message_id")
    return messages.join(done, ["campaign_id", "message_id"], "left_anti")


def merge_outcomes(ctx: StageContext, outcomes: DataFrame) -> None:
    """Record outcomes: new messages inserted, a `failed` one replaced by its new outcome, nothing
    else touched. Safe to repeat, so a commit that meets a concurrent one is retried."""
    ctx.warehouse.merge_retrying(
        "notification_log", outcomes, ctx.campaign_id, "t.status = 'failed'", "recording outcomes in notification_log"
    )


COMMIT_DELAY_SECONDS = 1.0  # at most this long a chunk's commit lets the next chunk's job start first


def commit_outcomes(ctx: StageContext, outcomes: pa.Table) -> None:
    """Record a chunk's outcomes (an Arrow table of `OUTCOME_SCHEMA` rows, none `deferred`): the
    rows go to the JVM as Arrow batches, not as a SQL text of literals or pickled rows."""
    t = spec("notification_log")
    n = outcomes.num_rows
    logged_at = pa.array([dt.datetime.now(dt.UTC)] * n, pa.timestamp("us", tz="UTC"))
    outcomes = outcomes.append_column("logged_at", logged_at).append_column(
        "run_id", pa.array([ctx.run_id] * n, pa.string())
    )
    merge_outcomes(ctx, ctx.spark.createDataFrame(outcomes.select(t.columns), schema=t.schema))


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


def no_recipient():
    return F.coalesce(F.trim(F.col("recipient")), F.lit("")) == ""


def wave_messages_of(wh: Warehouse, cid: str, wave_id: str) -> DataFrame:
    return wh.read("wave_messages", cid).where(F.col("wave_id") == wave_id)


def record_skipped(ctx: StageContext, todo: DataFrame, n_skipped: int, report: StageReport) -> None:
    """The `n_skipped` messages of `todo` without a recipient: `skipped`, recorded without a driver
    round trip."""
    if not n_skipped:
        return
    skipped = todo.where(no_recipient())
    logged_at = dt.datetime.now(dt.UTC)
    values = {"status": F.lit("skipped"), "attempts": F.lit(0), "last_error": F.lit("no recipient"),
              "logged_at": F.lit(logged_at), "run_id": F.lit(ctx.run_id)}  # fmt: skip
    outcomes = skipped.select(*[
        values.get(f.name, F.col(f.name) if f.name in skipped.columns else F.lit(None)).cast(f.dataType).alias(f.name)
        for f in spec("notification_log").schema.fields
    ])  # fmt: skip
    merge_outcomes(ctx, outcomes)
    report.counts["skipped"] = report.counts.get("skipped", 0) + n_skipped


def send_wave(
    ctx: StageContext, wave: Wave, lease: Lease, ready: dict, retry_failed: bool, report: StageReport,
    found: Found,
) -> Callable[[Callable[[str], None]], None]:  # fmt: skip
    """Send the wave's outstanding messages (`found` by `messages_to_send` before the wave was
    taken) while this run holds `lease`. Returns the wave's end, for the caller to run next (it
    may run it beside other work): record the wave's totals and status, or, with messages left
    (the gateway asked for a pause, or the lease was lost), let it go. Every outcome is committed
    before this returns."""
    wh, cid, sc = ctx.warehouse, ctx.campaign_id, ctx.spark.sparkContext
    group = f"notify-send {ctx.run_id} {wave.wave_id}"
    lease.keep(lambda why: sc.cancelJobGroup(group))  # a lost lease stops the sending tasks at once
    sent_now, paused_until, passes = 0, None, 0
    try:
        first, layout, first_n, blank = found.cut, found.layout, found.to_send, found.counts.get("none", 0)
        with ctx.step("find messages"):
            if lease.refresh(chunk_need(ctx, chunk_size_of(ctx.env.notify))):
                record_skipped(ctx, first, blank, report)
        # Passes: messages a task could not start before its lease time ran out go in the next pass.
        last_chunk = LastChunk()  # a pass continues the pace of the one before
        idle = 0  # passes in a row that recorded nothing (tasks that started too late to send)
        sent_pass = 0
        while lease.held:
            passes += 1
            if passes == 1:
                todo, n = first.where(~no_recipient()), first_n
            else:
                with ctx.step("find messages"):
                    todo = wave_outstanding(wh, cid, wave.wave_id, False).where(~no_recipient())
                    todo, layout = in_chunks(ctx, todo, n - sent_pass, f"{wave.wave_id}: messages left to send")
                    n = todo.count()
            if not n:
                break
            sent_pass, asked = send_chunks(ctx, wave, lease, ready, todo, n, layout, group, report, last_chunk)
            sent_now += sent_pass
            if sent_pass == n and asked is None:
                break  # every message of the pass has its outcome (this run holds the wave: none added)
            if asked is not None and asked > ctx.env.notify.retry_after_max_seconds:
                paused_until = now_utc() + dt.timedelta(seconds=asked)  # longer than we wait inside a run
                break
            if asked is not None:  # the gateway asked for a short wait the tasks could not sit out
                time.sleep(asked)  # (the lease is renewed meanwhile by its keeper)
                continue
            idle = 0 if sent_pass else idle + 1
            if idle == 3:
                break
    except BaseException:
        lease.close()
        raise
    # The keeper goes on renewing until the end commits (`finish`, `release` close it): the end
    # may wait for the campaign's later waves to be looked at, and must not outlive its lease.
    return lambda say: end_wave(ctx, wave, lease, say, sent_now, paused_until)


def end_wave(
    ctx: StageContext,
    wave: Wave,
    lease: Lease,
    say: Callable[[str], None],
    sent_now: int,
    paused_until: dt.datetime | None,
) -> None:
    """After a wave's sending: its totals and status recorded in `waves` (the lease let go with
    them), a Slack summary; or, with messages left, the wave let go for the next run. `say` takes
    its summary lines."""
    wh, cid = ctx.warehouse, ctx.campaign_id
    with ctx.step("wave totals"):
        counts = wave_outcomes(wh, cid, wave.wave_id)
    status = wave_status_after(counts)
    if lease.lost:
        lease.close()
        say(f"{wave.wave_id}: stopped sending after {sent_now:,} messages: {lease.lost}; its holder sends the rest")
        return
    if status == "sending":
        lease.release(paused_until)
        left = sum(v for k, v in counts.items() if k.endswith(":pending"))
        why = (
            f"the gateway asked to wait: paused until {paused_until:%H:%M:%S} UTC, the next run resumes it"
            if paused_until is not None
            else "the next run sends them"
        )
        say(f"{wave.wave_id}: this run sent {sent_now:,}; {left:,} messages left: {why}")
        return

    def count(status_name):
        return sum(v for k, v in counts.items() if k.endswith(f":{status_name}"))

    with ctx.step("wave totals"):
        finished = lease.finish(
            {"status": sql_literal(status), "total": str(sum(counts.values())), "sent": str(count("sent")),
             "failed": str(count("failed")), "skipped": str(count("skipped")),
             "counts": sql_value(dict(sorted(counts.items())), T.MapType(T.StringType(), T.LongType())),
             "finished_at": ts(dt.datetime.now(dt.UTC)), "deferred_until": "NULL"}
        )  # fmt: skip
    if not finished:
        say(f"{wave.wave_id}: sent {sent_now:,}, but another run took the wave before its end")
        return
    alerts.post(ctx.env, alerts.wave_summary(cid, wave.wave_id, status, counts))
    say(
        f"{wave.wave_id}: {status} · this run sent {sent_now:,}"
        f" · wave totals: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    )


def chunk_layout(ctx: StageContext, n: int) -> tuple[int, int]:
    """(chunks, tasks per chunk) for sending `n` messages: chunks of at most `chunk_size_of`, each
    split between as many tasks as its share of the limits allows (`Pace.tasks_for`) on the task
    slots but one: that one stays free for the Delta commit of the previous chunk, which runs
    meanwhile."""
    chunk_size = chunk_size_of(ctx.env.notify)
    slots = max(1, ctx.spark.sparkContext.defaultParallelism - 1)
    return max(1, math.ceil(n / chunk_size)), pace_of(ctx.env).tasks_for(max(1, min(n, chunk_size)), slots)


def in_chunks(ctx: StageContext, todo: DataFrame, expected: int, name: str) -> tuple[DataFrame, tuple[int, int]]:
    """`todo` (about `expected` messages to send) cut as the chunks will send it: one partition per
    sending task (a hash bucket of `message_id`), so that a chunk's job reads its own messages and
    nothing else. Returns it and its `chunk_layout`."""
    chunks, tasks = layout = chunk_layout(ctx, expected)
    return ctx.cut(todo.repartition(chunks * tasks, "message_id"), name), layout


def send_chunks(
    ctx: StageContext, wave: Wave, lease: Lease, ready: dict, todo: DataFrame, n: int, layout: tuple[int, int],
    group: str, report: StageReport, last_chunk: LastChunk,
) -> tuple[int, dt.datetime | None]:  # fmt: skip
    """One pass over `todo` (`n` messages cut by `in_chunks` for `layout`) in chunks; returns
    (messages with an outcome, the longest wait the gateway asked for that a task did not sit
    out, if any). A wait above the ceiling ends the pass."""
    sc = ctx.spark.sparkContext
    _, tasks = layout
    # A chunk is a job over its own partitions of `todo` (the RDD's jobs can be given the
    # partitions to run; a DataFrame's job would read every chunk's messages to keep one): its
    # tasks start sending within a few milliseconds of the job. Timestamps go as microseconds
    # (a Row would carry them in the worker's local time).
    stamps = tuple(f.name for f in todo.schema.fields if isinstance(f.dataType, T.TimestampType))
    rows = todo.select(*[F.unix_micros(c).alias(c) if c in stamps else F.col(c) for c in todo.columns]).rdd
    parts = rows.getNumPartitions()
    chunks = max(1, math.ceil(parts / tasks))
    done, longest = 0, None
    # Chunk i + 1 is sent while chunk i's outcomes are committed (one committer thread): at most two
    # chunks are ever without committed outcomes, and sending never waits for Delta.
    # A commit lets the next chunk's job start first, for up to COMMIT_DELAY_SECONDS: its Arrow
    # transfer and MERGE planning would compete with that job for the driver and the cores, and
    # time before the next chunk's first request is sending time lost. Once no chunk follows (the
    # pass ended, broke off or failed), it goes at once.
    no_chunk_follows = threading.Event()

    def commit_soon(outcomes: pa.Table) -> None:
        no_chunk_follows.wait(COMMIT_DELAY_SECONDS)
        commit_outcomes(ctx, outcomes)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="notify-commit") as committer:
        pending: Future | None = None
        need = chunk_need(ctx, min(n, math.ceil(n / chunks * 1.1)))  # hash buckets: a chunk may be a little larger
        try:
            for i in range(chunks):
                if not lease.refresh(need):
                    break
                senders = senders_for(ctx, ready, tasks, lease.send_until(), after=last_chunk.seconds_ago())
                ctx.describe(f"{wave.wave_id}: send chunk {i + 1} of {chunks}")
                with ctx.step("send"):
                    sc.setJobGroup(group, f"notify: {wave.wave_id} chunk {i + 1} of {chunks}", interruptOnCancel=True)
                    try:
                        mine = list(range(i * tasks, min(parts, (i + 1) * tasks)))
                        got = sc.runJob(rows, chunk_sender(senders, stamps), mine)
                        last_chunk.ended()  # every start of the chunk was before this
                        result = pa.Table.from_pylist(got, schema=OUTCOME_SCHEMA)
                    except Exception:
                        if lease.lost:  # cancelled: another run holds the wave now
                            break
                        raise
                    finally:
                        ctx.describe(f"{wave.wave_id}: sent chunk {i + 1} of {chunks}")
                deferred = pc.equal(result["status"], "deferred")
                outcomes = result.filter(pc.invert(deferred))
                asked = [s for s in result.filter(deferred)["defer_seconds"].to_pylist() if s]
                errors = pc.drop_null(result["last_error"]).to_pylist()
                refused = next((e for e in errors if e.startswith(REFUSED)), None)
                with ctx.step("commit wait"):
                    if pending is not None:
                        pending.result()
                if i + 1 == chunks:
                    no_chunk_follows.set()
                pending = committer.submit(commit_soon, outcomes) if outcomes.num_rows else None
                for r in outcomes.group_by(["channel", "status"]).aggregate([([], "count_all")]).to_pylist():
                    key = f"{r['channel']}:{r['status']}"
                    report.counts[key] = report.counts.get(key, 0) + r["count_all"]
                done += outcomes.num_rows
                if refused:
                    no_chunk_follows.set()
                    if pending is not None:
                        pending.result()
                    raise GatewayRefused(refused.removeprefix(REFUSED))
                if asked:
                    longest = max(longest or 0.0, *asked)
                    if longest > ctx.env.notify.retry_after_max_seconds:  # a pause: no more chunks this run
                        break
        finally:
            no_chunk_follows.set()
        with ctx.step("commit wait"):
            if pending is not None:
                pending.result()
    return done, longest


class LastChunk:
    """When the run's last chunk came back (the driver's monotonic clock): the next chunk's tasks
    are told how long ago that was, so their pace continues from it (`Spacing.after`)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def ended(self) -> None:
        self.at = time.monotonic()

    def seconds_ago(self) -> float | None:
        return None if self.at is None else time.monotonic() - self.at


def chunk_size_of(settings) -> int:
    """`notify.chunk_size`, or fewer: about as many messages as the tasks can start within a fresh
    lease's sending time (two thirds of `notify.lease_seconds`, less what `chunk_need` keeps for
    Spark), so that at a low rate a chunk neither waits on a renewal nor leaves its tail to the next
    pass; never fewer than one second's worth at the rate (a very short lease still sends)."""
    window = settings.lease_seconds * 2 / 3 - CHUNK_SPARK_SECONDS - 1.0
    fits = math.floor(max(0.0, window) * settings.rate_per_second / CHUNK_RATE_ALLOWANCE)  # chunk_need inverted
    return max(1, min(settings.chunk_size, max(fits, math.ceil(settings.rate_per_second))))


CHUNK_SPARK_SECONDS = 5.0  # what a chunk's Spark job may take before its first request
CHUNK_RATE_ALLOWANCE = 1.5  # a chunk's starts may take half again their time at the rate


def chunk_need(ctx: StageContext, messages: int) -> float:
    """Seconds of lease a chunk needs to start its requests in: its time at the rate, half again,
    and 5 s of Spark."""
    return CHUNK_RATE_ALLOWANCE * messages / pace_of(ctx.env).rate_per_second + CHUNK_SPARK_SECONDS


def warm_sending_worker(ctx: StageContext) -> None:
    """Start a Python worker with the sending code imported, on a thread of its own, while the
    driver finds the wave's messages: the first chunk's task then reuses it instead of starting one."""

    def warm(rows):
        import aiohttp  # noqa: F401

        import campaign_pipeline.notify.send  # noqa: F401
        from campaign_pipeline.python_workers import keep_zip_directories

        keep_zip_directories()  # the chunks' tasks start faster

        yield from rows

    def run():
        with contextlib.suppress(Exception):  # only a head start: the first chunk starts a worker if this fails
            sc = ctx.spark.sparkContext
            sc.setJobDescription("notify: start a sending worker")
            # an RDD job, as the chunks are: Spark keeps SQL's Python workers apart from the RDDs'
            sc.runJob(sc.parallelize([0], 1), warm, [0])

    threading.Thread(target=run, name="notify-warm-worker", daemon=True).start()


class GatewayRefused(PreflightError):
    """The SMS gateway refused the token (401/403), or SQS our AWS credentials, once sending had begun."""


class CredentialsRefused(PreflightError):
    """A wave given back because its credentials were refused: the campaign's later waves wait too."""


def campaign_waves(wh: Warehouse, cid: str) -> dict:
    """The campaign's `waves` rows as they are now, by wave id (one read: a campaign has few waves)."""
    return {r["wave_id"]: r for r in wh.read("waves", cid).collect()}


def wave_outstanding(wh: Warehouse, cid: str, wave_id: str, retry_failed: bool) -> DataFrame:
    """The wave's messages still to send, as the tables are now (`outstanding`)."""
    return outstanding(wave_messages_of(wh, cid, wave_id), wh.read("notification_log", cid), retry_failed)


def messages_left(wh: Warehouse, cid: str, wave_id: str, retry_failed: bool) -> dict[str, int]:
    """channel → messages of the wave still to send ("none": without a recipient, to be skipped)."""
    return channel_counts(wave_outstanding(wh, cid, wave_id, retry_failed))


@dataclass
class Found:
    """A wave's outstanding messages as `messages_to_send` found them."""

    cut: DataFrame  # cut in chunks (`in_chunks`)
    layout: tuple[int, int]  # (chunks, tasks per chunk)
    counts: dict[str, int]  # per channel ("none": without a recipient)
    plan_version: int | None  # `wave_messages`' Delta version before they were read

    @property
    def to_send(self) -> int:
        return sum(k for c, k in self.counts.items() if c != "none")

    def channels(self) -> set[str]:
        return {c for c, k in self.counts.items() if k and c != "none"}


def expected_messages(row, retry_failed: bool) -> int:
    """About how many messages a wave has left to send, from its `waves` row: its planned total (or,
    re-sending the failed ones of a finished wave, how many failed)."""
    if row is None:
        return 0
    if retry_failed and row["status"] in (*FINAL, "failed") and row["failed"] is not None:
        return row["failed"]
    return row["total"] or 0


def messages_to_send(ctx: StageContext, wave_id: str, expected: int, retry_failed: bool) -> Found:
    """The wave's outstanding messages cut in chunks laid out for about `expected` of them (laid
    out again, from the cut, when what is left needs another layout), and their counts."""
    wh, cid = ctx.warehouse, ctx.campaign_id
    version = wh.version("wave_messages")  # before the read: the cut holds this version if it is still the latest
    todo = wave_outstanding(wh, cid, wave_id, retry_failed)
    name = f"{wave_id}: messages to send"
    cut, layout = in_chunks(ctx, todo, expected, name)
    found = Found(cut, layout, channel_counts(cut), version)
    if chunk_layout(ctx, found.to_send) != layout:  # sent in part already, or more than planned
        found.cut, found.layout = in_chunks(ctx, cut, found.to_send, name)
        ctx.drop(cut)
    return found


def channel_counts(todo: DataFrame) -> dict[str, int]:
    """channel → messages in `todo` ("none": without a recipient)."""
    return {
        r["channel"]: r["n"]
        for r in todo.groupBy(F.when(no_recipient(), "none").otherwise(F.col("channel")).alias("channel"))
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }


def other_sender(waves: dict, wave_id: str, run_id: str):
    """Another wave of the campaign (in `waves`, as read by `campaign_waves`) held by another run
    with a live lease, if any."""
    wall = now_utc()
    for row in waves.values():
        if row["status"] != "sending" or row["wave_id"] == wave_id:
            continue
        lease = aware(row["lease_until"])
        if row["run_id"] != run_id and lease is not None and lease > wall:
            return row
    return None


def take_and_send(
    ctx: StageContext,
    wave: Wave,
    retry_failed: bool,
    dry_run: bool,
    report: StageReport,
    before_taking: Callable[[], None] = lambda: None,
) -> tuple[bool, Callable[[Callable[[str], None]], None] | None]:
    """Decide on the wave as it is now, check it can be sent, win it, send it: (whether it was
    taken, the wave's end for the caller to run — `end_wave`, letting the wave go if it fails).
    `before_taking` runs once the wave is to be taken, before anything is checked or written."""
    wh, cid, settings = ctx.warehouse, ctx.campaign_id, ctx.env.notify
    for attempt in range(CLAIM_TRIES):  # a lost race is re-read: the next decision names the winner
        if attempt:  # commits to the campaign's waves (another wave's lease) conflicted: try again shortly
            time.sleep(random.uniform(0.1, 0.5 * attempt))
        with ctx.step("claim"):
            waves = campaign_waves(wh, cid)
            row = waves.get(wave.wave_id)
            go, why, spends = decide(wave, row, ctx.now, now_utc(), retry_failed, settings.wave_attempts)
            busy = other_sender(waves, wave.wave_id, ctx.run_id)
            if go and busy is not None:
                go, why = (
                    False,
                    (
                        f"not taken while notify run {busy['run_id']} sends {busy['wave_id']} of this campaign (until "
                        f"{aware(busy['lease_until']):%H:%M:%S} UTC at least): one run sends a campaign at a time, so its limits "
                        "hold"
                    ),
                )
            if not go:
                report.summary.append(f"{wave.wave_id}: {why}")
                return False, None
            before_taking()
            if dry_run:
                per_channel = messages_left(wh, cid, wave.wave_id, retry_failed)
                blank = per_channel.pop("none", 0)
                report.summary.append(
                    f"{wave.wave_id}: would send "
                    + " and ".join(f"{per_channel.get(c.name, 0):,} {c.many}" for c in all_channels())
                    + (f" and skip {blank:,} without a recipient" if blank else "")
                    + " (--dry-run: nothing sent, nothing written)"
                )  # fmt: skip
                return True, None
        # The messages to send are cut before the claim, which is conditional on the wave's row as
        # read above: a run that wins knows no other run took the wave since (a run whose lease
        # had run out may still commit outcomes of requests it started before, as it may after a
        # cut made later: those go again under the same Idempotency-Key, their first outcome
        # stays). A plan_waves run may have held, re-planned and let go of the wave meanwhile,
        # leaving the row as it was: the cut is kept only if `wave_messages` has no commit since
        # its version read before the cut.
        warm_sending_worker(ctx)
        with ctx.step("find messages"):
            found = messages_to_send(ctx, wave.wave_id, expected_messages(row, retry_failed), retry_failed)
        with ctx.step("claim"):
            ready = preflight(ctx.env, wave.wave_id, found.channels())
            taken = claim(wh, cid, wave.wave_id, row, ctx.run_id, settings.lease_seconds, spends)
            if taken.lease is None:
                ctx.drop(found.cut)
                continue
            try:
                waves = campaign_waves(wh, cid)
                rival = other_sender(waves, wave.wave_id, ctx.run_id)
                if rival is None and wh.version("wave_messages") != found.plan_version:
                    # Written since the cut read it: a plan_waves run may have held, re-planned and
                    # let go of the wave between this run's read of its row and the claim (the row
                    # is then as it was). No planner can hold it now: read the messages again.
                    with ctx.step("find messages"):
                        ctx.drop(found.cut)
                        found = messages_to_send(ctx, wave.wave_id, found.to_send, retry_failed)
                    ready = preflight(ctx.env, wave.wave_id, found.channels())
            except BaseException:
                taken.lease.undo(row, has_outcomes=False)  # the claim is given back, not left to run out
                raise
        if rival is not None:
            # Another run claimed another wave of the campaign while this run claimed this one.
            # Whichever of two such claims committed second sees the other once its own claim is
            # in (this read follows it), so giving back on sight leaves at most one of them
            # holding a wave of the campaign (both give back when each sees the other; the
            # retry after a random wait then lets one take it, or finds the other sending).
            taken.lease.undo(row, has_outcomes=False)
            ctx.drop(found.cut)
            report.summary.append(
                f"{wave.wave_id}: given back: notify run {rival['run_id']} claimed {rival['wave_id']} of this "
                "campaign at the same moment (one run sends a campaign at a time)"
            )
            continue
        report.summary.append(f"{wave.wave_id}: taken ({why})")
        try:
            end = send_wave(ctx, wave, taken.lease, ready, retry_failed, report, found)
        except GatewayRefused as exc:  # nothing can go out with this token: no attempt spent
            logged = not wh.read("notification_log", cid).where(F.col("wave_id") == wave.wave_id).isEmpty()
            taken.lease.undo(row, has_outcomes=logged)
            raise CredentialsRefused(
                f"notify: {wave.wave_id}: our credentials were refused ({exc}); the wave is given back as it was, no "
                f"attempt spent: check the SMS token ({ctx.env.secrets.sms_token_env} / secrets.sms_token_secret) or "
                "the job's AWS credentials for the queue"
            ) from None
        except BaseException:
            let_go(taken.lease)
            raise

        def end_or_let_go(say: Callable[[str], None], lease: Lease = taken.lease, end=end) -> None:
            try:
                end(say)
            except BaseException:
                let_go(lease)
                raise

        return True, end_or_let_go
    report.summary.append(
        f"{wave.wave_id}: not taken: concurrent commits to the campaign's waves beat this run's claim {CLAIM_TRIES} "
        "times in a row; the next run takes it"
    )
    return False, None


def let_go(lease: Lease) -> None:
    """Give a wave back at once after a failure (the next run takes it without waiting out the
    lease); taking it again spends an attempt, as a failed attempt should."""
    try:
        lease.release()
    except Exception:  # noqa: BLE001 - the lease then simply runs out
        pass


def notify(ctx: StageContext) -> StageReport:
    """Send the messages of the campaign's due waves (docs/rules/notify.md)."""
    campaign = ctx.campaign
    options = ctx.options
    only = options.get("wave")
    retry_failed, dry_run = bool(options.get("retry_failed")), bool(options.get("dry_run"))
    if only and only not in {w.wave_id for w in campaign.waves}:
        raise ConfigError(
            f"notify --wave {only}: campaign {ctx.campaign_id} has no such wave (waves in the campaign config)"
        )
    report = StageReport(counts={})
    taken = 0
    failed: list[tuple[str, Exception]] = []
    # The end of the wave just sent (its totals: a Spark job and a `waves` commit) waits until the
    # campaign's later waves have been looked at, and then runs beside the expectations on
    # notification_log (every outcome was committed before it): one more wave is taken only after
    # it. It runs on this thread, so an interrupt meets it as it did when it came first.
    ending: tuple[str, Callable[[Callable[[str], None]], None], int] | None = None  # wave, end, where its lines go

    def settle() -> None:
        nonlocal ending
        if ending is None:
            return
        wave_id, end, at = ending
        ending = None
        lines: list[str] = []
        try:
            end(lines.append)
        except Exception as exc:  # noqa: BLE001 - the wave's failure, as one in its sending would be
            failed.append((wave_id, exc))
            lines.append(f"{wave_id}: FAILED: {first_line(exc)}")
        finally:
            report.summary[at:at] = lines

    def expectations() -> str:
        with ctx.step("expectations"):
            return check_tables(ctx, CHECKS)[0]

    checked = None
    try:
        for wave in ordered_waves(campaign):
            if only and wave.wave_id != only:
                continue
            try:
                took, end = take_and_send(ctx, wave, retry_failed, dry_run, report, settle)
                taken += took
                if end is not None:
                    ending = (wave.wave_id, end, len(report.summary))
            except Exception as exc:  # one wave's failure does not keep the campaign's later waves from going out
                failed.append((wave.wave_id, exc))
                report.summary.append(f"{wave.wave_id}: FAILED: {first_line(exc)}")
                if isinstance(exc, CredentialsRefused):  # no later wave can go out with them either
                    break
        if taken and not dry_run and not failed:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="notify-expectations") as checker:
                checking = checker.submit(expectations)
                settle()
                wait([checking])
            if not failed:  # (a wave whose end failed makes them moot, as they were when it came first)
                checked = checking.result()
    finally:
        settle()
    if failed:
        order = {w.wave_id: i for i, w in enumerate(ordered_waves(campaign))}
        failed.sort(key=lambda f: order.get(f[0], len(order)))  # a wave's end fails after a later wave's sending
        wave_id, exc = failed[0]
        if len(failed) == 1:
            raise exc
        kind = PreflightError if all(isinstance(e, PreflightError) for _, e in failed) else PipelineError
        raise kind(
            f"notify: {len(failed)} waves failed: " + "; ".join(f"{w}: {first_line(e)}" for w, e in failed)
        ) from exc
    report.counts["waves_sent"] = 0 if dry_run else taken
    for key in (f"{c}:{status}" for c in names() for status in ("sent", "failed")):
        report.counts.setdefault(key, 0)
    if not taken:
        report.summary.insert(0, "no wave to send")
    elif not dry_run:
        report.summary.append(f"expectations on notification_log: {checked}")
    return report


def due_campaigns(wh: Warehouse, now: dt.datetime, wave_attempts: int | None = None) -> list[str]:
    """Campaigns with a wave still to send whose notify time has passed (for `notify --due`); a
    `failed` wave that used up `wave_attempts` waits for an operator and makes no campaign due."""
    if not wh.exists("waves"):
        return []
    waiting = F.col("status").isin("scheduled", "sending")
    retryable = F.col("status") == "failed"
    if wave_attempts is not None:
        retryable = retryable & (F.coalesce(F.col("attempts"), F.lit(0)) < wave_attempts)
    rows = (
        wh.read("waves")
        .where((waiting | retryable) & (F.col("notify_at") <= F.lit(now)))
        .select("campaign_id")
        .distinct()
        .orderBy("campaign_id")
        .collect()
    )
    return [r[0] for r in rows]
