"""`maintain` on a small Delta warehouse: a running campaign is compacted, a finished one is moved
to the archive root (copy, verify, delete) and a move killed half-way is finished by the next run
without a row lost or doubled; a too-short VACUUM retention is refused."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from helpers import make_campaign

from campaign_pipeline.errors import ConfigError
from campaign_pipeline.ops import maintain as m
from campaign_pipeline.runner import run_operation, stage_runs
from campaign_pipeline.tables import Warehouse, catalog_rows

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
    return wh


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


def test_a_finished_campaign_moves_to_the_archive_and_a_killed_move_is_finished(spark, test_env, tmp_path):
    env = test_env.with_roots(None, str(tmp_path / "wh"))
    live = small_warehouse(spark, env.warehouse_root, "completed")
    options = {"older_than": "30d", "no_vacuum": True}
    tables = m.campaign_tables(live)
    before = {t: live.read(t, CID).count() for t in tables}
    assert before == {"registrants": 3, "code_assignments": 3, "waves": 1}

    # ended less than 30 days ago: nothing moves
    soon = NOTIFY_AT + dt.timedelta(days=3)
    _, report = run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=soon, options=options)
    assert report.counts["archived"] == 0 and live.read("registrants", CID).count() == 3

    # the first move dies after one table is moved; the second finishes it
    later = NOTIFY_AT + dt.timedelta(days=31)
    deleted, original = [], Warehouse.delete

    def dying_delete(self, name, condition):
        if deleted:
            raise RuntimeError("killed")
        deleted.append(name)
        return original(self, name, condition)

    mp = pytest.MonkeyPatch()
    mp.setattr(Warehouse, "delete", dying_delete)
    with pytest.raises(RuntimeError, match="killed"):
        run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=later, options=options)
    mp.undo()
    archive = Warehouse(spark, str(tmp_path / "wh" / "_archive"))
    for t, n in before.items():  # each table: its live rows, or a verified copy; never neither
        kept = archive.read(t, CID).count() if archive.exists(t) else 0
        assert live.read(t, CID).count() == n or kept == n, t
    assert live.read(deleted[0], CID).count() == 0

    _, report = run_operation(spark, campaign(), env, "maintain", m.maintain, out=QUIET(), now=later, options=options)
    assert report.counts["archived"] == 1
    for t, n in before.items():
        assert live.read(t, CID).count() == 0, t
        assert archive.read(t, CID).count() == n, t
    # the other campaign is untouched, and the archive holds none of it
    assert live.read("registrants", "other").count() == 1 and archive.read("registrants", "other").count() == 0
    runs = {r["status"]: r["count"] for r in stage_runs(live, CID).groupBy("status").count().collect()}
    assert runs == {"succeeded": 2, "failed": 1}
