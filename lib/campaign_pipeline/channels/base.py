"""`Channel`: everything the pipeline knows about one way of reaching a fan, in one value.

plan_waves asks it who is reachable, where the message goes, which template fields it renders and
what makes a message too long; notify asks it what must be ready before a wave is taken and how
its messages are sent; the suites ask it the rule every message keeps; the legacy export asks it
where its messages go in the zip. `channels/__init__.py` holds the registry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column

    from campaign_pipeline.channels.delivery import Outcome
    from campaign_pipeline.config import Campaign


@dataclass(frozen=True)
class Sending:
    """What a task's sender is given: the messages of its channel (wave_messages rows as dicts),
    the task's `Senders` (pace, endpoints, what preflight found) and the shared limits (in-flight
    gate, start spacing, the lease's window)."""

    messages: list[dict]
    senders: Any  # notify.send.Senders (`senders.facts`: what the channels' preflight found)
    gate: Any
    spacing: Any
    window: Any
    client: Any = None  # what the channel's `connect` made before any message of the task was sent


@dataclass(frozen=True)
class Channel:
    name: str  # the value of `wave_messages.channel` and of the `waves` count column
    label: str  # how its messages are counted in a line a user reads ("1,200 SMS", "310 email")
    recipient: str  # the contact column of a coded wave member its messages go to
    # over coded wave members (registrants' contact columns): can this fan get a message on it
    reachable: Callable[[Campaign], Column]
    text_template: str  # the template field its text is rendered from (`messages.templates.<locale>.<field>`)
    subject_template: str | None = None  # a subject's template field, when its messages have one
    counts_segments: bool = False  # SMS: the text's GSM-7 / UCS-2 segments are counted
    # (campaign, subject, text, segments) → why a rendered message is too long to send, else null
    too_long: Callable[[Campaign, Column, Column, Column], Column] | None = None
    # (expectation column, (campaign) → condition every message on it keeps), for the wave_messages suite
    rule: tuple[str, Callable[[Campaign], Column]] | None = None
    # (environment, timeout) → (problems, facts for the senders): can a wave be sent on it at all
    preflight: Callable[[Any, float], tuple[list[str], dict[str, Any]]] | None = None
    send: Callable[[Sending], Awaitable[list[Outcome]]] | None = None  # runs in the Spark task
    # (senders) → a client for `send` (the SQS client), made in the task before any channel sends,
    # outside the event loop: a failure there fails the task before anything was sent
    connect: Callable[[Any], Any] | None = None
    mask: Callable[[str | None], str | None] = lambda value: None if value is None else "***"
    export_folder: str | None = None  # its folder in the legacy zip (None: not exported)
    export_one_per_address: bool = False  # one row per recipient address and market (emails)
    plural: str = ""  # "would send 25 emails" (default: the label)

    @property
    def many(self) -> str:
        return self.plural or self.label
