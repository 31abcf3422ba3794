"""Email through an SQS queue: one JSON message per email, sent in batches of 10.

Each batch is one `SendMessageBatch` request, paced like SMS requests (at most `max_in_flight` at
once, at most `rate_per_second` per second) and run in threads (boto3 is synchronous). Entries
SQS accepted are `sent` (provider id: the SQS MessageId); entries it refused with a sender fault
fail at once with SQS's code and message; entries refused for a server-side reason, throttling and
connection errors are retried with exponential backoff and jitter up to `max_attempts`. On a FIFO
queue (URL ending `.fifo`) every entry carries `MessageDeduplicationId = message_id` and one
message group per wave; the body carries `message_id` either way so consumers can de-duplicate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from campaign_pipeline.notify.pace import Pace
from campaign_pipeline.notify.sms import Outcome, Retryable, _wait, limits
from campaign_pipeline.privacy import scrub

BATCH = 10


def email_body(message: dict, campaign_name: str) -> str:
    notify_at = message.get("notify_at")
    return json.dumps(
        {
            "email": message["recipient"],
            "first_name": message.get("first_name"),
            "last_name": message.get("last_name"),
            "code": message.get("code"),
            "link": message.get("link"),
            "locale": message.get("locale"),
            "template": "presale_code",
            "campaign_name": campaign_name,
            "wave_date": notify_at.isoformat() if hasattr(notify_at, "isoformat") else notify_at,
            "message_id": message["message_id"],
            "subject": message.get("subject"),
            "text": message.get("text"),
        },
        ensure_ascii=False,
    )


def sqs_client(region: str | None, **settings):
    """An SQS client; `settings` (endpoint_url, keys) override what boto3 finds in the process."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs",
        region_name=region or "us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=50),
        **settings,
    )


async def send_emails_async(
    messages: list[dict], client, queue_url: str, campaign_name: str, pace: Pace, gate=None, limiter=None
) -> list[Outcome]:
    from botocore.exceptions import BotoCoreError, ClientError
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

    if gate is None or limiter is None:
        gate, limiter = limits(pace)
    fifo = queue_url.endswith(".fifo")
    outcomes: dict[str, Outcome] = {}
    tries: dict[str, int] = {}

    def entry(i: int, m: dict) -> dict:
        e = {"Id": str(i), "MessageBody": email_body(m, campaign_name)}
        if fifo:
            e["MessageDeduplicationId"] = m["message_id"]
            e["MessageGroupId"] = f"{m['campaign_id']}-{m['wave_id']}"
        return e

    async def attempt(batch: list[dict]) -> None:
        todo = [m for m in batch if m["message_id"] not in outcomes]
        for m in todo:
            tries[m["message_id"]] = tries.get(m["message_id"], 0) + 1
        await limiter.acquire()
        async with gate:
            try:
                resp = await asyncio.to_thread(
                    client.send_message_batch, QueueUrl=queue_url, Entries=[entry(i, m) for i, m in enumerate(todo)]
                )
            except (ClientError, BotoCoreError) as exc:
                raise Retryable(f"SQS: {scrub(str(exc))}") from None
        now = dt.datetime.now(dt.UTC)
        for ok in resp.get("Successful", []):
            m = todo[int(ok["Id"])]
            outcomes[m["message_id"]] = Outcome(
                m["message_id"], "sent", tries[m["message_id"]], ok.get("MessageId"), None, now
            )
        transient = []
        for bad in resp.get("Failed", []):
            m = todo[int(bad["Id"])]
            reason = f"SQS {bad.get('Code')}: {scrub(bad.get('Message') or '')}"
            if bad.get("SenderFault"):
                outcomes[m["message_id"]] = Outcome(m["message_id"], "failed", tries[m["message_id"]], None, reason)
            else:
                transient.append(reason)
        if transient:
            raise Retryable(transient[0])

    async def one(batch: list[dict]) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(pace.max_attempts),
            retry=retry_if_exception_type(Retryable),
            wait=_wait(pace),
            reraise=True,
        )
        try:
            async for state in retrying:
                with state:
                    await attempt(batch)
        except Retryable as exc:
            for m in batch:
                if m["message_id"] not in outcomes:
                    n = tries.get(m["message_id"], 0)
                    outcomes[m["message_id"]] = Outcome(
                        m["message_id"], "failed", n, None, f"gave up after {n} attempts: {exc}"
                    )

    await asyncio.gather(*(one(messages[i : i + BATCH]) for i in range(0, len(messages), BATCH)))
    return [outcomes[m["message_id"]] for m in messages]


def send_emails(messages: list[dict], client, queue_url: str, campaign_name: str, pace: Pace) -> list[Outcome]:
    """Queue `messages` (wave_messages rows as dicts) and return one outcome per message."""
    if not messages:
        return []
    return asyncio.run(send_emails_async(messages, client, queue_url, campaign_name, pace))
