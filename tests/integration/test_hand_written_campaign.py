"""The hand-written landing files through every stage, sharing one ingest + screen: the screening
rule-book verdicts, the external and fanlist golden cases, codes and messages end to end, re-runs
that commit nothing, and `explain` with personal data masked."""

import re
import shutil
from pathlib import Path

import pytest
from helpers import T0
from pyspark.sql import functions as F

from campaign_pipeline.config import load_campaign
from campaign_pipeline.ops.explain import explain_fan
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.tables import Warehouse

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"
CID = "spring-tour-2027"
QUIET = open("/dev/null", "w")


@pytest.fixture(scope="module")
def screened(spark, test_env, tmp_path_factory):
    base = tmp_path_factory.mktemp("hand-written")
    shutil.copytree(ROOT / "tests" / "data" / "landing", base / "landing")
    env = test_env.with_roots(str(base / "landing"), str(base / "wh"))
    report = run_pipeline(spark, load_campaign(CAMPAIGN), env, stages=["ingest", "screen"], out=QUIET)
    return env, Warehouse(spark, str(base / "wh")), report


def _registrants(wh):
    return {
        r["global_user_id"]: (r["phone_e164"], r["email_canonical"], r["identity_cluster_id"], r["tags"], r["eligible"])
        for r in wh.read("registrants", CID).collect()
    }


def test_hand_written_registrants_get_the_rule_book_verdicts_and_a_rerun_commits_nothing(spark, screened):
    env, wh, report = screened
    campaign = load_campaign(CAMPAIGN)
    got = _registrants(wh)
    assert got == {
        # two spellings of one gmail box and one phone: the earlier registration stays
        "F0001": ("+12125550101", "annlee@gmail.com", "F0001", [], True),
        "F0002": ("+12125550101", "annlee@gmail.com", "F0001", ["DUPLICATE_ACCOUNT"], False),
        # 40 resale listings, 4 chargebacks, no event attended
        "F0003": ("+14165550199", "bob@example.org", "F0003", ["SCALPER_SIGNALS"], False),
        # a French mobile typed nationally: international, and not confirmed
        "F0004": ("+33612345678", "chloe@example.fr", "F0004", ["UNCONFIRMED_PHONE", "INTL_PHONE"], False),
        "F0101": ("+14155550100", "kim@example.com", "F0101", [], True),
        "F0102": (None, "lou@example.com", "F0102", [], True),
    }
    screen = dict((name, result) for name, result, _ in report.rows)["screen"]
    assert screen.counts["registrants"] == 6 and screen.counts["eligible"] == 3
    assert screen.counts["tag:DUPLICATE_ACCOUNT"] == 1
    dq = wh.read("dq_results", CID).where(F.col("run_id") == report.run_id).collect()
    assert dq and all(r["success"] for r in dq)

    # re-running screen on unchanged inputs commits nothing: same rows, same Delta version, same run id
    version = wh.version("registrants")
    again = run_pipeline(spark, campaign, env, stages=["screen"], out=QUIET)
    assert _registrants(wh) == got
    assert wh.read("registrants", CID).count() == 6
    assert wh.version("registrants") == version
    assert {r["run_id"] for r in wh.read("registrants", CID).collect()} == {report.run_id}
    assert "unchanged since the last run (nothing written)" in again.rows[0][1].summary[0]


def _variant(**scoring):
    base = load_campaign(CAMPAIGN)
    return base.model_copy(update={"scoring": base.scoring.model_copy(update=scoring)})


def _rows(wh, table):
    return {r["global_user_id"]: r for r in wh.read(table, CID).collect()}


