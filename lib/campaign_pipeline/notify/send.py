"""What one Spark task runs: send its share of a chunk's messages, both channels, and return outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from campaign_pipeline.notify.pace import Pace

OUTCOME_SCHEMA = (
    "campaign_id string, message_id string, wave_id string, channel string, status string, attempts int, "
    "provider_id string, last_error string, sent_at timestamp, defer_seconds double"
)


@dataclass(frozen=True)
class Senders:
    """Everything a task needs to send; pickled into the task (the token never enters a plan)."""

    pace: Pace  # this task's share of the campaign-wide limits
    sms_url: str | None
    sms_token: str | None
    queue_url: str | None
    region: str | None
    campaign_name: str
    aws: tuple[tuple[str, str], ...] = ()  # the driver's AWS_* settings, for tasks whose process lacks them
    run_id: str | None = None  # sent as `X-Sender-Run`, so a gateway's logs show which run sent what
    send_until: float | None = None  # seconds since the epoch: no request starts after it (the lease)
    email_groups: int = 64  # FIFO message groups per wave


AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def driver_aws_settings() -> tuple[tuple[str, str], ...]:
    """AWS_* variables set on the driver. Tasks run in processes started with the cluster (local
    mode: when the session started), so a local queue endpoint or keys set later reach them only
    this way; on a cluster with instance roles none are set and the tasks use their own."""
    import os

    return tuple((k, os.environ[k]) for k in AWS_SETTINGS if os.environ.get(k))


def send_messages(messages: list[dict], senders: Senders) -> list[dict]:
    """Send SMS and emails concurrently under one in-flight gate, one start spacing and one window.
    Outcomes: `sent`, `failed`, or `deferred` (not started before the window closed, or the gateway
    asked for a longer pause than `retry_after_max_seconds`: a later run sends it)."""
    from campaign_pipeline.notify.email import send_emails_async, sqs_client
    from campaign_pipeline.notify.pace import Window, limits
    from campaign_pipeline.notify.sms import send_sms_async

    async def main():
        gate, spacing = limits(senders.pace)
        window = Window(senders.send_until)
        sms = [m for m in messages if m["channel"] == "sms"]
        email = [m for m in messages if m["channel"] == "email"]
        jobs = []
        if sms:
            jobs.append(
                send_sms_async(sms, senders.sms_url, senders.sms_token, senders.pace, gate, spacing, window,
                               senders.run_id)
            )  # fmt: skip
        if email:
            client = sqs_client(senders.region, timeout=senders.pace.timeout_seconds, **aws_arguments(senders.aws))
            jobs.append(
                send_emails_async(email, client, senders.queue_url, senders.campaign_name, senders.pace, gate,
                                  spacing, window, senders.email_groups)
            )  # fmt: skip
        return [o for group in await asyncio.gather(*jobs) for o in group]

    by_id = {m["message_id"]: m for m in messages}
    outcomes = asyncio.run(main()) if messages else []
    return [
        {
            "campaign_id": by_id[o.message_id]["campaign_id"],
            "message_id": o.message_id,
            "wave_id": by_id[o.message_id]["wave_id"],
            "channel": by_id[o.message_id]["channel"],
            "status": o.status,
            "attempts": o.attempts,
            "provider_id": o.provider_id,
            "last_error": o.last_error,
            "sent_at": o.sent_at,
            "defer_seconds": o.defer_seconds,
        }
        for o in outcomes
    ]


def aws_arguments(settings: tuple[tuple[str, str], ...]) -> dict:
    names = {"AWS_ENDPOINT_URL": "endpoint_url", "AWS_ACCESS_KEY_ID": "aws_access_key_id",
             "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key", "AWS_SESSION_TOKEN": "aws_session_token"}  # fmt: skip
    return {names[k]: v for k, v in settings}


def partition_sender(senders: Senders):
    """A `mapInPandas` function: the task's messages in, one outcome row per message out."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = [b for b in batches if len(b)]
        if not frames:
            return
        rows = pd.concat(frames).to_dict("records")
        rows = [{k: (None if v is pd.NaT else v) for k, v in r.items()} for r in rows]
        out = pd.DataFrame(send_messages(rows, senders))
        out["attempts"] = out["attempts"].astype("int32")
        out["sent_at"] = pd.to_datetime(out["sent_at"], utc=True)
        out["defer_seconds"] = out["defer_seconds"].astype("float64")
        yield out

    return run
