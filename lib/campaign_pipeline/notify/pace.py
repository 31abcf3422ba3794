"""How fast and how hard the notifier sends: the campaign-wide limits and one task's share of them."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Pace:
    max_in_flight: int = 200  # requests at once, per campaign, across the cluster
    rate_per_second: float = 200.0  # request starts per second, per campaign, across the cluster
    max_attempts: int = 5  # per message: the first try and the retries
    timeout_seconds: float = 10.0  # per request
    backoff_seconds: float = 0.5  # first retry wait (doubles, with jitter)
    backoff_max_seconds: float = 30.0

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
        runs at once and the shares add up to the limits), none tiny."""
        return max(1, min(math.ceil(messages / per_task_minimum), slots, self.max_in_flight))
