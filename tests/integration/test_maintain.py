"""`maintain` on a small Delta warehouse: a running campaign is compacted, a finished one is moved
to the archive root (copy, verify, delete) and a move killed half-way is finished by the next run
without a row lost or doubled; a too-short VACUUM retention is refused."""

from __future__ import annotations

import datetime as dt
import io
import time

import pytest
from helpers import make_campaign

from campaign_pipeline.errors import ConfigError, PipelineError
from campaign_pipeline.frames import catalog_rows
from campaign_pipeline.ops import maintain as m
from campaign_pipeline.runner import run_operation, run_pipeline, stage_runs
from campaign_pipeline.warehouse import Warehouse

CID = "tour-test"
NOTIFY_AT = dt.datetime(2027, 3, 1, 15, tzinfo=dt.UTC)
QUIET = io.StringIO


def campaign():
    return make_campaign(CID, waves=[{"wave_id": "wave-1", "notify_at": NOTIFY_AT}])


def small_warehouse(spark, root: str, wave_status: str, other: bool = True) -> Warehouse:
    """Three registrants and their codes, one wave in `wave_status` (and another campaign's fan)."""
    wh = Warehouse(spark, root)
    registrants, codes = [], []
    for cid, fans in ((CID, ["F1", "F2", "F3"]), *((("other", ["G1"]),) if other else ())):
        for fan in fans:
            registrants.append({
                "campaign_id": cid, "global_user_id": fan, "market_preferences": ["NYC-01"],
                "registered_at": NOTIFY_AT, "identity_cluster_id": fan, "cluster_size": 1, "tags": [],
                "eligible": True, "ineligible_reasons": [], "run_id": "r",
            })  # fmt: skip
            codes.append({
                "campaign_id": cid, "market_id": "NYC-01", "global_user_id": fan, "code": f"C-{fan}",
                "code_type": "pool", "wave_id": "wave-1", "assigned_at": NOTIFY_AT, "run_id": "r",
            })  # fmt: skip
    # two commits each: compaction has files to merge
    for half in (registrants[:2], registrants[2:]):
        wh.append("registrants", catalog_rows(spark, "registrants", half))
    for half in (codes[:2], codes[2:]):
        wh.append("code_assignments", catalog_rows(spark, "code_assignments", half))
    wave = {"campaign_id": CID, "wave_id": "wave-1", "notify_at": NOTIFY_AT, "status": wave_status,
            "finished_at": NOTIFY_AT + dt.timedelta(hours=1), "run_id": "r"}  # fmt: skip
    wh.append("waves", catalog_rows(spark, "waves", [wave]))
    wh.append("campaign_stats", catalog_rows(spark, "campaign_stats", [stats("r1")]))  # maps within maps
    return wh


def stats(run_id: str) -> dict:
    """A report's campaign_stats row: a funnel map and per-market maps of maps."""
    return {"campaign_id": CID, "run_id": run_id, "computed_at": NOTIFY_AT, "funnel": {"registered": 3, "coded": 3},
            "per_market": {"NYC-01": {"capacity": 10, "selected": 3}, "LAX-02": {"selected": 0, "capacity": 5}}}  # fmt: skip


