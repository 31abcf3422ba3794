"""notify's wave end (totals, the `waves` commit) against the campaign's later waves and the
expectations: where it runs, what its failure does, the order of the summary (no Spark: the
wave-taking and the checks are stand-ins)."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from types import SimpleNamespace

import pytest

from campaign_pipeline.errors import PipelineError, WriteConflictError
from campaign_pipeline.notify import stage


def _ctx(waves):
    @contextlib.contextmanager
    def step(name):
        yield

    campaign = SimpleNamespace(waves=waves, campaign_id="c")
    return SimpleNamespace(campaign=campaign, campaign_id="c", options={}, step=step)


def _wave(day: int):
    return SimpleNamespace(wave_id=f"wave-{day}", notify_at=dt.datetime(2027, 3, day, tzinfo=dt.UTC))


def _taking(ends: dict, refused: dict | None = None):
    """A `take_and_send` stand-in: takes the waves in `ends` (returning their end), says why not for the others."""

    def take_and_send(ctx, wave, retry_failed, dry_run, report, before_taking):
        if refused and wave.wave_id in refused:
            raise refused[wave.wave_id]
        if wave.wave_id not in ends:
            report.summary.append(f"{wave.wave_id}: not due")
            return False, None
        before_taking()
        report.summary.append(f"{wave.wave_id}: taken (due)")
        return True, ends[wave.wave_id]

    return take_and_send


def test_the_end_runs_beside_the_expectations_on_the_calling_thread_and_its_lines_follow_its_wave(monkeypatch):
    checking = threading.Event()
    seen = {}

    def end(say):
        seen["thread"] = threading.current_thread()
        # the expectations run meanwhile (one after the other, this would wait out the timeout)
        seen["beside"] = checking.wait(timeout=10)
        say("wave-1: completed")

    def check_tables(ctx, checks):
        checking.set()
        return ["3 passed"]

    monkeypatch.setattr(stage, "take_and_send", _taking({"wave-1": end}))
    monkeypatch.setattr(stage, "check_tables", check_tables)
    report = stage.notify(_ctx([_wave(1), _wave(2), _wave(3)]))
    assert seen == {"thread": threading.main_thread(), "beside": True}
    assert report.summary == [
        "wave-1: taken (due)", "wave-1: completed", "wave-2: not due", "wave-3: not due",
        "expectations on notification_log: 3 passed",
    ]  # fmt: skip


def test_a_failed_end_is_the_wave_s_failure_whatever_the_expectations_say(monkeypatch):
    def end(say):
        raise WriteConflictError("recording the end of wave-1: concurrent writers kept conflicting")

    def check_tables(ctx, checks):
        raise PipelineError("notify: data quality check failed (critical) on notification_log")

    monkeypatch.setattr(stage, "take_and_send", _taking({"wave-1": end}))
    monkeypatch.setattr(stage, "check_tables", check_tables)
    with pytest.raises(WriteConflictError) as info:
        stage.notify(_ctx([_wave(1)]))
    assert info.value.exit_code == WriteConflictError("x").exit_code


def test_another_wave_is_taken_only_after_the_end_and_failures_come_in_wave_order(monkeypatch):
    order = []

    def end_1(say):
        order.append("end wave-1")
        raise PipelineError("end of wave-1 failed")

    def end_3(say):
        order.append("end wave-3")

    take = _taking({"wave-1": end_1, "wave-3": end_3}, refused={"wave-2": PipelineError("reading waves failed")})

    def take_and_send(ctx, wave, *args):
        order.append(f"take {wave.wave_id}")
        return take(ctx, wave, *args)

    monkeypatch.setattr(stage, "take_and_send", take_and_send)
    monkeypatch.setattr(stage, "check_tables", lambda ctx, checks: ["ok"])
    with pytest.raises(PipelineError) as info:
        stage.notify(_ctx([_wave(1), _wave(2), _wave(3)]))
    assert order == ["take wave-1", "take wave-2", "take wave-3", "end wave-1", "end wave-3"]
    assert str(info.value).index("wave-1") < str(info.value).index("wave-2")
