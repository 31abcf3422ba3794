"""The SMS sender against the gateway simulator (a real HTTP server on 127.0.0.1), without Spark."""

from __future__ import annotations

import json
import time

import pytest
from helpers import moto_server

from campaign_pipeline.channels.delivery import each_message, retry_after_seconds
from campaign_pipeline.channels.pace import Pace
from campaign_pipeline.channels.sms import send_sms
from campaign_pipeline.demo.services import GatewaySimulator
from campaign_pipeline.privacy import scrub

FAST = Pace(max_in_flight=20, rate_per_second=1000, max_attempts=3, timeout_seconds=1.0, backoff_seconds=0.05)


def _messages(n: int, prefix: str = "m") -> list[dict]:
    return [
        {"campaign_id": "c1", "wave_id": "w1", "market_id": "NYC-01", "message_id": f"{prefix}{i:04d}",
         "recipient": f"+1212555{i:04d}", "text": f"code {i}"}
        for i in range(n)
    ]  # fmt: skip


def test_every_message_is_sent_once_with_its_idempotency_key_and_bearer_token():
    with GatewaySimulator(token="t0ken") as gw:
        out = send_sms(_messages(30), gw.url, "t0ken", FAST)
    assert {o.status for o in out} == {"sent"} and len(out) == 30
    assert set(gw.seen) == {f"m{i:04d}" for i in range(30)} and set(gw.seen.values()) == {1}
    assert all(o.provider_id and o.provider_id.startswith("sim-") and o.attempts == 1 for o in out)
    body = gw.bodies["m0003"]
    assert body == {"to": "+12125550003", "text": "code 3", "message_id": "m0003", "group_id": "c1/w1",
                    "metadata": {"campaign_id": "c1", "wave_id": "w1", "market_id": "NYC-01"}}  # fmt: skip


def test_429_with_retry_after_500_and_timeouts_are_retried_then_failed_permanent_4xx_at_once():
    msgs = _messages(6)
    with GatewaySimulator() as gw:
        gw.script("m0000", [(429, 0.3, 0)])  # then accepted
        gw.script("m0001", [(500, None, 0), (503, None, 0)])  # then accepted
        gw.script("m0002", [(500, None, 0)] * 3)  # gives up after 3 attempts
        gw.script("m0003", [(200, None, 1.5)] * 3)  # slower than the 1 s timeout every time
        gw.script("m0004", [(400, None, 0)])  # permanent
        gw.script("m0005", [(500, None, 0), (400, None, 0)])  # permanent on the retry
        t0 = time.perf_counter()
        out = {o.message_id: o for o in send_sms(msgs, gw.url, None, FAST)}
        elapsed = time.perf_counter() - t0
    assert (out["m0000"].status, out["m0000"].attempts) == ("sent", 2)
    assert elapsed >= 0.3  # Retry-After was honoured
    assert (out["m0001"].status, out["m0001"].attempts) == ("sent", 3)
    assert (out["m0002"].status, out["m0002"].attempts) == ("failed", 3)
    assert out["m0002"].last_error.startswith("gave up after 3 attempts: HTTP 500")
    assert out["m0003"].status == "failed" and "TimeoutError" in out["m0003"].last_error
    assert (out["m0004"].status, out["m0004"].attempts, gw.seen["m0004"]) == ("failed", 1, 1)
    assert (out["m0005"].status, out["m0005"].attempts, gw.seen["m0005"]) == ("failed", 2, 2)
    assert out["m0005"].last_error.startswith("HTTP 400")
    # the gateway's error text names the recipient; the recorded error masks it
    assert out["m0004"].last_error == 'HTTP 400: {"error": "simulated 400 for +1******0004"}'


def test_in_flight_and_rate_limits_hold():
    pace = Pace(max_in_flight=5, rate_per_second=100, max_attempts=1, timeout_seconds=5)
    with GatewaySimulator(latency=0.05) as gw:
        t0 = time.perf_counter()
        out = send_sms(_messages(60), gw.url, None, pace)
        elapsed = time.perf_counter() - t0
    assert {o.status for o in out} == {"sent"}
    assert gw.max_concurrent <= 5
    # 60 requests at 100/s take at least about 0.5 s (the limiter allows a first burst)
    assert elapsed >= 0.4


