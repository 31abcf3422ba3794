"""How fast and how hard the notifier sends: the campaign-wide limits, one task's share of them, and
the asyncio pieces one task's requests go through (an in-flight gate, then start spacing).

The limits hold at any setting (`rate_per_second` from 0.1, `max_in_flight` from 1) on any number
of task slots: a chunk is split over at most as many tasks as there are whole requests per second
and requests in flight, so every task's share is at least one request per second and one in
flight. Within a task a request first takes an in-flight slot, then waits its turn to start
(`Spacing`: slots 1 / rate apart, never more than the share in any one-second window): starts
never bunch up behind a stalled gateway.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Pace:
    max_in_flight: int = 200  # requests at once, per campaign, across the cluster
    rate_per_second: float = 200.0  # request starts per second, per campaign, across the cluster
    max_attempts: int = 5  # per message: the first try and the retries
    timeout_seconds: float = 10.0  # per request
    backoff_seconds: float = 0.5  # first retry wait (doubles, with jitter)
    backoff_max_seconds: float = 30.0
    retry_after_max_seconds: float = 120.0  # a longer Retry-After defers the message to a later run

    def share(self, tasks: int) -> Pace:
        """One of `tasks` concurrent tasks' share: the limits divided so that together they hold."""
        tasks = max(1, tasks)
        return replace(
            self,
            max_in_flight=max(1, self.max_in_flight // tasks),
            rate_per_second=self.rate_per_second / tasks,
        )

    def tasks_for(self, messages: int, slots: int, per_task_minimum: int = 50) -> int:
        """How many tasks to split `messages` over: at most the cluster's task slots (so every task
        runs at once and the shares add up to the limits), none tiny, and never more than the
        whole requests per second or in flight (each share at least 1/s and one request)."""
        per_second = max(1, math.floor(self.rate_per_second))
        return max(1, min(math.ceil(messages / per_task_minimum), slots, self.max_in_flight, per_second))

    def backoff(self, attempt: int) -> float:
        """The wait before retry `attempt` + 1: exponential from `backoff_seconds`, at most
        `backoff_max_seconds`, with jitter (so retries of many messages do not arrive together)."""
        wait = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, attempt - 1))
        return wait * (0.5 + random.random() / 2)


class Spacing:
    """Request starts at `rate` per second, without drift and without bursts.

    Each start has a slot 1 / rate after the previous one. Counting from the slot rather than from
    when the sleep returned keeps the event loop's small lateness from adding up (a 5 ms interval
    slept as 6 ms would send 170 a second instead of 200): the start after one that woke late
    keeps its planned slot (or goes at once if that has passed), so lateness of up to an interval
    is not lost. A start later than `catch_up` (half an interval, or 50 ms where that is more)
    re-anchors the next slot on it, so no tokens accumulate while nothing is sent (a stalled
    gateway, a busy loop). And whatever the jitter, no one-second window of actual starts holds
    more than `per_second`: the rate rounded down, plus 2 % from 50/s (at 200/s, 204; the rest of
    the tests' allowance is left for the network's jitter). A chunk's task continues from the
    previous chunk's (`after`), so the bound also holds across the two."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        # at least one: below 1/s a start that woke late must still not bring the next within a second
        self.per_second = max(1, math.floor(rate) + (math.floor(rate * 0.02) if rate >= 50 else 0))
        self.catch_up = max(self.interval / 2, 0.05)
        self._next = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=max(1, self.per_second))
        self._lock = asyncio.Lock()

    def after(self, seconds_ago: float | None) -> Spacing:
        """Continue from an earlier batch of this share's starts that ended `seconds_ago` seconds
        before this task was made (measured on the driver, one clock: the time the task took to
        reach its executor only makes the end look later than it was, the safe side). Its starts
        count as if they had filled the second before it at this rate, so the first start here
        comes one interval after it and no one-second window spanning the two holds more than the
        share."""
        if seconds_ago is None:
            return self
        end = asyncio.get_running_loop().time() - max(0.0, seconds_ago)
        self._next = max(self._next, end + self.interval)
        self._recent.extend(end - j * self.interval for j in reversed(range(self._recent.maxlen or 1)))
        return self

    async def acquire(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            planned = self._next  # this start's slot (0 before the first)
            start = max(planned, loop.time())
            if self.per_second and len(self._recent) == self.per_second:
                start = max(start, self._recent[0] + 1.0)
            wait = start - loop.time()
            while wait > 0:
                await asyncio.sleep(wait)
                wait = start - loop.time()
            woke = loop.time()
            # Late by up to `catch_up` — woken late, or asked late (the caller busy) — keeps the
            # slot; later than that re-anchors on now.
            self._next = (planned if planned and woke - planned <= self.catch_up else woke) + self.interval
            self._recent.append(woke)


class Window:
    """When one task may start requests: not after the lease time it was given (`until`, seconds
    since the epoch), and not after the gateway asked it to wait longer than
    `retry_after_max_seconds` (then the rest of its messages are deferred to a later run)."""

    def __init__(self, until: float | None = None):
        self.until = until
        self.wait_asked: float | None = None  # seconds the gateway asked for, beyond the ceiling
        self.refused: str | None = None  # the gateway refused our credentials (401/403)

    def open(self) -> bool:
        return self.wait_asked is None and self.refused is None and (self.until is None or time.time() < self.until)

    def refuse(self, reason: str) -> None:
        self.refused = self.refused or reason

    def fits(self, wait: float) -> bool:
        """Whether a retry after `wait` seconds would still start inside the window."""
        return self.until is None or time.time() + wait < self.until

    def ask_wait(self, seconds: float) -> None:
        self.wait_asked = max(self.wait_asked or 0.0, seconds)


def limits(pace: Pace):
    """The in-flight gate and the start spacing one task's requests share (both channels)."""
    return asyncio.Semaphore(pace.max_in_flight), Spacing(pace.rate_per_second)
