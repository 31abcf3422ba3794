"""notify under the scheduler: runs that overlap, a gateway slower than the lease, writers of other
campaigns and compaction at the same time, one campaign failing in `notify --due`, a re-plan
while a wave is sent, a gateway that asks for a pause, and checks before a wave is taken.

Real parts throughout: notify command lines in processes of their own, the gateway simulator (a
real HTTP server) recording which run sent each `Idempotency-Key`, SQS in a moto server.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import moto_server, notify_env, planned_wave

from campaign_pipeline.config import dump_campaign, load_campaign
from campaign_pipeline.demo.services import GatewaySimulator
from campaign_pipeline.errors import PipelineError, PreflightError
from campaign_pipeline.ops import maintain
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"
NOTIFY_AT = dt.datetime(2027, 3, 1, 15, tzinfo=dt.UTC)
AFTER = NOTIFY_AT + dt.timedelta(days=2)  # both of the example campaign's waves are due
TOKEN = "test-sms-token"
QUIET = io.StringIO


def campaign_file(folder: Path, cid: str) -> Path:
    """The example campaign under another id (waves wave-1 and wave-2), as `notify --due` finds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cid}.yaml"
    dump_campaign(load_campaign(EXAMPLE).model_copy(update={"campaign_id": cid}), path)
    return path


def plan(wh: Warehouse, cid: str, wave: str, sms: int, email: int = 0, notify_at=NOTIFY_AT) -> list[str]:
    """A planned wave: `sms` SMS then `email` emails, message ids `<cid>-<wave>-<n>`."""
    return planned_wave(wh, cid, wave, sms, email, notify_at=notify_at)


@pytest.fixture(scope="module")
def aws():
    import boto3

    server, endpoint = moto_server()
    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "SMS_API_TOKEN": TOKEN}.items():  # fmt: skip
        mp.setenv(k, v)
    yield boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    mp.undo()
    server.stop()


def fifo_queue(sqs, name: str) -> str:
    return sqs.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]


def drained(sqs, url: str) -> list[str]:
    """The message ids of every email on the queue, taken off it (each delivery counted)."""
    ids = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
        ids += [json.loads(m["Body"])["message_id"] for m in got]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )
    return ids


def env_file(env, path: Path) -> Path:
    path.write_text(json.dumps(json.loads(env.model_dump_json())))  # YAML reads JSON
    return path


def start_notify(env_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "campaign_pipeline.cli", "notify", "--env", str(env_path), "--now", AFTER.isoformat(),
         *args],
        env=dict(os.environ, CAMPAIGN_PIPELINE_JARS_DIR=str(ROOT / "jars"), CAMPAIGN_PIPELINE_DRIVER_MEMORY="1g"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=env_path.parent,
    )  # fmt: skip


def outcomes(wh: Warehouse, cid: str) -> list[str]:
    return [r["message_id"] for r in wh.read("notification_log", cid).select("message_id").collect()]


def waves(wh: Warehouse, cid: str) -> dict[str, tuple]:
    return {r["wave_id"]: (r["status"], r["attempts"]) for r in wh.read("waves", cid).collect()}