def test_external_scores_golden_case_and_a_rerun_commits_nothing(spark, screened):
    env, wh, _ = screened
    campaign = _variant(source="external")
    run_pipeline(spark, campaign, env, stages=["score", "select"], out=QUIET)
    scores, sel = _rows(wh, "scores"), _rows(wh, "selections")
    assert (scores["F0001"]["raw_score"], scores["F0001"]["band"]) == (0.97, "high")
    assert scores["F0001"]["extra"] == {"model_version": "gbm-7", "segment": "superfan"}
    assert scores["F0001"]["model_version"] == "gbm-7"
    assert scores["F0003"]["band"] == "low"  # scored 0.41, but a scalper
    assert scores["F0101"]["raw_score"] is None  # its 1.7 was quarantined at ingest
    assert (sel["F0001"]["verdict"], sel["F0001"]["market_id"], sel["F0001"]["market_rank"]) == (
        "selected",
        "NYC-01",
        1,
    )
    assert (sel["F0003"]["verdict"], sel["F0003"]["reasons"]) == ("rejected", ["SCALPER_SIGNALS"])
    assert (sel["F0002"]["verdict"], sel["F0002"]["reasons"]) == ("rejected", ["DUPLICATE_ACCOUNT"])
    assert (sel["F0101"]["verdict"], sel["F0101"]["reasons"]) == ("rejected", ["NO_SCORE"])
    versions = (wh.version("scores"), wh.version("selections"))
    report = run_pipeline(spark, campaign, env, stages=["score", "select"], out=QUIET)
    assert (wh.version("scores"), wh.version("selections")) == versions
    assert _rows(wh, "selections") == sel
    select_result = dict((n, r) for n, r, _ in report.rows)["select"]
    assert select_result.counts["selected:NYC-01"] == 1 and select_result.counts["capacity_left:NYC-01"] == 1499
    dq = wh.read("dq_results", CID).where(F.col("table").isin("scores", "selections")).collect()
    assert dq and all(r["success"] for r in dq)


def test_fanlist_golden_case_and_explain_masks_personal_data(spark, screened):
    env, wh, _ = screened
    campaign = _variant(source="fanlist")
    run_pipeline(spark, campaign, env, stages=["score", "select"], out=QUIET)
    scores, sel = _rows(wh, "scores"), _rows(wh, "selections")
    # two valid ranks (F0102's rank 0 was quarantined): N = 2
    assert {f: (s["raw_score"], s["band"]) for f, s in scores.items() if s["raw_score"] is not None} == {
        "F0001": (1.0, "high"),
        "F0101": (0.5, "low"),
    }
    assert (sel["F0001"]["verdict"], sel["F0001"]["market_id"]) == ("selected", "NYC-01")
    assert (sel["F0101"]["verdict"], sel["F0101"]["market_id"], sel["F0101"]["preference_rank"]) == (
        "selected",
        "LAX-02",
        1,
    )
    assert sel["F0102"]["reasons"] == ["NO_SCORE"]

    story = "\n".join(explain_fan(wh, campaign, "F0001"))
    assert "annlee@gmail.com" not in story and "+12125550101" not in story and "Ann.Lee" not in story
    assert "a***@gmail.com" in story and "+1******0101" in story, story
    assert "VERDICT: SELECTED market NYC-01 (choice 1, market rank 1)" in story.replace("verdict: ", "VERDICT: ")
    assert "choice 1: NYC-01 · rank 1 of 2 candidates" in story, story
    assert f"selections@v{wh.version('selections')}" in story


def test_the_hand_written_campaign_is_coded_and_messaged_end_to_end(spark, screened):
    """Codes and waves on the fanlist selection of the test above (same module, run in file order)."""
    env, wh, _ = screened
    selected = wh.read("selections", CID).where("verdict = 'selected'").count()
    report = run_pipeline(
        spark, _variant(source="fanlist"), env, stages=["assign_codes", "plan_waves"], out=QUIET, now=T0
    )
    # two fans selected, coded from the pool and messaged by SMS
    results = {name: result.counts for name, result, _ in report.rows}
    assert selected == 2 and results["assign_codes"]["codes_held"] == 2
    assert (results["plan_waves"]["messages"], results["plan_waves"]["sms"]) == (2, 2)
    codes = {r["global_user_id"]: r["code"] for r in wh.read("code_assignments", CID).collect()}
    sent_to = {r["global_user_id"]: r["code"] for r in wh.read("wave_messages", CID).collect()}
    assert sent_to == codes and len(set(codes.values())) == 2
    fan = sorted(codes)[0]
    story = "\n".join(explain_fan(wh, _variant(source="fanlist"), fan))
    assert re.search(r"code: \S+ for \S+ \(pool\), wave wave-[12], valid 2027-0[23]-\S+ \S+ → 2028-", story), story
