"""What every channel's sender shares: a message's `Outcome` (sent, failed, or deferred to a later
run), the errors a send attempt ends in (retryable, permanent, refused credentials, not started
before the window closed), the gateway's `Retry-After` and the retry loop (`with_retries`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from dataclasses import dataclass

from campaign_pipeline.channels.pace import Pace, Window


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


async def each_message(messages: list[dict], send, workers: int) -> list:
    """`send(message, waiting)` for every message, results in the messages' order, each message its
    own asyncio task, started by one of `workers` workers as it gets to it: a chunk's first request
    goes out at once (one task per message created up front made it wait for every task's first
    step, about 0.1 s per 5,000 messages). A message that must wait before a retry (a backoff, a
    `Retry-After`) calls `waiting()`: its worker moves on to the next message while it waits, so
    waits never hold up the others. A send that raises stops everything at once: no further message
    is started, those under way are cancelled, and the error is raised."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task] = []
    queue = iter(range(len(messages)))
    try:
        async with asyncio.TaskGroup() as group:  # the first failure cancels every other task

            async def worker() -> None:
                for i in queue:  # one shared iterator: each message is started by one worker
                    released = loop.create_future()

                    def waiting(released=released) -> None:
                        if not released.done():
                            released.set_result(None)

                    task = group.create_task(send(messages[i], waiting))
                    tasks.append(task)
                    await asyncio.wait({task, released}, return_when=asyncio.FIRST_COMPLETED)

            for _ in range(max(1, min(workers, len(messages)))):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


async def with_retries(send_once, message_id: str, pace: Pace, window: Window, waiting=None) -> Outcome:
    """Attempt `send_once()` (→ provider id) until it is accepted, fails for good, runs out of
    attempts, or must wait past the window or past the Retry-After ceiling (deferred). `waiting()`,
    if given, is called before each wait for a retry (`each_message` starts the next message)."""
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
            if waiting is not None:
                waiting()
            await asyncio.sleep(wait)
