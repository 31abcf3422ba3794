"""One sender per wave: claiming a wave, holding it while sending, letting it go.

A notify run sends a wave only while it holds the wave's lease, recorded in the wave's `waves` row
(`status = 'sending'`, `run_id` = the holder, `lease_until`). Taking a wave is a conditional Delta
`UPDATE` whose condition is the row as the run just read it (status, holder and lease) and that
no plan_waves run is re-planning it: of two runs that read the same row, exactly one changes it
(the other changes no row, or gets Delta's conflict error when both commit at once) and the loser
re-reads the row and says who holds the wave.

The holder renews the lease from a thread of its own every `lease_seconds / 4` (before a chunk
only when what is left of the lease is too short for the chunk: the keeper renews meanwhile, so a
chunk does not wait for a Delta commit); a renewal is again conditional (still `sending`, still
this run). It stops sending when a renewal finds another holder, and also when it has not managed
to renew for long enough that its lease is within `lease_seconds / 3` of running out (a writer
that cannot reach the table must not outlive its lease). The sending tasks themselves start no
request after the lease time they were given, so even a stalled driver cannot send past it.
Another run takes the wave over only once `lease_until` has passed on its own clock: clocks of the
machines that run notify must agree to well within `lease_seconds / 3`.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import functions as F

from campaign_pipeline.errors import first_line
from campaign_pipeline.frames import sql_literal
from campaign_pipeline.times import aware, now_utc, ts
from campaign_pipeline.warehouse import Warehouse, is_write_conflict, retry_on_conflict


def read_wave(wh: Warehouse, campaign_id: str, wave_id: str):
    """The wave's `waves` row as it is now (None if it was never planned)."""
    return wh.read("waves", campaign_id).where(F.col("wave_id") == wave_id).first()


def same_row(row) -> str:
    """SQL: the wave's row still holds what `row` held (status, holder, lease, deferral, planner)."""
    parts = [f"status = {sql_literal(row['status'])}", f"run_id = {sql_literal(row['run_id'])}"]
    for column in ("lease_until", "deferred_until", "planning_until"):
        value = aware(row[column])
        parts.append(f"{column} IS NULL" if value is None else f"{column} = {ts(value)}")
    return " AND ".join(parts)


@dataclass
class Claim:
    """What a claim attempt found: the lease when this run won it, else why not."""

    lease: Lease | None
    why: str = ""


def claim(
    wh: Warehouse, campaign_id: str, wave_id: str, row, run_id: str, lease_seconds: float, count_attempt: bool
) -> Claim:
    """Take the wave as `run_id` if its row still is `row` and no planner holds it; exactly one of
    any number of runs doing this at once wins."""
    start = now_utc()
    until = start + dt.timedelta(seconds=lease_seconds)
    values = {
        "status": "'sending'",
        "run_id": sql_literal(run_id),
        "attempts": "coalesce(attempts, 0) + 1" if count_attempt else "coalesce(attempts, 0)",
        "sending_at": ts(start),
        "lease_until": ts(until),
        "deferred_until": "NULL",
        "finished_at": "NULL",
    }
    where = (
        f"wave_id = {sql_literal(wave_id)} AND {same_row(row)} "
        f"AND (planning_until IS NULL OR planning_until < {ts(start)})"
    )
    try:
        changed = wh.update("waves", campaign_id, values, where)
    except Exception as exc:
        if is_write_conflict(wh.spark, exc):
            return Claim(None, "another run changed the wave's row at the same moment")
        raise
    if changed != 1:
        return Claim(None, "the wave's row changed since it was read")
    return Claim(Lease(wh, campaign_id, wave_id, run_id, until, lease_seconds))


