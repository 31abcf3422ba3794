"""SMS through the gateway: `POST {sms_url}/messages` at a bounded pace, retried on transient errors.

One call of `send_sms` sends one batch of messages (what one Spark task holds) with asyncio and
aiohttp: at most `pace.max_in_flight` requests at once (an asyncio semaphore and the connection
pool) and at most `pace.rate_per_second` request starts per second (aiolimiter). Each message is
attempted up to `pace.max_attempts` times (tenacity): 429 (waiting `Retry-After` when given), 5xx,
connection errors and timeouts are retried with exponential backoff and jitter; any other 4xx fails
the message at once with the status and the gateway's error text (personal data masked). Every
request carries `Idempotency-Key: <message_id>`, so a message re-sent after a crash is delivered
once by a gateway that honours the key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from campaign_pipeline.notify.pace import Pace
from campaign_pipeline.privacy import scrub


class Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(Exception):
    pass


@dataclass
class Outcome:
    message_id: str
    status: str  # sent | failed
    attempts: int
    provider_id: str | None = None
    last_error: str | None = None
    sent_at: dt.datetime | None = None


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _wait(pace: Pace):
    """tenacity wait: the gateway's Retry-After when it gave one, else exponential backoff with jitter."""
    from tenacity import wait_exponential_jitter

    backoff = wait_exponential_jitter(multiplier=pace.backoff_seconds, max=pace.backoff_max_seconds)

    def wait(state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, pace.backoff_max_seconds)
        return backoff(state)

    return wait


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


def limits(pace: Pace):
    """The in-flight gate and the rate limiter one task's requests share (both channels)."""
    from aiolimiter import AsyncLimiter

    return asyncio.Semaphore(pace.max_in_flight), AsyncLimiter(pace.rate_per_second, 1)


async def send_sms_async(
    messages: list[dict], url: str, token: str | None, pace: Pace, gate=None, limiter=None
) -> list[Outcome]:
    import aiohttp
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

    if gate is None or limiter is None:
        gate, limiter = limits(pace)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=pace.timeout_seconds)
    connector = aiohttp.TCPConnector(limit=pace.max_in_flight)
    endpoint = url.rstrip("/") + "/messages"

    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        async def attempt(message: dict) -> str | None:
            await limiter.acquire()
            async with gate:
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
                                f"HTTP {resp.status}: {scrub(body)}",
                                retry_after_seconds(resp.headers.get("Retry-After")),
                            )
                        raise Permanent(f"HTTP {resp.status}: {scrub(body)}")
                except TimeoutError:
                    raise Retryable(f"TimeoutError after {pace.timeout_seconds:g} s") from None
                except aiohttp.ClientError as exc:
                    raise Retryable(type(exc).__name__) from None

        policy = {"stop": stop_after_attempt(pace.max_attempts), "retry": retry_if_exception_type(Retryable),
                  "wait": _wait(pace), "reraise": True}  # fmt: skip

        async def one(message: dict) -> Outcome:
            # The first attempt runs bare: most messages need no other, and tenacity's machinery
            # costs about as much CPU per message as the request. A first attempt that fails
            # retryably is handed to tenacity as its own attempt 1 (waits and counts unchanged).
            tries = 1
            try:
                try:
                    provider_id = await attempt(message)
                except Retryable as first_failure:
                    async for state in AsyncRetrying(**policy):
                        with state:
                            tries = state.retry_state.attempt_number
                            if tries == 1:
                                raise first_failure
                            provider_id = await attempt(message)
                return Outcome(message["message_id"], "sent", tries, provider_id, None, dt.datetime.now(dt.UTC))
            except Retryable as exc:
                return Outcome(message["message_id"], "failed", tries, None, f"gave up after {tries} attempts: {exc}")
            except Permanent as exc:
                return Outcome(message["message_id"], "failed", tries, None, str(exc))

        return list(await asyncio.gather(*(one(m) for m in messages)))


def send_sms(messages: list[dict], url: str, token: str | None, pace: Pace) -> list[Outcome]:
    """Send `messages` (wave_messages rows as dicts) and return one outcome per message."""
    if not messages:
        return []
    return asyncio.run(send_sms_async(messages, url, token, pace))