def test_a_running_campaign_is_compacted_and_nothing_moves(spark, test_env, tmp_path):
    env = test_env.with_roots(None, str(tmp_path / "wh"))
    wh = small_warehouse(spark, env.warehouse_root, "scheduled", other=False)
    _, report = run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(),
                              options={"older_than": "30d"})  # fmt: skip
    assert report.counts["archived"] == 0
    assert report.counts["optimize:registrants:files_removed"] >= 2  # two commits, at least a file each
    assert report.counts["optimize:registrants:files_added"] == 1
    assert any("not finished" in line for line in report.summary)
    assert wh.read("registrants", CID).count() == 3 and wh.read("code_assignments", CID).count() == 3
    assert not (tmp_path / "wh" / "_archive").exists()

    with pytest.raises(ConfigError, match="--retain-hours 24: at least 168"):
        run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), options={"retain_hours": 24})
    with pytest.raises(ConfigError, match="--older-than: expected a number with d, h or m"):
        m.parse_age("a month")


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` sees it, so nothing records or cleans up after it."""


def snapshot(wh: Warehouse, tables) -> dict[str, list]:
    return {t: sorted(map(repr, wh.read(t, CID).drop("campaign_id").collect())) for t in tables}


def test_a_finished_campaign_moves_to_the_archive_and_a_move_killed_after_any_table_is_finished(
    spark, test_env, tmp_path
):
    env = test_env.with_roots(None, str(tmp_path / "wh"))
    live = small_warehouse(spark, env.warehouse_root, "completed")
    archive = Warehouse(spark, str(tmp_path / "wh" / "_archive"))
    options = {"older_than": "30d", "no_vacuum": True}
    tables = m.campaign_tables(live)
    assert tables == ["registrants", "code_assignments", "campaign_stats", "waves"]  # waves last
    before = snapshot(live, tables)

    # ended less than 30 days ago: nothing moves
    soon = NOTIFY_AT + dt.timedelta(days=3)
    _, report = run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=soon, options=options)
    assert report.counts["archived"] == 0 and live.read("registrants", CID).count() == 3

    # Killed after the first table, then after the second (the waves are still live then), then
    # after the last: every time each table's rows are live or verified in the archive, never
    # neither, never both halves; the run after the last kill finds the waves gone and finishes.
    later = NOTIFY_AT + dt.timedelta(days=31)
    for k, table in enumerate(tables):
        mp = pytest.MonkeyPatch()

        def killed_after(name, stop=table):
            if name == stop:
                raise Killed(name)

        mp.setattr(m, "_after_table", killed_after)
        mp.setattr(m, "ARCHIVE_LEASE_SECONDS", 1)  # a killed run's hold on the archive runs out at once
        with pytest.raises(Killed):
            run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=later, options=options)
        mp.undo()
        time.sleep(1)
        for t in tables:
            moved = tables.index(t) <= k
            assert snapshot(live if not moved else archive, [t]) == {t: before[t]}, (table, t)
            assert (
                live.read(t, CID).isEmpty() == moved
                and (archive.exists(t) and not archive.read(t, CID).isEmpty()) == moved
            )
        assert m.archive_record(live, CID)["state"] == "archiving"

    _, report = run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=later, options=options)
    assert report.counts["archived"] == 1 and m.archive_record(live, CID)["state"] == "archived"
    assert snapshot(archive, tables) == before and all(live.read(t, CID).isEmpty() for t in tables)
    assert dict(m.archive_record(live, CID)["moved"]) == {
        "registrants": 3, "code_assignments": 3, "campaign_stats": 1, "waves": 1
    }  # fmt: skip
    # the other campaign is untouched, and the archive holds none of it
    assert live.read("registrants", "other").count() == 1 and archive.read("registrants", "other").count() == 0
    runs = {r["status"]: r["count"] for r in stage_runs(live, CID).groupBy("status").count().collect()}
    assert runs == {"succeeded": 2, "running": 4}  # the killed runs never recorded an end

    # a report that had started before the archive appends a row afterwards: the next maintain
    # moves it, and the archive keeps every row it held
    live.append("campaign_stats", catalog_rows(spark, "campaign_stats", [stats("late")]))
    run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=later, options=options)
    assert sorted(r["run_id"] for r in archive.read("campaign_stats", CID).collect()) == ["late", "r1"]
    assert live.read("campaign_stats", CID).isEmpty() and m.archive_record(live, CID)["state"] == "archived"

    # an archived campaign's stages no longer run; its scheduled report says so and writes nothing
    with pytest.raises(PipelineError, match=f"campaign {CID} is archived to .*_archive"):
        run_pipeline(spark, campaign(), env, stages=["select"], out=QUIET())
    assert run_pipeline(spark, campaign(), env, stages=["report"], out=QUIET()).rows == []


def test_rows_appended_while_an_archive_copies_or_deletes_are_archived_not_lost(spark, test_env, tmp_path):
    """A report's rows (or an operator's retry) committed between the copy and the delete: the
    table moved, so it is copied again; committed between the version check and the delete itself,
    the delete removed them, and they are recovered from the delete's own snapshot — here by the
    next run, the first having been killed right after that delete."""
    env = test_env.with_roots(None, str(tmp_path / "wh"))
    live = small_warehouse(spark, env.warehouse_root, "completed", other=False)
    archive = Warehouse(spark, str(tmp_path / "wh" / "_archive"))
    late = {"campaign_id": CID, "global_user_id": "F9", "market_preferences": ["NYC-01"], "registered_at": NOTIFY_AT,
            "identity_cluster_id": "F9", "cluster_size": 1, "tags": [], "eligible": True, "ineligible_reasons": [],
            "run_id": "late"}  # fmt: skip
    code = {"campaign_id": CID, "market_id": "NYC-01", "global_user_id": "F9", "code": "C-F9", "code_type": "pool",
            "wave_id": "wave-1", "assigned_at": NOTIFY_AT, "run_id": "late"}  # fmt: skip
    appended: list[str] = []
    mp = pytest.MonkeyPatch()
    copy, delete = m.copy_into, m.delete_campaign

    def copy_then_append(store, table, rows, cid, what):  # right after the registrants' first copy
        copy(store, table, rows, cid, what)
        if table == "registrants" and table not in appended:
            appended.append(table)
            live.append(table, catalog_rows(spark, table, [late]))

    def append_delete_and_die(wh, table, cid, tag):  # after the check, before the delete reads the table
        if table == "code_assignments" and table not in appended:
            appended.append(table)
            live.append(table, catalog_rows(spark, table, [code]))
            delete(wh, table, cid, tag)
            raise Killed("after the delete, before the rows it removed were checked")
        return delete(wh, table, cid, tag)

    mp.setattr(m, "copy_into", copy_then_append)
    mp.setattr(m, "delete_campaign", append_delete_and_die)
    mp.setattr(m, "ARCHIVE_LEASE_SECONDS", 1)
    later = NOTIFY_AT + dt.timedelta(days=31)
    options = {"older_than": "30d", "no_vacuum": True}
    with pytest.raises(Killed):
        run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=later, options=options)
    mp.undo()
    # F9 exists only in the version the delete read; the archive row says so, and VACUUM keeps it
    assert live.read("code_assignments", CID).isEmpty() and m.archive_record(live, CID)["pending"]
    assert "F9" not in {r["global_user_id"] for r in archive.read("code_assignments", CID).collect()}
    time.sleep(1)
    _, report = run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=later,
                              options={"older_than": "30d"})  # fmt: skip
    assert appended == ["registrants", "code_assignments"] and report.counts["archived"] == 1
    assert sorted(r["global_user_id"] for r in archive.read("registrants", CID).collect()) == ["F1", "F2", "F3", "F9"]
    assert sorted(r["global_user_id"] for r in archive.read("code_assignments", CID).collect()) == [
        "F1",
        "F2",
        "F3",
        "F9",
    ]
    assert live.read("registrants", CID).isEmpty() and live.read("code_assignments", CID).isEmpty()
    assert dict(m.archive_record(live, CID)["moved"])["registrants"] == 4 and not m.archive_record(live, CID)["pending"]
