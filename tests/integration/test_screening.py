"""Screening on a synthetic campaign against its ground truth (the hand-written files are in
test_hand_written_campaign)."""

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from campaign_pipeline.config import load_campaign
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.screening.quality import screening_quality
from campaign_pipeline.synth import SynthSpec, generate
from campaign_pipeline.tables import Warehouse

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"


@pytest.fixture(scope="module")
def screened_20k(spark, test_env, tmp_path_factory):
    out = generate(
        spark,
        SynthSpec(campaign_id="quality-20k", registrants=20_000, markets=12, seed=5),
        str(tmp_path_factory.mktemp("synth20k")),
    )
    wh_root = tmp_path_factory.mktemp("wh20k")
    env = test_env.with_roots(str(Path(out.landing).parent), str(wh_root))
    run_pipeline(spark, load_campaign(out.campaign_yaml), env, stages=["ingest", "screen"], out=open("/dev/null", "w"))
    wh = Warehouse(spark, str(wh_root))
    return screening_quality(wh.read("registrants", "quality-20k"), spark.read.parquet(out.truth)), wh


def test_screening_meets_the_quality_bar_on_20k_synthetic_registrants(screened_20k):
    q, _ = screened_20k
    assert q["ring_ineligible"] >= 0.99, q
    assert q["clean_genuine_eligible"] >= 0.995, q
    assert q["multi_account_persons"] > 200 and q["multi_account_persons_keep_one"] == 1.0, q
    # every tag a planted case declares is found on (nearly) every account that carries the case
    found = {k: v for k, v in q.items() if k.startswith("found:") and v is not None}
    assert set(found) >= {"found:INVALID_PHONE", "found:INTL_PHONE", "found:SHARED_IDENTIFIER", "found:FRAUD_RING",
                          "found:BLOCKED_EMAIL", "found:BLOCKED_DOMAIN", "found:ALLOWLISTED"}, q  # fmt: skip
    # (a planted ring that came out no larger than ring_size is one cluster of duplicates instead)
    assert min(found.values()) >= 0.98 and found["found:FRAUD_RING"] <= q["ring_ineligible"], found
    assert q["blocked_ineligible"] == 1.0, q
    assert q["allowlisted_eligible"] == 1.0, q
    assert q["phone_e164_match"] >= 0.999, q


def test_one_row_per_fan_and_hot_call_centre_phone_is_shared_not_expanded(screened_20k):
    _, wh = screened_20k
    r = wh.read("registrants", "quality-20k")
    assert r.count() == r.select("global_user_id").distinct().count() == 20_000
    shared = r.where(F.array_contains("tags", "SHARED_IDENTIFIER"))
    assert shared.count() > 50
    # the shared phone links nobody: those fans stay in clusters of their own
    assert shared.where(F.col("cluster_size") > 1).count() == 0
