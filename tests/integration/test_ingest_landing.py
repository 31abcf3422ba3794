"""Ingest of hand-written landing files that follow SPEC §4 (not made by synth), in every format."""

import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from campaign_pipeline.catalog import CATALOG
from campaign_pipeline.config import load_campaign
from campaign_pipeline.errors import InputError
from campaign_pipeline.runner import run_pipeline, stage_runs
from campaign_pipeline.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "landing"
CAMPAIGN = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"


@pytest.fixture
def landing(tmp_path):
    target = tmp_path / "landing"
    shutil.copytree(GOLDEN, target)
    return target


def _run(spark, test_env, landing, warehouse_root, stages=("ingest",)):
    env = test_env.with_roots(str(landing), str(warehouse_root))
    return run_pipeline(spark, load_campaign(CAMPAIGN), env, stages=list(stages), out=open("/dev/null", "w"))


def _quarantine(wh):
    return {
        (Path(r["source_file"]).name, r["line"]): r["reason"]
        for r in wh.read("quarantine", "spring-tour-2027").collect()
    }


@pytest.fixture(scope="module")
def ingested(spark, test_env, tmp_path_factory):
    """One ingest of the hand-written files, read by the tests that do not change the landing folder."""
    base = tmp_path_factory.mktemp("ingested")
    shutil.copytree(GOLDEN, base / "landing")
    report = _run(spark, test_env, base / "landing", base / "wh")
    return base, report


def test_every_kind_and_format_lands_and_bad_rows_are_quarantined_with_reasons(spark, ingested):
    base, report = ingested
    wh = Warehouse(spark, str(base / "wh"))
    cid = "spring-tour-2027"

    regs = {r["global_user_id"]: r for r in wh.read("registrations", cid).collect()}
    assert sorted(regs) == ["F0001", "F0002", "F0003", "F0004", "F0101", "F0102"]
    assert regs["F0001"]["market_preferences"] == ["NYC-01", "LAX-02"]
    assert regs["F0001"]["phone_confirmed"] is True and regs["F0001"]["do_not_text"] is False
    assert regs["F0001"]["country"] == "US" and regs["F0001"]["email"] == "Ann.Lee@Gmail.com"
    assert regs["F0003"]["last_name"] == "Smith, Jr."
    assert regs["F0101"]["market_preferences"] == ["LAX-02", "NYC-01"]
    assert (regs["F0001"]["source_line"], regs["F0101"]["source_line"]) == (2, 1)

    q = _quarantine(wh)
    assert q == {
        (
            "registrations_web.csv",
            6,
        ): "registered_at: expected an ISO-8601 timestamp with zone, got '2027-02-31T10:00:00Z'",
        ("registrations_web.csv", 7): "missing required field global_user_id",
        ("registrations_web.csv", 8): "no market in market_preferences",
        ("registrations_web.csv", 9): "wrong field count: expected 17, got 7",
        ("registrations_web.csv", 10): "campaign_id: 'other-tour' is not this campaign ('spring-tour-2027')",
        ("registrations_web.csv", 12): "phone_confirmed: expected true/false/1/0/yes/no, got 'sometimes'",
        ("registrations_app.jsonl", 3): "no market in market_preferences",
        ("registrations_app.jsonl", 4): "not a JSON object",
        ("fan_activity_2027.tsv", 5): "account_created_at: expected an ISO-8601 timestamp with zone, got 'last year'",
        ("fan_activity_2027.tsv", 6): "tickets_purchased_24m: expected a count >= 0, got '-1'",
        ("scored_ds.tsv", 4): "score: expected a number in [0, 1], got '1.7'",
        ("fanlist_ranks.json", 3): "rank: expected a rank >= 1, got '0'",
        ("blocked_emails.txt", 3): "blocked_emails: expected an email address, got 'not-an-address'",
        (
            "code_pool_upload1.csv",
            7,
        ): "code: duplicate code, got 'NYCAAA0001' again (first at code_pool_upload1.csv line 2)",
    }
    raw = wh.read("quarantine", cid).where(F.col("line") == 9).select("raw").first()[0]
    assert raw == "spring-tour-2027,F0008,M008,gus@example.com,3125550125,true,Gus"

    scores = {r["global_user_id"]: (r["score"], r["extra"]) for r in wh.read("external_scores", cid).collect()}
    assert scores == {
        "F0001": (0.97, {"model_version": "gbm-7", "segment": "superfan"}),
        "F0003": (0.41, {"model_version": "gbm-7", "segment": "casual"}),
    }
    activity = {r["global_user_id"]: r["tickets_purchased_24m"] for r in wh.read("fan_activity", cid).collect()}
    assert activity == {"F0001": 6, "F0003": 1, "F0101": 3}
    assert sorted(r["code"] for r in wh.read("code_pool", cid).collect()) == [
        "ANYAAA0001",
        "CHIAAA0001",
        "LAXAAA0001",
        "NYCAAA0001",
        "NYCAAA0002",
    ]
    lists = sorted((r["list_name"], r["entry"]) for r in wh.read("screening_lists", cid).collect())
    assert lists == [
        ("allowed_patterns", "*@auroraskies.example"),
        ("blocked_domains", "resale.example"),
        ("blocked_domains", "ticketflip.example"),
        ("blocked_emails", "scalper@example.com"),
    ]

    # Per file: rows read = ingested + quarantined, and the run records it.
    result = report.rows[0][1]
    for f in result.files:
        assert f["rows_read"] == f["rows_ingested"] + f["rows_quarantined"], f
    assert (result.counts["rows_read"], result.counts["rows_ingested"], result.counts["rows_quarantined"]) == (
        36,
        22,
        14,
    )
    assert result.counts["files_ignored"] == 1  # README_ops.txt
    runs = stage_runs(wh, cid).where(F.col("run_id") == report.run_id).first()
    assert runs["status"] == "succeeded" and runs["counts"]["rows_read"] == 36
    assert {Path(f["source_file"]).name: f["rows_quarantined"] for f in runs["files"]}["registrations_web.csv"] == 6