def test_each_message_is_sent_once_in_order_starting_at_once_and_a_retry_wait_holds_no_one_up():
    import asyncio

    created, seen_at_first_step, finished = [], {}, []

    async def send(m, waiting):
        seen_at_first_step[m] = len(created)
        if m in (1, 2, 3):  # waiting out a long Retry-After: its worker moves on meanwhile
            waiting()
            await asyncio.sleep(0.3)
        else:
            await asyncio.sleep(0.001 * (m % 3))
        finished.append(m)
        return m * 10

    def started(m, waiting):
        created.append(m)
        return send(m, waiting)

    # two workers: without `waiting` the three waits would hold both for 0.3 s
    t0 = time.monotonic()
    assert asyncio.run(each_message(list(range(100)), started, 2)) == [m * 10 for m in range(100)]
    assert sorted(created) == list(range(100)) and sorted(finished) == list(range(100))
    assert seen_at_first_step[0] <= 2  # the first started before the other 98 were even made
    assert set(finished[-3:]) == {1, 2, 3} and time.monotonic() - t0 < 0.6
    assert asyncio.run(each_message([], started, 2)) == []
    assert asyncio.run(each_message([7], started, 0)) == [70]


def test_messages_waiting_out_a_retry_after_do_not_hold_up_the_rest_of_the_task():
    # one in flight: two workers; three messages told to come back in half a second would hold
    # both for that long if a waiting message kept its worker
    pace = Pace(max_in_flight=1, rate_per_second=1000, max_attempts=3, timeout_seconds=2.0)
    with GatewaySimulator() as gw:
        for m in ("m0000", "m0001", "m0002"):
            gw.script(m, [(429, 0.5, 0)])
        out = send_sms(_messages(23), gw.url, None, pace)
    assert {o.status for o in out} == {"sent"} and [o.message_id for o in out] == [f"m{i:04d}" for i in range(23)]
    assert set(list(gw.delivered)[-3:]) == {"m0000", "m0001", "m0002"}  # the other 20 went out meanwhile


def test_a_send_that_raises_stops_the_others_at_once_and_its_error_comes_out():
    import asyncio

    started, finished = [], []

    async def send(m, waiting):
        started.append(m)
        await asyncio.sleep(0.01)
        if m == 3:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "a gateway answer nobody foresaw")
        await asyncio.sleep(0.05)
        finished.append(m)
        return m

    with pytest.raises(UnicodeDecodeError):
        asyncio.run(each_message(list(range(200)), send, 4))
    assert len(started) <= 8 and len(finished) <= 4  # nothing more is sent after the error


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), ("0.5", 0.5), (None, None), ("soon", None), ("-3", 0.0), ("inf", None), ("nan", None),
     ("1e400", None), ("1e12", 3600.0), ("Fri, 31 Dec 9999 23:59:59 GMT", 3600.0),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_is_read_as_seconds_and_never_beyond_an_hour(value, expected):
    assert retry_after_seconds(value) == expected


def test_emails_are_batched_by_count_and_by_size():
    from campaign_pipeline.channels.email import BATCH_BYTES, batches, email_body

    small = [dict(m, text="x") for m in _emails(25)]
    large = [dict(m, text="y" * 120_000) for m in _emails(3)]
    out = batches(small[:12] + large + small[12:], "Tour")
    # ten a batch, except where the next would pass SQS's 256 KiB: two 120 kB emails fit, a third does not
    assert [len(b) for b in out] == [10, 4, 10, 4]
    assert all(sum(len(email_body(m, "Tour").encode()) for m in b) <= BATCH_BYTES for b in out)


def test_error_text_from_a_gateway_is_masked_and_bounded():
    text = scrub("bad number +44 20 7946 0958 for jane.doe@example.com " + "x" * 500)
    assert "jane.doe" not in text and "7946" not in text and "j***@example.com" in text and len(text) <= 300