def test_overlapping_notify_runs_send_each_message_from_one_run_while_others_write_and_compact(
    spark, test_env, tmp_path, aws
):
    """(a) two notify processes started ~10 s apart on a campaign with two due waves; (b) the first
    wave takes the gateway several leases to get through; (c) the second run sends another
    campaign of the warehouse meanwhile, and compaction runs on the tables the senders write to."""
    root, confs = tmp_path / "wh", tmp_path / "campaigns"
    wh = Warehouse(spark, str(root))
    a, b = "tour-a", "tour-b"
    campaign_file(confs, a), campaign_file(confs, b)
    ids = {a: plan(wh, a, "wave-1", sms=100) + plan(wh, a, "wave-2", sms=60, email=30, notify_at=AFTER),
           b: plan(wh, b, "wave-1", sms=40, email=20)}  # fmt: skip
    queue = fifo_queue(aws, "overlap")
    with GatewaySimulator(latency=0.02, token=TOKEN) as gw:
        for message in ids[a][:100]:  # wave-1: a second a message, 4 at once: ~25 s, over a lease and a half
            gw.script(message, [(200, None, 1.0)])
        env = notify_env(test_env, root, gw, queue, lease_seconds=15, timeout_seconds=5, max_in_flight=4,
                         chunk_size=100)  # fmt: skip
        path = env_file(env, tmp_path / "env.yaml")
        first = start_notify(path, "--campaign", str(confs / f"{a}.yaml"))
        time.sleep(10)
        second = start_notify(path, "--due", "--campaigns-dir", str(confs))
        deadline = time.monotonic() + 300

        # maintain's OPTIMIZE of the table the senders write to, again and again while they send
        # (every 8 s: a Z-ORDER is several Spark jobs, and this worker's CPU is the senders' too)
        compacted = 0
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(maintain, "ZORDER", {"notification_log": "message_id"})
            while first.poll() is None and time.monotonic() < deadline:
                report = maintain.MaintainReport()
                maintain.optimize(wh, a, report)
                compacted += report.counts.get("optimize:notification_log:files_removed", 0)
                time.sleep(8)
        out1, err1 = first.communicate(timeout=300)
        out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0, err1[-3000:]
    assert second.returncode == 0, err2[-3000:]
    assert compacted > 0  # compaction did rewrite files the senders were merging into

    # every key reached the gateway from one run only; each message has exactly one outcome
    # (`notify --due` runs each campaign as a run of its own)
    assert len(gw.per_run) >= 2 and all(len(runs) == 1 for runs in gw.runs.values()), (out1, out2)
    for cid in (a, b):
        logged = outcomes(wh, cid)
        missing = sorted(set(ids[cid]) - set(logged))
        assert sorted(logged) == sorted(ids[cid]), (
            f"{cid}: {len(missing)} without an outcome ({missing[:5]}); waves {waves(wh, cid)}\n"
            f"--- first run:\n{out1[-2500:]}\n--- second run:\n{out2[-2500:]}"
        )
        assert {r["status"] for r in wh.read("notification_log", cid).collect()} == {"sent"}
    assert waves(wh, a) == {"wave-1": ("completed", 1), "wave-2": ("completed", 1)}  # no takeover
    assert waves(wh, b) == {"wave-1": ("completed", 1)}
    emails = [f"{a}-wave-2-{i:04d}" for i in range(60, 90)] + [f"{b}-wave-1-{i:04d}" for i in range(40, 60)]
    assert sorted(drained(aws, queue)) == sorted(emails)  # each email once
    # the second run found wave-1 held, and left wave-2 to the run sending the campaign
    assert "wave-1: held by notify run" in out2, (out1, out2)
    assert "wave-2: not taken while notify run" in out2 or "wave-2: already completed" in out2, (out1, out2)
    assert "wave-2: completed" in out1 and gw.busiest_second() <= 220
    assert "notify --due at" in out2 and f"{b}: ok: 1 wave(s) taken" in out2


def test_notify_due_sends_the_other_campaigns_when_one_fails_whatever_it_raises(
    spark, test_env, tmp_path, aws, monkeypatch, capsys
):
    from campaign_pipeline import cli
    from campaign_pipeline.notify import stage

    root, confs = tmp_path / "wh", tmp_path / "campaigns"
    wh = Warehouse(spark, str(root))
    for cid in ("due-a", "due-b"):  # the broken one comes first
        campaign_file(confs, cid)
        plan(wh, cid, "wave-1", sms=5)
    original = stage.take_and_send

    def broken_for_a(ctx, *args):
        if ctx.campaign_id == "due-a":
            raise KeyError("a bug nobody foresaw")
        return original(ctx, *args)

    monkeypatch.setattr(stage, "take_and_send", broken_for_a)
    with GatewaySimulator(token=TOKEN) as gw:
        env = notify_env(test_env, root, gw, fifo_queue(aws, "due"))
        code = cli.main(["notify", "--due", "--campaigns-dir", str(confs), "--env",
                         str(env_file(env, tmp_path / "env.yaml")), "--now", AFTER.isoformat()])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    assert "notify --due at 2027-03-03 15:00 UTC: 2 campaign(s), 1 failed" in out
    assert "due-b: ok: 1 wave(s) taken · SMS 5 sent" in out
    # each of its two waves failed, and the campaign's run says so
    assert "due-a: FAILED: notify: 2 waves failed: wave-1: KeyError: 'a bug nobody foresaw'; wave-2: KeyError" in out
    assert "1 of 2 campaigns failed: due-a" in err
    assert len(outcomes(wh, "due-b")) == 5 and outcomes(wh, "due-a") == []


