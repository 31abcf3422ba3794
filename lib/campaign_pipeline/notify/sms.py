"""SMS through the gateway: `POST {sms_url}/messages` at a bounded pace, retried on transient errors.

One call of `send_sms` sends one batch of messages (what one Spark task holds) with asyncio and
aiohttp: at most `pace.max_in_flight` requests at once (an asyncio semaphore and the connection
pool) and at most `pace.rate_per_second` request starts per second (`pace.Spacing`); a request
takes its in-flight slot before its turn to start. Each message is attempted up to
`pace.max_attempts` times: 429, 5xx, connection errors and timeouts are retried after the
gateway's `Retry-After` (up to `pace.retry_after_max_seconds`; a longer one defers the message,
and every message of the task not yet started, to a later run: no outcome, no attempt spent) or
else with exponential backoff and jitter; any other 4xx fails the message at once with the status
and the gateway's error text (personal data and the message's code masked). No request starts
after the task's window closes (`pace.Window`: the lease time it was given): such messages are
`deferred` too. Every request carries `Idempotency-Key: <message_id>`, so a message re-sent after a
crash is delivered once by a gateway that honours the key, and `X-Sender-Run: <run id>`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from dataclasses import dataclass

from campaign_pipeline.notify.pace import Pace, Window, limits
from campaign_pipeline.privacy import scrub


class Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(Exception):
    pass


class NotStarted(Exception):
    """The task's window closed while the request waited for its slot or its turn."""


class Refused(Exception):
    """The gateway refused our credentials (401/403): no message can be sent until they change."""


REFUSED = "refused: "  # how a deferred outcome says the gateway refused the token


@dataclass
class Outcome:
    message_id: str
    status: str  # sent | failed | deferred (no outcome recorded: a later run sends it)
    attempts: int
    provider_id: str | None = None
    last_error: str | None = None
    sent_at: dt.datetime | None = None
    defer_seconds: float | None = None  # deferred because the gateway asked to wait this long


MAX_PAUSE_SECONDS = 3600.0  # a longer Retry-After (a gateway's bug, or year 9999) counts as an hour


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), at most `MAX_PAUSE_SECONDS`; None
    when absent or unreadable (not a number, not finite, not a date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            when = parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_PAUSE_SECONDS, max(0.0, seconds))


async def with_retries(send_once, message_id: str, pace: Pace, window: Window) -> Outcome:
    """Attempt `send_once()` (→ provider id) until it is accepted, fails for good, runs out of
    attempts, or must wait past the window or past the Retry-After ceiling (deferred)."""
    tries = 0
    while True:
        if not window.open():
            refused = REFUSED + window.refused if window.refused else None
            return Outcome(message_id, "deferred", tries, last_error=refused, defer_seconds=window.wait_asked)
        tries += 1
        try:
            provider_id = await send_once()
            return Outcome(message_id, "sent", tries, provider_id, None, dt.datetime.now(dt.UTC))
        except NotStarted:
            return Outcome(message_id, "deferred", tries - 1, defer_seconds=window.wait_asked)
        except Permanent as exc:
            return Outcome(message_id, "failed", tries, None, str(exc))
        except Refused as exc:  # no message can go out with this token: stop, fail nothing
            window.refuse(str(exc))
            return Outcome(message_id, "deferred", tries - 1, last_error=REFUSED + str(exc))
        except Retryable as exc:
            if exc.retry_after is not None and exc.retry_after > pace.retry_after_max_seconds:
                window.ask_wait(exc.retry_after)  # the gateway wants a pause: the task stops starting
                return Outcome(message_id, "deferred", tries, last_error=str(exc), defer_seconds=exc.retry_after)
            if tries >= pace.max_attempts:
                return Outcome(message_id, "failed", tries, None, f"gave up after {tries} attempts: {exc}")
            wait = exc.retry_after if exc.retry_after is not None else pace.backoff(tries)
            if not window.fits(wait):  # past this task's lease time: a later pass sends it, after the wait
                return Outcome(message_id, "deferred", tries, last_error=str(exc), defer_seconds=exc.retry_after)
            await asyncio.sleep(wait)


def payload(message: dict) -> dict:
    return {
        "to": message["recipient"],
        "text": message["text"],
        "message_id": message["message_id"],
        "group_id": f"{message['campaign_id']}/{message['wave_id']}",
        "metadata": {
            "campaign_id": message["campaign_id"],
            "wave_id": message["wave_id"],
            "market_id": message["market_id"],
        },
    }


async def send_sms_async(
    messages: list[dict],
    url: str,
    token: str | None,
    pace: Pace,
    gate=None,
    spacing=None,
    window: Window | None = None,
    run_id: str | None = None,
) -> list[Outcome]:
    import aiohttp

    if gate is None or spacing is None:
        gate, spacing = limits(pace)
    window = window or Window()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if run_id:
        headers["X-Sender-Run"] = run_id
    timeout = aiohttp.ClientTimeout(total=pace.timeout_seconds)
    connector = aiohttp.TCPConnector(limit=pace.max_in_flight)
    endpoint = url.rstrip("/") + "/messages"

    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        def attempt(message: dict):
            hide = (message.get("code"),)

            async def once() -> str | None:
                async with gate:
                    await spacing.acquire()
                    if not window.open():
                        raise NotStarted
                    try:
                        async with session.post(
                            endpoint, json=payload(message), headers={"Idempotency-Key": message["message_id"]}
                        ) as resp:
                            body = await resp.text()
                            if 200 <= resp.status < 300:
                                try:
                                    data = await resp.json(content_type=None)
                                except ValueError:
                                    data = None
                                return str(data.get("id")) if isinstance(data, dict) and data.get("id") else None
                            if resp.status == 429 or resp.status >= 500:
                                raise Retryable(
                                    f"HTTP {resp.status}: {scrub(body, hide=hide)}",
                                    retry_after_seconds(resp.headers.get("Retry-After")),
                                )
                            if resp.status in (401, 403):
                                raise Refused(f"HTTP {resp.status}: {scrub(body, hide=hide)}")
                            raise Permanent(f"HTTP {resp.status}: {scrub(body, hide=hide)}")
                    except TimeoutError:
                        raise Retryable(f"TimeoutError after {pace.timeout_seconds:g} s") from None
                    except aiohttp.ClientError as exc:
                        raise Retryable(type(exc).__name__) from None

            return once

        return list(await asyncio.gather(*(with_retries(attempt(m), m["message_id"], pace, window) for m in messages)))


def send_sms(
    messages: list[dict], url: str, token: str | None, pace: Pace, window: Window | None = None
) -> list[Outcome]:
    """Send `messages` (wave_messages rows as dicts) and return one outcome per message."""
    if not messages:
        return []
    return asyncio.run(send_sms_async(messages, url, token, pace, window=window))
