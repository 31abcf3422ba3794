"""The channels a fan can be reached on, in priority order: the one extension point for a new one.

A channel is one `Channel` value (`base.py`): who is reachable, where its message goes, which
template fields it renders, what is too long, what must be ready before a wave is sent, how a
task sends its messages, how the export and the suites treat it. SMS (`sms.py`) comes before email
(`email.py`): a wave's `auto` rule gives a fan the first channel he is reachable on; `both` gives
him every one. Adding a channel is writing its module and one `register` call; the `waves` table
gets a count column named after it (added to an existing table on the next write).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from campaign_pipeline.channels.base import Channel, Sending
from campaign_pipeline.channels.email import EMAIL
from campaign_pipeline.channels.sms import SMS

__all__ = ["Channel", "Sending", "all_channels", "channel", "names", "register", "registered"]

_CHANNELS: dict[str, Channel] = {}
_LISTENERS: list[Callable[[], None]] = []


# `waves` columns a channel's count column may not take
RESERVED = frozenset({"campaign_id", "wave_id", "notify_at", "status", "attempts", "total", "sent", "failed",
                      "skipped", "planned_at", "run_id", "counts", "sending_at", "finished_at", "lease_until",
                      "deferred_until", "planning_run", "planning_until", "auto", "both", "none"})  # fmt: skip


def register(new: Channel, first: bool = False) -> None:
    """Add a channel (last in priority, or first). Its name becomes a value of
    `wave_messages.channel` and a `waves` column: lower-case letters, digits and `_`, new, and
    not one of the `waves` columns or wave rules. Once a warehouse has planned messages on it, its
    `waves` column stays: every process writing that warehouse must register it too."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", new.name) or new.name in RESERVED:
        raise ValueError(f"channel name {new.name!r}: lower-case letters, digits and _, not {sorted(RESERVED)}")
    if new.name in _CHANNELS:
        raise ValueError(f"channel {new.name!r} is already registered")
    if new.send is None:
        raise ValueError(f"channel {new.name!r} has no sender (`send`)")
    items = [(new.name, new), *_CHANNELS.items()] if first else [*_CHANNELS.items(), (new.name, new)]
    _CHANNELS.clear()
    _CHANNELS.update(items)
    for listener in _LISTENERS:
        listener()


def unregister(name: str) -> None:
    _CHANNELS.pop(name, None)
    for listener in _LISTENERS:
        listener()


@contextmanager
def registered(new: Channel, first: bool = False) -> Iterator[Channel]:
    """A channel registered for the duration of a block (tests, experiments)."""
    register(new, first)
    try:
        yield new
    finally:
        unregister(new.name)


def on_change(listener: Callable[[], None]) -> None:
    """Call `listener` whenever the registry changes (the catalog rebuilds the tables that name channels)."""
    _LISTENERS.append(listener)


def all_channels() -> list[Channel]:
    return list(_CHANNELS.values())


def names() -> list[str]:
    return list(_CHANNELS)


def channel(name: str) -> Channel:
    try:
        return _CHANNELS[name]
    except KeyError:
        raise KeyError(f"unknown channel {name!r}; known channels: {', '.join(_CHANNELS)}") from None


register(SMS)
register(EMAIL)