def test_a_wave_is_not_taken_when_it_cannot_be_sent_and_no_attempt_is_spent(
    spark, test_env, tmp_path, aws, monkeypatch
):
    cid = "preflight"
    wh = Warehouse(spark, str(tmp_path / "wh"))
    plan(wh, cid, "wave-1", sms=3, email=2)
    campaign = load_campaign(campaign_file(tmp_path / "campaigns", cid))
    queue = fifo_queue(aws, "preflight")
    with GatewaySimulator(token=TOKEN) as gw:
        env = notify_env(test_env, tmp_path / "wh", gw, queue)
        monkeypatch.delenv("SMS_API_TOKEN")
        with pytest.raises(PreflightError, match="no SMS token: set the variable SMS_API_TOKEN"):
            run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=QUIET())
        monkeypatch.setenv("SMS_API_TOKEN", TOKEN)
        closed = env.model_copy(update={"sms_gateway_url": "http://127.0.0.1:9", "email_queue_url": queue + "-gone"})
        with pytest.raises(PreflightError) as failed:
            run_pipeline(spark, campaign, closed, stages=["notify"], now=AFTER, out=QUIET())
        assert "the SMS gateway http://127.0.0.1:9 does not answer" in str(failed.value)
        assert "the email queue" in str(failed.value) and "does not answer" in str(failed.value)
        assert waves(wh, cid) == {"wave-1": ("scheduled", 0)} and not gw.seen and outcomes(wh, cid) == []

        run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=QUIET())  # all set: sent
    assert waves(wh, cid) == {"wave-1": ("completed", 1)} and len(outcomes(wh, cid)) == 5


def test_a_gateway_asking_for_a_long_pause_defers_the_wave_without_failing_it(spark, test_env, tmp_path, aws):
    cid = "paused"
    wh = Warehouse(spark, str(tmp_path / "wh"))
    ids = plan(wh, cid, "wave-1", sms=30)
    campaign = load_campaign(campaign_file(tmp_path / "campaigns", cid))
    with GatewaySimulator(latency=0.01, token=TOKEN) as gw:
        gw.script(ids[10], [(429, 12, 0)])  # longer than notify.retry_after_max_seconds: 1
        env = notify_env(test_env, tmp_path / "wh", gw, fifo_queue(aws, "paused"), retry_after_max_seconds=1,
                         max_in_flight=1, rate_per_second=50)  # fmt: skip
        first = run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=QUIET()).rows[0][1]
        row = wh.read("waves", cid).first()
        assert (row["status"], row["attempts"], row["lease_until"]) == ("sending", 1, None)
        assert row["deferred_until"] is not None
        assert any("the gateway asked to wait: paused until" in line for line in first.summary)
        assert len(outcomes(wh, cid)) < 30 and ids[10] not in outcomes(wh, cid)  # the rest waits for the pause

        early = run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=QUIET()).rows[0][1]
        assert any("paused until" in line and "Retry-After" in line for line in early.summary), early.summary
        time.sleep(max(0.0, (row["deferred_until"].astimezone(dt.UTC) - dt.datetime.now(dt.UTC)).total_seconds()))
        run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=QUIET())
    assert waves(wh, cid) == {"wave-1": ("completed", 1)}  # resumed without spending an attempt
    assert sorted(outcomes(wh, cid)) == ids and gw.seen[ids[10]] == 2


def test_a_gateway_refusing_the_token_stops_the_wave_without_failing_a_message_or_spending_an_attempt(
    spark, test_env, tmp_path, aws, monkeypatch
):
    cid = "refused"
    wh = Warehouse(spark, str(tmp_path / "wh"))
    ids = plan(wh, cid, "wave-1", sms=20)
    campaign = load_campaign(campaign_file(tmp_path / "campaigns", cid))
    with GatewaySimulator(token=TOKEN) as gw:
        env = notify_env(test_env, tmp_path / "wh", gw, fifo_queue(aws, "refused"), max_in_flight=2)
        monkeypatch.setenv("SMS_API_TOKEN", "a-rotated-token")
        with pytest.raises(PreflightError, match="our credentials were refused .*HTTP 401.* no attempt spent"):
            run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=QUIET())
        row = wh.read("waves", cid).first()
        assert (row["status"], row["attempts"], row["lease_until"]) == ("scheduled", 0, None)  # as it was
        assert outcomes(wh, cid) == [] and len(gw.seen) <= 2  # stopped at the first refusal in each slot
        monkeypatch.setenv("SMS_API_TOKEN", TOKEN)
        run_pipeline(spark, campaign, env, stages=["notify"], now=AFTER, out=QUIET())
    assert waves(wh, cid) == {"wave-1": ("completed", 1)} and sorted(outcomes(wh, cid)) == ids


