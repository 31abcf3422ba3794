"""notify against real parts on 127.0.0.1: the gateway simulator (HTTP) and SQS in a moto server.

One planned wave (SMS and email) in a Delta warehouse; the stage sends it in chunks, records every
outcome, retries what the gateway asks to retry, never sends a recorded message again, and a run
killed with SIGKILL mid-wave is finished by the next run with at most two chunks sent twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SlackReceiver, moto_server, notify_env, planned_wave
from pyspark.sql import functions as F

from campaign_pipeline import cli
from campaign_pipeline.config import load_campaign
from campaign_pipeline.demo.services import GatewaySimulator
from campaign_pipeline.notify.stage import chunk_size_of, due_campaigns
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"
CID = "spring-tour-2027"
NOTIFY_AT = dt.datetime(2027, 3, 1, 15, tzinfo=dt.UTC)
AFTER = NOTIFY_AT + dt.timedelta(minutes=5)
TOKEN = "test-sms-token"


def plan_wave(wh: Warehouse, sms: int, email: int, no_recipient: int = 0) -> list[str]:
    """A planned wave-1: `sms` SMS, `email` emails and `no_recipient` SMS with a blank number."""
    return planned_wave(wh, CID, "wave-1", sms, email, no_recipient, NOTIFY_AT, message_id=lambda i: f"msg-{i:05d}")


@pytest.fixture(scope="module")
def sqs():
    import boto3

    server, endpoint = moto_server()
    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "SMS_API_TOKEN": TOKEN}.items():  # fmt: skip
        mp.setenv(k, v)
    yield boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    mp.undo()
    server.stop()


@pytest.fixture
def slack_hook(monkeypatch):
    receiver = SlackReceiver()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)
    yield receiver
    receiver.server.shutdown()


def queued(sqs, url: str, patience: float = 40.0) -> list[dict]:
    """Every email body on the queue, each delivery counted, taken off it (a FIFO group's next
    message is handed out only once the one before is deleted). Until the queue says it holds
    nothing, visible or not: a message handed out but not deleted comes back after its visibility
    timeout (30 s), and is counted then."""
    bodies: list[dict] = []
    deadline = time.monotonic() + patience
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if got:
            bodies += [json.loads(m["Body"]) for m in got]
            sqs.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
            )
            continue
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        held = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        if not any(int(held.get(n, 0)) for n in names) or time.monotonic() > deadline:
            return bodies
        time.sleep(0.5)


def log_of(wh: Warehouse) -> dict[str, tuple]:
    return {
        r["message_id"]: (r["status"], r["attempts"], r["channel"]) for r in wh.read("notification_log", CID).collect()
    }


def wave_row(wh: Warehouse):
    return wh.read("waves", CID).where(F.col("wave_id") == "wave-1").first()


def test_a_due_wave_is_sent_once_with_retries_and_a_rerun_sends_nothing(spark, test_env, tmp_path, sqs, slack_hook):
    queue_url = sqs.create_queue(QueueName="emails-std")["QueueUrl"]
    wh = Warehouse(spark, str(tmp_path / "wh"))
    ids = plan_wave(wh, sms=230, email=25, no_recipient=1)
    campaign = load_campaign(CAMPAIGN)
    with GatewaySimulator(latency=0.01, token=TOKEN) as gw:
        gw.script("msg-00000", [(429, 0.2, 0)])  # then accepted
        gw.script("msg-00001", [(500, None, 0)] * 3)  # failed after 3 attempts
        gw.script("msg-00002", [(400, None, 0)])  # permanent: one attempt
        env = notify_env(test_env, tmp_path / "wh", gw, queue_url)

        # `notify --due` finds the campaign once its wave is due, and not after the wave is done
        assert due_campaigns(wh, NOTIFY_AT - dt.timedelta(seconds=1)) == [] and due_campaigns(wh, AFTER) == [CID]

        # not due yet, then a dry run: nothing sent, nothing written
        early = run_pipeline(spark, campaign, env, stages=["notify"], now=NOTIFY_AT - dt.timedelta(hours=1),
                             out=io.StringIO())  # fmt: skip
        assert "wave-1: not due until 2027-03-01 15:00 UTC" in early.rows[0][1].summary
        # the dry run through the command line, with --json (in this process, on the test session)
        env_path = tmp_path / "env-notify.yaml"
        env_path.write_text(env.model_dump_json())  # YAML is a superset of JSON
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["notify", "--campaign", str(CAMPAIGN), "--now", AFTER.isoformat(), "--dry-run",
                             "--json", "--env", str(env_path)])  # fmt: skip
        assert code == 0, err.getvalue()
        assert "would send 230 SMS and 25 emails and skip 1 without a recipient" in err.getvalue()
        dry = json.loads(out.getvalue())
        assert dry["dry_run"] is True and [s["stage"] for s in dry["stages"]] == ["notify"]
        assert dry["stages"][0]["counts"]["waves_sent"] == 0
        assert any("would send 230 SMS" in line for line in dry["stages"][0]["summary"])
        assert not gw.seen and not log_of(wh)

        report = run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=io.StringIO()).rows[0][1]
        log = log_of(wh)
        assert sorted(log) == sorted(ids)
        assert log["msg-00000"][:2] == ("sent", 2) and log["msg-00001"][:2] == ("failed", 3)
        assert log["msg-00002"][:2] == ("failed", 1) and log["msg-00255"][0] == "skipped"
        assert gw.seen["msg-00000"] == 2 and gw.seen["msg-00001"] == 3 and gw.seen["msg-00002"] == 1
        assert all(gw.seen[m] == 1 for m in ids[3:230]) and gw.max_concurrent <= 8
        assert (report.counts["sms:sent"], report.counts["sms:failed"], report.counts["email:sent"]) == (228, 2, 25), (
            report.counts,
            [r["last_error"] for r in wh.read("notification_log", CID).where("channel = 'email'").limit(2).collect()],
        )
        bodies = queued(sqs, queue_url)
        assert sorted(b["message_id"] for b in bodies) == ids[230:255]
        assert {"email", "code", "link", "locale", "campaign_name", "wave_date"} <= set(bodies[0])
        row = wave_row(wh)
        assert (row["status"], row["attempts"], row["sent"], row["failed"], row["skipped"]) == (
            "completed_with_failures", 1, 253, 2, 1)  # fmt: skip
        assert row["counts"] == {"sms:sent": 228, "sms:failed": 2, "sms:skipped": 1, "email:sent": 25}
        assert "+1212" not in str(row["counts"]) and all(
            "+1212" not in (r["last_error"] or "") for r in wh.read("notification_log", CID).collect()
        )

        # downstream readers follow notification_log through its change data feed
        feed = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0)
                .load(wh.path("notification_log")).where(F.col("_change_type") == "insert"))  # fmt: skip
        assert sorted(r["message_id"] for r in feed.select("message_id").collect()) == sorted(ids)

        # Slack got the wave's summary: counts only, no phone number, email or code
        assert slack_hook.texts == [
            f":incoming_envelope: campaign {CID} · wave-1 completed_with_failures: email:sent 25, sms:failed 2, "
            "sms:sent 228, sms:skipped 1"
        ]

        # a re-run sends nothing; --retry-failed re-sends the two failed messages, now accepted
        seen = dict(gw.seen)
        again = run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=io.StringIO()).rows[0][1]
        assert dict(gw.seen) == seen and "wave-1: already completed_with_failures" in again.summary
        assert due_campaigns(wh, AFTER) == []
        run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, options={"retry_failed": True},
                     out=io.StringIO())  # fmt: skip
        assert gw.seen["msg-00001"] == 4 and gw.seen["msg-00002"] == 2 and gw.seen["msg-00003"] == 1
        assert wave_row(wh)["status"] == "completed" and log_of(wh)["msg-00001"][0] == "sent"
        assert queued(sqs, queue_url) == []

        # any stage that fails sends an alert: campaign, stage, run id, error class and first line
        with pytest.raises(Exception, match="has no such wave"):
            run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, options={"wave": "wave-9"},
                         out=io.StringIO())  # fmt: skip
        alert = slack_hook.texts[-1]
        assert alert.startswith(f":rotating_light: campaign {CID} · stage notify failed (run {CID}-")
        assert "ConfigError: notify --wave wave-9: campaign" in alert


def test_a_notify_run_killed_mid_wave_is_finished_by_the_next_with_at_most_the_chunks_in_flight_sent_twice(
    spark, test_env, tmp_path, sqs
):
    """Killed while SMS and emails are out (the emails on a FIFO queue, as on EMR): the next run
    re-sends at most the two chunks in flight, every SMS is delivered once by its key, and no email
    body with the same message id is received twice."""
    queue_url = sqs.create_queue(QueueName="emails-kill.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    wh = Warehouse(spark, str(tmp_path / "wh"))
    ids = plan_wave(wh, sms=1000, email=350)
    chunk = 150
    with GatewaySimulator(latency=0.02, token=TOKEN) as gw:
        # The run to kill sends at 50/s: its 1,350 messages take 27 s and more, so the kill lands
        # while chunks are out even when this loaded worker looks late. Its lease is short, so that
        # the takeover need not wait long for it to pass, but not shorter than 15 s: on a loaded
        # machine a 6 s lease ran out between two Delta commits and the run stopped on its own.
        env = notify_env(test_env, tmp_path / "wh", gw, queue_url, chunk_size=chunk, rate_per_second=50, max_in_flight=16,
                         lease_seconds=15)  # fmt: skip
        env_path = tmp_path / "env-notify.yaml"
        env_path.write_text(json.dumps(json.loads(env.model_dump_json())))  # YAML is a superset of JSON
        proc = subprocess.Popen(
            [sys.executable, "-m", "campaign_pipeline.cli", "notify", "--campaign", str(CAMPAIGN), "--env",
             str(env_path), "--now", AFTER.isoformat()],
            env=dict(os.environ, CAMPAIGN_PIPELINE_JARS_DIR=str(ROOT / "jars"), CAMPAIGN_PIPELINE_DRIVER_MEMORY="1g"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300

        def queued_now() -> int:
            attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
            return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

        # Watched through the gateway's own counter only (a call to the queue from this loaded
        # process can take long enough for the run to finish meanwhile): a chunk holds SMS and
        # emails alike, sent side by side, so 400 SMS accepted means emails are on the queue too.
        while sum(gw.accepted.values()) < 400 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, (proc.stdout.read().decode()[-3000:], proc.stderr.read().decode()[-2000:])
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert queued_now() > 0  # killed with emails out as well as SMS
        assert wave_row(wh)["status"] == "sending"
        # The killed driver's Python workers may still finish requests they started, but start none
        # after the lease they were given; only then does another run take the wave.
        dead = wave_row(wh)
        time.sleep(max(0.0, (dead["lease_until"].astimezone(dt.UTC) - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
        before_takeover = dict(gw.seen)
        assert 400 <= sum(gw.accepted.values()) and len(before_takeover) < len(ids)
        sent_by_dead_run = gw.per_run[dead["run_id"]]
        # The next run holds the wave for the default lease, and its requests wait up to 10 s: the
        # gateway simulator answers from this loaded process.
        takeover = notify_env(test_env, tmp_path / "wh", gw, queue_url, chunk_size=chunk, rate_per_second=300,
                              max_in_flight=16, lease_seconds=120, timeout_seconds=10)  # fmt: skip
        run_pipeline(spark, load_campaign(CAMPAIGN), takeover, stages=["notify"], now=AFTER, out=io.StringIO())
        assert gw.per_run[dead["run_id"]] == sent_by_dead_run  # nothing from the dead run after its lease
    log = log_of(wh)
    not_sent = (
        wh.read("notification_log", CID)
        .where("status <> 'sent'")
        .select("message_id", "status", "attempts", "last_error")
    )
    assert sorted(log) == ids and {s for s, _, _ in log.values()} == {"sent"}, not_sent.limit(5).collect()
    twice = [m for m, n in gw.accepted.items() if n > 1]
    # only the chunks in flight at the kill (one sending, one committing) were sent again; the
    # killed run's short lease holds fewer messages a chunk than `chunk` (chunk_size_of)
    buckets = math.ceil(len(ids) / chunk_size_of(env.notify))
    sizes = sorted(
        r["count"] for r in wh.read("wave_messages", CID)
        .groupBy(F.pmod(F.xxhash64("message_id"), F.lit(buckets))).count().collect()
    )  # fmt: skip
    assert len(twice) <= sum(sizes[-2:]), (len(twice), sizes)
    assert set(twice) <= set(before_takeover)
    assert len(gw.delivered) == 1000  # the gateway honours the key: each SMS delivered once
    emails = [b["message_id"] for b in queued(sqs, queue_url)]
    assert len(emails) == len(set(emails))  # no body with the same message id received twice
    assert sorted(emails) == ids[1000:]  # and every email: re-sent ones dropped by their deduplication id
    row = wave_row(wh)
    assert (row["status"], row["attempts"], row["sent"], row["failed"]) == ("completed", 2, len(ids), 0)


def test_mail_worker_takes_every_email_off_the_queue(sqs):
    """The demo's stand-in for the email service drains the queue while emails arrive (moto's SQS
    slows down with every message a queue holds), counting each email's message id once."""
    from campaign_pipeline.demo.services import MailWorker

    queue = sqs.create_queue(QueueName="mail-worker")["QueueUrl"]
    endpoint = sqs.meta.endpoint_url
    with MailWorker(endpoint, queue, threads=2) as mail:
        for b in range(5):
            entries = [{"Id": str(i), "MessageBody": json.dumps({"message_id": f"m-{b}-{i}"})} for i in range(10)]
            assert len(sqs.send_message_batch(QueueUrl=queue, Entries=entries)["Successful"]) == 10
    assert mail.distinct == 50
    assert mail.received >= 50
    left = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert left["ApproximateNumberOfMessages"] == "0"


