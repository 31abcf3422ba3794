"""Before a wave is taken: can it be sent at all? One clear error instead of a wave of failures.

Checked for the channels the wave still has messages on, by each channel's own preflight
(`channels`): SMS → the gateway URL is set, the SMS token has a value (its variable or its
Secrets Manager reference), and the gateway answers HTTP (any status: only a refused or timed-out
connection fails); email → the queue URL is set and SQS answers `GetQueueAttributes` for it. A
failure raises `PreflightError` naming every problem; the wave has not been claimed, so it stays as
it was and no attempt of it is spent.
"""

from __future__ import annotations

from typing import Any

from campaign_pipeline.channels import all_channels
from campaign_pipeline.errors import PreflightError


def preflight(env, wave_id: str, channels: set[str]) -> dict[str, Any]:
    """What the wave's channels' senders need (the SMS token, whether the queue is FIFO), or
    `PreflightError` unless every channel in `channels` can be sent."""
    problems: list[str] = []
    ready: dict[str, Any] = {}
    timeout = env.notify.preflight_timeout_seconds
    for ch in all_channels():
        if ch.name in channels and ch.preflight is not None:
            found, facts = ch.preflight(env, timeout)
            problems += found
            ready.update(facts)
    if problems:
        raise PreflightError(
            f"notify: {wave_id} cannot be sent, so it was not taken (it stays as it was, no attempt spent): "
            + "; ".join(problems)
        )
    return ready