@pytest.fixture(scope="module")
def sqs():
    import boto3

    server, endpoint = moto_server()
    settings = {"endpoint_url": endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    yield settings, boto3.client("sqs", region_name="us-east-1", **settings)
    server.stop()


def _emails(n: int) -> list[dict]:
    return [dict(m, channel="email", recipient=f"fan{i}@example.com", code=f"C{i}", link="https://x", locale="en_US",
                 first_name="A", last_name="B", subject="S", notify_at=None) for i, m in enumerate(_messages(n, "e"))]  # fmt: skip


@pytest.mark.parametrize("fifo", [False, True])
def test_emails_go_to_sqs_in_batches_of_ten_with_the_message_id_and_fifo_deduplication(sqs, fifo):
    from campaign_pipeline.channels.email import send_emails, sqs_client

    settings, client = sqs
    name = "emails.fifo" if fifo else "emails"
    attributes = {"FifoQueue": "true"} if fifo else {}
    url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    messages = _emails(23)
    out = send_emails(messages + messages[:3], sqs_client("us-east-1", **settings), url, "Tour", FAST)
    assert [o.status for o in out] == ["sent"] * 26 and all(o.provider_id for o in out)
    got = []
    while batch := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        got += [json.loads(m["Body"]) for m in batch]
        client.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in batch]
        )
    # a FIFO queue drops the three re-sent duplicates by their deduplication id (the message id)
    assert len(got) == (23 if fifo else 26)
    assert {b["message_id"] for b in got} == {m["message_id"] for m in messages}
    assert got[0]["campaign_name"] == "Tour" and got[0]["email"].endswith("@example.com")


def test_an_unreachable_queue_fails_the_emails_after_the_retries(sqs):
    from campaign_pipeline.channels.email import send_emails, sqs_client

    settings, _ = sqs
    client = sqs_client("us-east-1", **{**settings, "endpoint_url": "http://127.0.0.1:9"})
    out = send_emails(_emails(3), client, "http://127.0.0.1:9/000000000000/none", "Tour", FAST)
    assert {(o.status, o.attempts) for o in out} == {("failed", 3)}
    assert out[0].last_error.startswith("gave up after 3 attempts: SQS")


def test_a_slack_alert_names_the_failure_without_personal_data():
    from campaign_pipeline.ops.alerts import stage_failure, wave_summary

    exc = ValueError("registrations.csv line 3: phone +1 415 555 0123 of jane.doe@example.com is bad\nmore detail")
    text = stage_failure("tour", "screen", "run-1", exc)
    assert text.startswith(":rotating_light: campaign tour · stage screen failed (run run-1): ValueError: ")
    assert "555 0123" not in text and "jane.doe" not in text and "more detail" not in text
    assert wave_summary("tour", "w1", "completed", {"sms:sent": 3}) == (
        ":incoming_envelope: campaign tour · w1 completed: sms:sent 3"
    )


def test_a_chunks_task_hands_the_senders_its_rows_with_timestamps_as_naive_utc(monkeypatch):
    """A chunk's rows come with timestamps as microseconds since the epoch (a `Row` would carry the
    worker's local time); the senders get them as the pandas path gave them: naive, in UTC."""
    import datetime as dt

    from pyspark.sql import Row

    from campaign_pipeline.notify import send

    got = []
    monkeypatch.setattr(send, "send_messages", lambda messages, senders: got.extend(messages) or [{"n": len(messages)}])
    at = dt.datetime(2027, 3, 1, 15, 30, 5, 250, tzinfo=dt.UTC)
    micros = int((at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))
    rows = [Row(message_id="m-1", notify_at=micros, text="hi"), Row(message_id="m-2", notify_at=None, text="yo")]
    out = list(send.chunk_sender(None, ("notify_at",))(iter(rows)))
    assert out == [{"n": 2}]
    assert got == [{"message_id": "m-1", "notify_at": dt.datetime(2027, 3, 1, 15, 30, 5, 250), "text": "hi"},
                   {"message_id": "m-2", "notify_at": None, "text": "yo"}]  # fmt: skip
    assert list(send.chunk_sender(None, ("notify_at",))(iter([]))) == []  # an empty partition sends nothing