def test_the_demos_local_services_answer_from_a_process_of_their_own():
    """`make demo`'s gateway simulator, local SQS and mail worker run in their own process: a wave's
    SMS and emails sent there are accepted, every email is taken off the queue once by id, and the
    process stops when told."""
    from campaign_pipeline.channels.pace import Pace
    from campaign_pipeline.demo.services import LocalServices
    from campaign_pipeline.notify.send import Senders, send_messages

    def wave(n: int, start: int) -> list[dict]:
        return [
            {"campaign_id": CID, "wave_id": "wave-1", "market_id": "NYC-01", "message_id": f"m-{i}", "channel": "email" if i % 2 else "sms",
             "recipient": f"fan{i}@example.com" if i % 2 else "+14155550100", "text": f"code {i}", "subject": "s"}
            for i in range(start, start + n)
        ]  # fmt: skip

    with LocalServices() as services:
        assert os.getpid() != services._process.pid
        aws = (("AWS_ENDPOINT_URL", services.sqs_endpoint), ("AWS_ACCESS_KEY_ID", "d"), ("AWS_SECRET_ACCESS_KEY", "d"))
        senders = Senders(Pace(max_in_flight=20, rate_per_second=5000), services.gateway_url, None,
                          services.queue_url, "us-east-1", "Spring Tour", aws)  # fmt: skip
        for part in range(3):
            outcomes = send_messages(wave(600, part * 600), senders)
            assert {o["status"] for o in outcomes} == {"sent"} and len(outcomes) == 600
        received, distinct = services.mail_counts()
    assert distinct == 900 and received >= 900
    assert services._process.poll() == 0  # stopped cleanly