class Lease:
    """This run's hold on a wave: renewed as it sends, checked before every chunk."""

    def __init__(self, wh: Warehouse, campaign_id: str, wave_id: str, run_id: str, until, lease_seconds: float):
        self.wh, self.campaign_id, self.wave_id, self.run_id = wh, campaign_id, wave_id, run_id
        self.seconds = lease_seconds
        self.until = until  # the lease as last written by this run
        self.lost: str | None = None  # why this run no longer holds the wave
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._due = threading.Event()  # `refresh` found a renewal due: the keeper renews now
        self._keeper: threading.Thread | None = None

    @property
    def margin(self) -> dt.timedelta:
        """How long before its lease runs out the holder stops on its own (renewals failing)."""
        return dt.timedelta(seconds=self.seconds / 3)

    @property
    def held(self) -> bool:
        return self.lost is None and now_utc() < self.until - self.margin

    def send_until(self) -> dt.datetime:
        """The last moment a sending task may start a request under this lease."""
        return self.until - self.margin

    def _mine(self) -> str:
        return f"wave_id = {sql_literal(self.wave_id)} AND status = 'sending' AND run_id = {sql_literal(self.run_id)}"

    def renew(self) -> bool:
        """Extend the lease if this run still holds the wave; False (and `lost` says why) if not.
        A commit that meets a concurrent one (another wave's claim, a planner) or fails for a
        passing reason is tried again until the lease is within its margin of running out."""
        import random
        import time

        with self._lock:
            while not self.lost:
                start = now_utc()
                until = start + dt.timedelta(seconds=self.seconds)
                try:
                    changed = self.wh.update("waves", self.campaign_id, {"lease_until": ts(until)}, self._mine())
                except Exception as exc:  # noqa: BLE001 - a failed renewal is retried until the margin
                    if now_utc() >= self.until - self.margin:
                        self.lost = f"could not renew its lease in time ({first_line(exc, 200)})"
                        return False
                    time.sleep(0.05 + random.random() * (0.2 if is_write_conflict(self.wh.spark, exc) else 1.0))
                    continue
                if changed != 1:
                    holder = read_wave(self.wh, self.campaign_id, self.wave_id)
                    who = f"run {holder['run_id']} ({holder['status']})" if holder is not None else "nobody"
                    self.lost = f"the wave is now held by {who}"
                    return False
                self.until = until
                return True
            return False

    def refresh(self, need_seconds: float) -> bool:
        """Before a chunk: whether the wave is still held with at least `need_seconds` left to start
        requests in. When it is, a renewal that is due (none within `lease_seconds / 4`) is left to
        the keeper thread, woken now, so the chunk does not wait for a Delta commit; only a lease
        too short for the chunk (a short `lease_seconds`, a slow cluster) is renewed here first."""
        now = now_utc()
        if (self.send_until() - now).total_seconds() >= need_seconds:
            renewed_at = self.until - dt.timedelta(seconds=self.seconds)
            if now >= renewed_at + dt.timedelta(seconds=self._interval):
                self._due.set()
            return self.held
        return self.renew()

    @property
    def _interval(self) -> float:
        return max(0.2, self.seconds / 4)

    def keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew from a thread of its own `lease_seconds / 4` after the last renewal (or at once when
        `refresh` finds one due) until `close`; call `on_lost` (e.g. cancel the sending tasks) as soon as the
        wave is no longer held."""

        def run():
            interval = self._interval
            while not self._stop.is_set():
                # sleep until the renewal is due (or `refresh` finds it due, or `close`): renewals
                # come every `interval` plus a commit's time, never up to half an interval late
                renewed_at = self.until - dt.timedelta(seconds=self.seconds)
                wait = (renewed_at + dt.timedelta(seconds=interval) - now_utc()).total_seconds()
                if wait > 0:
                    self._due.wait(wait)
                    self._due.clear()
                    if self._stop.is_set():
                        return
                    renewed_at = self.until - dt.timedelta(seconds=self.seconds)
                    if now_utc() < renewed_at + dt.timedelta(seconds=interval):
                        continue  # renewed meanwhile (before a chunk)
                self.renew()
                if not self.held:
                    self.lost = self.lost or "its lease came within its margin of running out before it could renew it"
                    on_lost(self.lost)
                    return

        self._keeper = threading.Thread(target=run, name=f"lease-{self.wave_id}", daemon=True)
        self._keeper.start()

    def close(self) -> None:
        self._stop.set()
        self._due.set()
        if self._keeper is not None:
            self._keeper.join()
            self._keeper = None

    def finish(self, values: dict[str, str]) -> bool:
        """Record the wave's end (`values`: column → SQL) and let the lease go, if still held."""
        self.close()
        if self.lost:
            return False
        changed = retry_on_conflict(
            self.wh.spark,
            lambda: self.wh.update("waves", self.campaign_id, {**values, "lease_until": "NULL"}, self._mine()),
            f"recording the end of {self.wave_id}",
        )
        return changed == 1

    def undo(self, row, has_outcomes: bool) -> bool:
        """Give the wave back as this run's claim found it (`row`): its attempts as they were, and its
        status too unless it has outcomes already (a wave that sent something stays `sending`, to be
        resumed without an attempt)."""
        self.close()
        if self.lost:
            return False
        values = {"lease_until": "NULL", "attempts": str(row["attempts"] or 0)}
        if has_outcomes or row["status"] == "sending":
            values.update(status="'sending'", deferred_until=ts(now_utc()))
        else:
            values.update(
                status=sql_literal(row["status"]), deferred_until="NULL", sending_at=ts(aware(row["sending_at"]))
            )
        changed = retry_on_conflict(
            self.wh.spark,
            lambda: self.wh.update("waves", self.campaign_id, values, self._mine()),
            f"giving {self.wave_id} back",
        )
        return changed == 1

    def release(self, deferred_until: dt.datetime | None = None) -> bool:
        """Let the wave go while it is still `sending` (messages left): the next run takes it at once,
        or after `deferred_until` without spending an attempt when the gateway asked to wait."""
        self.close()
        if self.lost:
            return False
        values = {"lease_until": "NULL", "deferred_until": ts(deferred_until)}
        changed = retry_on_conflict(
            self.wh.spark,
            lambda: self.wh.update("waves", self.campaign_id, values, self._mine()),
            f"releasing {self.wave_id}",
        )
        return changed == 1