def test_of_two_runs_claiming_one_wave_at_once_exactly_one_wins(spark, tmp_path):
    from campaign_pipeline.notify.lease import claim, read_wave

    wh = Warehouse(spark, str(tmp_path / "wh"))
    plan(wh, "race", "wave-1", sms=1)
    plan(wh, "race", "wave-2", sms=1)  # same campaign, same files: its claims conflict too
    for wave in ("wave-1", "wave-2"):
        row = read_wave(wh, "race", wave)
        got: dict[str, object] = {}

        def take(run, wave=wave, row=row, got=got):
            got[run] = claim(wh, "race", wave, row, run, 30, True)

        runs = [threading.Thread(target=take, args=(r,)) for r in ("run-x", "run-y", "run-z")]
        for t in runs:
            t.start()
        for t in runs:
            t.join()
        winners = [r for r, c in got.items() if c.lease is not None]
        assert len(winners) == 1, {r: c.why for r, c in got.items()}
        held = read_wave(wh, "race", wave)
        assert (held["status"], held["run_id"], held["attempts"]) == ("sending", winners[0], 1)


def test_of_two_runs_claiming_two_waves_of_a_campaign_the_later_claim_gives_way_whichever_started_first(
    spark, tmp_path, monkeypatch
):
    """Claims of two waves touch two partitions and do not conflict in Delta; the check after the
    claim settles it. Run B started its claim before run A (its `sending_at` is earlier) but its
    commit landed after A had checked: B's check sees A, so B gives way — ordering by `sending_at`
    had let both keep a wave, and the campaign go out at twice its limits."""
    from campaign_pipeline.notify import lease
    from campaign_pipeline.notify.lease import claim, read_wave
    from campaign_pipeline.notify.stage import campaign_waves, other_sender

    wh = Warehouse(spark, str(tmp_path / "wh"))
    plan(wh, "pair", "wave-1", sms=1)
    plan(wh, "pair", "wave-2", sms=1)
    rows = {w: read_wave(wh, "pair", w) for w in ("wave-1", "wave-2")}
    a = claim(wh, "pair", "wave-1", rows["wave-1"], "run-a", 60, True)
    assert a.lease is not None and other_sender(campaign_waves(wh, "pair"), "wave-1", "run-a") is None  # A keeps
    started_earlier = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    monkeypatch.setattr(lease, "now_utc", lambda: started_earlier)
    b = claim(wh, "pair", "wave-2", rows["wave-2"], "run-b", 60, True)
    monkeypatch.undo()
    seen = campaign_waves(wh, "pair")
    assert b.lease is not None and seen["wave-2"]["sending_at"] < seen["wave-1"]["sending_at"]
    rival = other_sender(seen, "wave-2", "run-b")
    assert rival is not None and rival["run_id"] == "run-a"  # B gives way


def test_a_wave_held_by_a_planner_is_left_to_the_next_notify_run_and_a_claim_read_before_the_hold_fails(
    spark, tmp_path
):
    from campaign_pipeline.config import Wave
    from campaign_pipeline.notify.lease import claim, read_wave
    from campaign_pipeline.notify.stage import decide
    from campaign_pipeline.waves import holding

    wh = Warehouse(spark, str(tmp_path / "wh"))
    plan(wh, "held", "wave-1", sms=1)
    wave = Wave(wave_id="wave-1", notify_at=NOTIFY_AT)
    read_by_notify = read_wave(wh, "held", "wave-1")
    assert holding.hold_scheduled_waves(wh, "held", "plan-in-progress") == ["wave-1"]
    # a claim decided on the row read before the hold changes nothing: the condition no longer holds
    assert claim(wh, "held", "wave-1", read_by_notify, "notify-run", 60, True).lease is None
    take, why, _ = decide(wave, read_wave(wh, "held", "wave-1"), AFTER, dt.datetime.now(dt.UTC), False, 2)
    assert not take and why.startswith("being re-planned by plan_waves run plan-in-progress")
    with pytest.raises(PipelineError, match="run plan-in-progress is re-planning campaign held"):
        holding.hold_scheduled_waves(wh, "held", "another-plan")  # two planners never interleave
    holding.release(wh, "held", "plan-in-progress")
    row = read_wave(wh, "held", "wave-1")
    assert decide(wave, row, AFTER, dt.datetime.now(dt.UTC), False, 2)[0]
    assert claim(wh, "held", "wave-1", row, "notify-run", 60, True).lease is not None


