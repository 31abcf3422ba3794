"""Email through an SQS queue: one JSON message per email, sent in batches of 10.

Each batch is one `SendMessageBatch` request, paced like SMS requests (at most `max_in_flight` at
once, at most `rate_per_second` per second) and run in threads (boto3 is synchronous). Entries
SQS accepted are `sent` (provider id: the SQS MessageId); entries it refused with a sender fault
fail at once with SQS's code and message; entries refused for a server-side reason, throttling and
connection errors are retried with exponential backoff and jitter up to `max_attempts`. No batch
starts after the task's window closes (its emails are `deferred` to a later run). On a FIFO queue
(URL ending `.fifo`) every entry carries `MessageDeduplicationId = message_id` (SQS drops a second
entry with the same id sent within 5 minutes of the first) and a message group per wave and fan
hash bucket (`notify.email_groups`); the body carries `message_id` either way so consumers can
de-duplicate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import zlib

from campaign_pipeline.channels.base import Channel
from campaign_pipeline.channels.delivery import REFUSED, NotStarted, Outcome, Refused, Retryable
from campaign_pipeline.channels.pace import Pace, Window, limits
from campaign_pipeline.privacy import mask_email, scrub

# AWS's answers that mean the credentials will not do, whatever is retried
REFUSED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "InvalidClientTokenId",
                           "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken"})  # fmt: skip
BATCH = 10  # entries per SendMessageBatch
BATCH_BYTES = 250_000  # SQS takes at most 262,144 bytes per batch, all entries together


def batches(messages: list[dict], campaign_name: str) -> list[list[dict]]:
    """Consecutive batches of at most `BATCH` emails and `BATCH_BYTES` of bodies (one large email
    never takes nine others down with it)."""
    out: list[list[dict]] = []
    size = 0
    for m in messages:
        body = len(email_body(m, campaign_name).encode("utf-8"))
        if not out or len(out[-1]) == BATCH or size + body > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(m)
        size += body
    return out


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


def sqs_client(region: str | None, timeout: float | None = None, **settings):
    """An SQS client; `settings` (endpoint_url, keys) override what boto3 finds in the process."""
    import boto3
    from botocore.config import Config

    limits = {"connect_timeout": timeout, "read_timeout": timeout} if timeout else {}
    return boto3.client(
        "sqs",
        region_name=region or "us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=50, **limits),
        **settings,
    )


def message_group(message: dict, groups: int) -> str:
    """A FIFO message group: the wave and a hash bucket of the fan. Order only matters per fan, and
    SQS hands a group's messages to one consumer at a time, so many groups let consumers work in
    parallel (one group per wave would serialise them)."""
    bucket = zlib.crc32(str(message.get("global_user_id") or message["message_id"]).encode()) % max(1, groups)
    return f"{message['campaign_id']}-{message['wave_id']}-{bucket:03d}"


async def send_emails_async(
    messages: list[dict],
    client,
    queue_url: str,
    campaign_name: str,
    pace: Pace,
    gate=None,
    spacing=None,
    window: Window | None = None,
    groups: int = 64,
) -> list[Outcome]:
    from botocore.exceptions import BotoCoreError, ClientError

    if gate is None or spacing is None:
        gate, spacing = limits(pace)
    window = window or Window()
    fifo = queue_url.endswith(".fifo")
    outcomes: dict[str, Outcome] = {}
    tries: dict[str, int] = {}

    def entry(i: int, m: dict) -> dict:
        e = {"Id": str(i), "MessageBody": email_body(m, campaign_name)}
        if fifo:
            e["MessageDeduplicationId"] = m["message_id"]
            e["MessageGroupId"] = message_group(m, groups)
        return e

    async def attempt(batch: list[dict]) -> None:
        todo = [m for m in batch if m["message_id"] not in outcomes]
        async with gate:
            await spacing.acquire()
            if not window.open():
                raise NotStarted
            for m in todo:
                tries[m["message_id"]] = tries.get(m["message_id"], 0) + 1
            try:
                resp = await asyncio.to_thread(
                    client.send_message_batch, QueueUrl=queue_url, Entries=[entry(i, m) for i, m in enumerate(todo)]
                )
            except (ClientError, BotoCoreError) as exc:
                reason = f"SQS: {scrub(str(exc), hide=tuple(m.get('code') for m in todo))}"
                code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
                if code in REFUSED_CODES:
                    raise Refused(reason) from None
                raise Retryable(reason) from None
        now = dt.datetime.now(dt.UTC)
        for ok in resp.get("Successful", []):
            m = todo[int(ok["Id"])]
            outcomes[m["message_id"]] = Outcome(
                m["message_id"], "sent", tries[m["message_id"]], ok.get("MessageId"), None, now
            )
        transient = []
        for bad in resp.get("Failed", []):
            m = todo[int(bad["Id"])]
            reason = f"SQS {bad.get('Code')}: {scrub(bad.get('Message') or '', hide=(m.get('code'),))}"
            if bad.get("SenderFault"):
                outcomes[m["message_id"]] = Outcome(m["message_id"], "failed", tries[m["message_id"]], None, reason)
            else:
                transient.append(reason)
        if transient:
            raise Retryable(transient[0])

    async def one(batch: list[dict]) -> None:
        rounds = 0
        while True:
            if not window.open():
                return
            rounds += 1
            try:
                await attempt(batch)
                return
            except NotStarted:
                return
            except Refused as exc:  # no email can go out with these credentials: stop, fail nothing
                window.refuse(str(exc))
                return
            except Retryable as exc:
                if rounds >= pace.max_attempts:
                    for m in batch:
                        if m["message_id"] not in outcomes:
                            n = tries.get(m["message_id"], 0)
                            outcomes[m["message_id"]] = Outcome(
                                m["message_id"], "failed", n, None, f"gave up after {n} attempts: {exc}"
                            )
                    return
                wait = pace.backoff(rounds)
                if not window.fits(wait):
                    return
                await asyncio.sleep(wait)

    await asyncio.gather(*(one(batch) for batch in batches(messages, campaign_name)))
    refused = REFUSED + window.refused if window.refused else None
    return [
        outcomes.get(m["message_id"])
        or Outcome(
            m["message_id"],
            "deferred",
            tries.get(m["message_id"], 0),
            last_error=refused,
            defer_seconds=window.wait_asked,
        )  # fmt: skip
        for m in messages
    ]


def send_emails(messages: list[dict], client, queue_url: str, campaign_name: str, pace: Pace) -> list[Outcome]:
    """Queue `messages` (wave_messages rows as dicts) and return one outcome per message."""
    if not messages:
        return []
    return asyncio.run(send_emails_async(messages, client, queue_url, campaign_name, pace))


AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def driver_aws_settings() -> tuple[tuple[str, str], ...]:
    """AWS_* variables set on the driver. Tasks run in processes started with the cluster (local
    mode: when the session started), so a local queue endpoint or keys set later reach them only
    this way; on a cluster with instance roles none are set and the tasks use their own."""
    import os

    return tuple((k, os.environ[k]) for k in AWS_SETTINGS if os.environ.get(k))


def aws_arguments(settings: tuple[tuple[str, str], ...]) -> dict:
    names = {"AWS_ENDPOINT_URL": "endpoint_url", "AWS_ACCESS_KEY_ID": "aws_access_key_id",
             "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key", "AWS_SESSION_TOKEN": "aws_session_token"}  # fmt: skip
    return {names[k]: v for k, v in settings}


# ---------------------------------------------------------------- the channel
def _too_long(campaign, subject, text, segments):
    from pyspark.sql import functions as F

    limit = campaign.messages.max_email_bytes
    size = F.coalesce(F.octet_length(subject), F.lit(0)) + F.coalesce(F.octet_length(text), F.lit(0))
    return F.when(
        size > limit,
        F.concat(
            F.lit("email of "), size.cast("string"), F.lit(f" bytes, more than messages.max_email_bytes ({limit})")
        ),
    )


def _has_email(campaign):
    from pyspark.sql import functions as F

    return F.col("email").isNotNull()


def queue_problem(env, timeout: float) -> tuple[str | None, bool]:
    """(why the queue does not answer or None, whether it is a FIFO queue)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = sqs_client(env.aws_region, timeout=timeout)
        attributes = client.get_queue_attributes(QueueUrl=env.email_queue_url, AttributeNames=["FifoQueue"])
    except (BotoCoreError, ClientError) as exc:
        return f"the email queue {env.email_queue_url} does not answer ({type(exc).__name__}: {str(exc)[:160]})", False
    return None, attributes.get("Attributes", {}).get("FifoQueue") == "true"


def _preflight(env, timeout: float) -> tuple[list[str], dict]:
    """The queue URL is set and SQS answers `GetQueueAttributes` for it."""
    if not env.email_queue_url:
        return [f"environment {env.name} sets no email_queue_url"], {}
    problem, fifo = queue_problem(env, timeout)
    return ([problem] if problem else []), {"fifo": fifo}


async def _send(sending) -> list[Outcome]:
    s = sending.senders
    return await send_emails_async(
        sending.messages, sending.client, s.queue_url, s.campaign_name, s.pace, sending.gate, sending.spacing, sending.window,
        s.email_groups,
    )  # fmt: skip


EMAIL = Channel(
    name="email",
    label="email",
    plural="emails",
    recipient="email",
    reachable=_has_email,
    text_template="email_body",
    subject_template="email_subject",
    too_long=_too_long,
    preflight=_preflight,
    send=_send,
    connect=lambda s: sqs_client(s.region, timeout=s.pace.timeout_seconds, **aws_arguments(s.aws)),
    mask=mask_email,
    export_folder="email",
    export_one_per_address=True,
)
