"""What one Spark task runs: send its share of a chunk's messages, on every channel, and return outcomes."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from campaign_pipeline.channels import Channel, Sending, all_channels
from campaign_pipeline.channels.pace import Pace, Window, limits
from campaign_pipeline.python_workers import keep_zip_directories

OUTCOME_SCHEMA = pa.schema([
    ("campaign_id", pa.string()), ("message_id", pa.string()), ("wave_id", pa.string()), ("channel", pa.string()),
    ("status", pa.string()), ("attempts", pa.int32()), ("provider_id", pa.string()), ("last_error", pa.string()),
    ("sent_at", pa.timestamp("us", tz="UTC")), ("defer_seconds", pa.float64()),
])  # fmt: skip


@dataclass(frozen=True)
class Senders:
    """Everything a task needs to send; pickled into the task (the token never enters a plan)."""

    pace: Pace  # this task's share of the campaign-wide limits
    sms_url: str | None
    sms_token: str | None = field(repr=False)
    queue_url: str | None
    region: str | None
    campaign_name: str
    aws: tuple[tuple[str, str], ...] = ()  # the driver's AWS_* settings, for tasks whose process lacks them
    run_id: str | None = None  # sent as `X-Sender-Run`, so a gateway's logs show which run sent what
    send_until: float | None = None  # seconds since the epoch: no request starts after it (the lease)
    after: float | None = None  # seconds before these senders were made that the previous chunk's starts ended
    email_groups: int = 64  # FIFO message groups per wave
    facts: tuple[tuple[str, object], ...] = field(default=(), repr=False)  # what the channels' preflight found
    # the registry's channels when the senders were made (on the driver), carried into the task
    channels: tuple[Channel, ...] = field(default_factory=lambda: tuple(all_channels()))


def send_messages(messages: list[dict], senders: Senders) -> list[dict]:
    """Send the task's messages, every channel concurrently under one in-flight gate, one start
    spacing and one window; each channel's own sender (`channels`) sends its messages. Outcomes:
    `sent`, `failed`, or `deferred` (not started before the window closed, or the gateway asked for
    a longer pause than `retry_after_max_seconds`: a later run sends it)."""

    present = {m["channel"] for m in messages}
    clients = {c.name: c.connect(senders) for c in senders.channels if c.connect is not None and c.name in present}

    async def main():
        gate, spacing = limits(senders.pace)
        spacing.after(senders.after)
        window = Window(senders.send_until)
        jobs = []
        for ch in senders.channels:
            mine = [m for m in messages if m["channel"] == ch.name]
            if mine:
                jobs.append(ch.send(Sending(mine, senders, gate, spacing, window, clients.get(ch.name))))
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


EPOCH = dt.datetime(1970, 1, 1)


def chunk_sender(senders: Senders, timestamps: tuple[str, ...] = ()):
    """The function one task of a chunk runs over its partition's messages (`Row`s whose
    `timestamps` columns come as microseconds since the epoch: a `Row` would otherwise carry the
    worker's local time); yields one outcome per message (`OUTCOME_SCHEMA`'s fields)."""

    def run(rows: Iterable) -> Iterator[dict]:
        keep_zip_directories()  # the worker's next chunks start faster
        messages = []
        for row in rows:
            m = row.asDict()
            for name in timestamps:  # as the gateway saw them before: naive UTC
                if m[name] is not None:
                    m[name] = EPOCH + dt.timedelta(microseconds=m[name])
            messages.append(m)
        if messages:
            yield from send_messages(messages, senders)

    return run