def test_re_ingesting_the_same_files_changes_nothing(spark, test_env, ingested):
    base, _ = ingested
    wh = Warehouse(spark, str(base / "wh"))
    before = {t: wh.version(t) for t in ("registrations", "quarantine", "fan_activity", "landing_files")}
    report = _run(spark, test_env, base / "landing", base / "wh")
    assert {t: wh.version(t) for t in before} == before
    assert report.rows[0][1].counts["files_unchanged"] == 9
    assert report.rows[0][1].counts["rows_read"] == 0


def test_a_changed_file_replaces_its_earlier_rows_and_quarantine(spark, test_env, landing, tmp_path):
    _run(spark, test_env, landing, tmp_path / "wh")
    web = landing / "spring-tour-2027" / "registrations_web.csv"
    lines = web.read_text().splitlines()
    # The fixed upload: F0002 removed, the bad timestamp corrected.
    fixed = [line.replace("2027-02-31T10", "2027-02-28T10") for line in lines if ",F0002," not in line]
    web.write_text("\n".join(fixed) + "\n")
    report = _run(spark, test_env, landing, tmp_path / "wh")
    wh = Warehouse(spark, str(tmp_path / "wh"))
    regs = sorted(r["global_user_id"] for r in wh.read("registrations", "spring-tour-2027").collect())
    assert regs == ["F0001", "F0003", "F0004", "F0005", "F0101", "F0102"]
    web_reasons = {line: reason for (name, line), reason in _quarantine(wh).items() if name == "registrations_web.csv"}
    # Lines moved up by one; the corrected timestamp is no longer quarantined.
    assert web_reasons == {
        6: "missing required field global_user_id",
        7: "no market in market_preferences",
        8: "wrong field count: expected 17, got 7",
        9: "campaign_id: 'other-tour' is not this campaign ('spring-tour-2027')",
        11: "phone_confirmed: expected true/false/1/0/yes/no, got 'sometimes'",
    }
    assert report.rows[0][1].counts["files_replaced"] == 1
    assert report.rows[0][1].counts["files_unchanged"] == 8


def test_a_file_missing_a_required_column_stops_ingest_before_any_write(spark, test_env, landing, tmp_path):
    (landing / "spring-tour-2027" / "registrations_zz.csv").write_text(
        "campaign_id,global_user_id\nspring-tour-2027,F9\n"
    )
    with pytest.raises(InputError) as info:
        _run(spark, test_env, landing, tmp_path / "wh")
    assert "registrations_zz.csv: line 1 (header): required columns market_preferences, registered_at missing" in str(
        info.value
    )
    wh = Warehouse(spark, str(tmp_path / "wh"))
    data_tables = [t for t in CATALOG if t != "pipeline_runs"]
    assert [t for t in data_tables if wh.exists(t)] == []
    failed = stage_runs(wh, "spring-tour-2027").first()
    assert failed["status"] == "failed" and "registrations_zz.csv" in failed["error"]


def test_a_missing_landing_folder_is_a_clear_error(spark, test_env, tmp_path):
    with pytest.raises(InputError) as info:
        _run(spark, test_env, tmp_path / "nowhere", tmp_path / "wh")
    assert str(info.value).startswith(f"landing folder not found: neither {tmp_path / 'nowhere'}/spring-tour-2027 nor")