def test_leases_hold_on_a_machine_whose_clock_is_not_on_utc(spark, tmp_path, monkeypatch):
    """PySpark hands timestamps to Python in the process's local time: a lease read on a machine
    in New York is the same instant, so it is held, renewed and taken over exactly as on UTC."""
    from campaign_pipeline.config import Wave
    from campaign_pipeline.notify.lease import claim, read_wave
    from campaign_pipeline.notify.stage import decide

    wh = Warehouse(spark, str(tmp_path / "wh"))
    plan(wh, "tz", "wave-1", sms=1)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        won = claim(wh, "tz", "wave-1", read_wave(wh, "tz", "wave-1"), "run-ny", 60, True).lease
        assert won is not None
        before_renewal = read_wave(wh, "tz", "wave-1")
        assert won.renew()
        assert claim(wh, "tz", "wave-1", before_renewal, "run-other", 60, True).lease is None  # a stale read loses
        row = read_wave(wh, "tz", "wave-1")
        wave = Wave(wave_id="wave-1", notify_at=NOTIFY_AT)
        take, why, _ = decide(wave, row, AFTER, dt.datetime.now(dt.UTC), False, 2)
        assert not take and "held by notify run run-ny" in why, why  # no takeover while it lives
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
        take, _, spends = decide(wave, row, AFTER, later, False, 2)
        assert take and spends  # once the lease ran out, it can be taken over …
        # … and the row read in New York time matches the table exactly (the condition holds)
        assert claim(wh, "tz", "wave-1", row, "run-other", 60, spends).lease is not None
        assert read_wave(wh, "tz", "wave-1")["attempts"] == 2
    finally:
        monkeypatch.undo()
        time.tzset()


def yaml_campaign(tmp_path: Path, cid: str) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["campaign_id"] = cid
    path = tmp_path / f"{cid}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_replan_while_a_wave_is_sent_keeps_its_messages_and_plans_late_fans_into_the_open_wave(
    spark, test_env, tmp_path, aws
):
    """plan_waves runs while notify (a thread of this driver: one driver or two commit to Delta
    alike) sends wave-1: wave-1's messages stay exactly as they were, fans coded since are planned
    into wave-2."""
    from helpers import small_coded_campaign

    cid = "replan"
    path = yaml_campaign(tmp_path, cid)
    campaign = load_campaign(path)
    root = tmp_path / "wh"
    wh = Warehouse(spark, str(root))
    add_fans = small_coded_campaign(wh, cid, fans=40, wave="wave-1")
    before_send = NOTIFY_AT - dt.timedelta(days=1)
    run_pipeline(spark, campaign, test_env.with_roots(None, str(root)), stages=["plan_waves"], now=before_send,
                 out=QUIET())  # fmt: skip
    wave1 = {r["message_id"]: r.asDict() for r in wh.read("wave_messages", cid).where("wave_id = 'wave-1'").collect()}
    assert len(wave1) == 40

    with GatewaySimulator(latency=0.8, token=TOKEN) as gw:
        env = notify_env(test_env, root, gw, fifo_queue(aws, "replan"), max_in_flight=2, rate_per_second=8,
                         chunk_size=20, lease_seconds=12, timeout_seconds=4)  # fmt: skip
        sent: list = []

        def send():
            try:
                sent.append(run_pipeline(spark, campaign, env, stages=["notify"], out=QUIET(),
                                         now=NOTIFY_AT + dt.timedelta(minutes=5)))  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                sent.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 240
        while len(gw.seen) < 5 and sender.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sender.is_alive(), sent
        add_fans(range(40, 50), "wave-2")  # coded after wave-1 started: assign_codes placed them in wave-2
        replan = run_pipeline(spark, campaign, env, stages=["plan_waves"], now=NOTIFY_AT + dt.timedelta(minutes=6),
                              out=QUIET()).rows[0][1]  # fmt: skip
        assert "kept as they are (sending or sent): wave-1" in replan.summary
        sender.join(300)
    assert not isinstance(sent[0], Exception), sent
    after = {r["message_id"]: r.asDict() for r in wh.read("wave_messages", cid).where("wave_id = 'wave-1'").collect()}
    assert after == wave1  # not one field of a message of the wave being sent changed
    late = wh.read("wave_messages", cid).where("wave_id = 'wave-2'").select("global_user_id").collect()
    assert sorted(r[0] for r in late) == [f"F{i:03d}" for i in range(40, 50)]
    assert sorted(outcomes(wh, cid)) == sorted(wave1) and all(len(r) == 1 for r in gw.runs.values())