def test_the_messages_to_send_are_cut_one_chunk_per_group_of_partitions_and_laid_out_again_for_what_is_left(
    spark, tmp_path, test_env
):
    """The cut holds one partition per sending task of each chunk (a chunk's job reads its own
    partitions, no other chunk's): every message in exactly one chunk, chunks of about
    `chunk_size`; a wave already half sent is laid out for what is left, not its planned total."""
    from campaign_pipeline.frames import catalog_rows
    from campaign_pipeline.notify.lease import read_wave
    from campaign_pipeline.notify.stage import expected_messages, messages_to_send
    from campaign_pipeline.stage_context import StageContext

    wh = Warehouse(spark, str(tmp_path / "wh"))
    ids = plan_wave(wh, sms=250, email=40, no_recipient=3)
    env = test_env.model_copy(
        update={"warehouse_root": str(tmp_path / "wh"),
                "notify": test_env.notify.model_copy(update={"chunk_size": 100, "rate_per_second": 400})}
    )  # fmt: skip
    ctx = StageContext(spark, load_campaign(CAMPAIGN), env, wh, "run-1", AFTER, stage="notify")

    found = messages_to_send(ctx, "wave-1", expected_messages(read_wave(wh, CID, "wave-1"), False), False)
    cut, (chunks, tasks), counts = found.cut, found.layout, found.counts
    assert counts == {"sms": 250, "email": 40, "none": 3} and found.plan_version == wh.version("wave_messages")
    assert chunks == 3 and cut.rdd.getNumPartitions() == chunks * tasks
    placed = cut.rdd.mapPartitionsWithIndex(lambda i, rows: [(i // tasks, r["message_id"]) for r in rows]).collect()
    assert sorted(m for _, m in placed) == sorted(ids)  # each message once
    sizes = [sum(1 for c, _ in placed if c == chunk) for chunk in range(chunks)]
    assert all(60 <= size <= 140 for size in sizes), sizes

    sent = [{"campaign_id": CID, "wave_id": "wave-1", "message_id": m, "channel": "sms", "status": "sent", "attempts": 1}
            for m in ids[:200]]  # fmt: skip
    wh.append("notification_log", catalog_rows(spark, "notification_log", sent))
    found = messages_to_send(ctx, "wave-1", expected_messages(read_wave(wh, CID, "wave-1"), False), False)
    cut, (chunks, tasks), counts = found.cut, found.layout, found.counts
    assert counts == {"sms": 50, "email": 40, "none": 3}
    assert chunks == 1 and cut.rdd.getNumPartitions() == tasks
    assert sorted(r["message_id"] for r in cut.collect()) == sorted(ids[200:])


def test_a_wave_re_planned_between_the_read_of_its_row_and_the_claim_goes_out_as_re_planned(
    spark, test_env, tmp_path, monkeypatch
):
    """The messages are found before the claim, which is conditional on the wave's row as read
    before them. A plan_waves run that holds the wave, rewrites its messages and lets it go in
    between leaves the row as it was: the claim wins, and the messages are read again (one with a
    new text, one removed: the fan opted out)."""
    from campaign_pipeline.notify import stage
    from campaign_pipeline.waves import holding

    monkeypatch.setenv("SMS_API_TOKEN", TOKEN)
    wh = Warehouse(spark, str(tmp_path / "wh"))
    plan_wave(wh, sms=20, email=0)
    real, replanned = stage.preflight, []

    def replan_then_preflight(*args, **kwargs):
        if not replanned:  # the first preflight comes between the cut and the claim
            replanned.append(True)
            holding.hold_scheduled_waves(wh, CID, "plan-2")
            wh.update("wave_messages", CID, {"text": "'NEW TEXT'"}, "message_id = 'msg-00001'")
            wh.delete("wave_messages", f"campaign_id = '{CID}' AND message_id = 'msg-00002'")
            wh.update("waves", CID, {"total": "19", "sms": "19"}, "wave_id = 'wave-1'")
            holding.release(wh, CID, "plan-2")
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "preflight", replan_then_preflight)
    with GatewaySimulator(latency=0.0, token=TOKEN) as gw:
        env = notify_env(test_env, tmp_path / "wh", gw, "http://127.0.0.1:1/unused")
        run_pipeline(spark, load_campaign(CAMPAIGN), env, stages=["notify"], now=AFTER, out=io.StringIO())
        assert replanned and gw.bodies["msg-00001"]["text"] == "NEW TEXT"
        assert gw.seen["msg-00002"] == 0 and len(gw.bodies) == 19
    assert "msg-00002" not in log_of(wh)
