"""synth 5k → ingest → Delta: planted malformed rows are quarantined, everything else lands."""

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from campaign_pipeline.config import load_campaign
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.synth import MALFORMED, SynthSpec, generate
from campaign_pipeline.synth.spec import PLANTED
from campaign_pipeline.tables import Warehouse

N = 5000


@pytest.fixture(scope="module")
def synth_campaign(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return generate(spark, SynthSpec(campaign_id="synth-5k", registrants=N, markets=8, seed=11), str(out))


@pytest.fixture(scope="module")
def ingested(spark, test_env, synth_campaign, tmp_path_factory):
    wh_root = tmp_path_factory.mktemp("wh")
    env = test_env.with_roots(str(Path(synth_campaign.landing).parent), str(wh_root))
    report = run_pipeline(
        spark, load_campaign(synth_campaign.campaign_yaml), env, stages=["ingest"], out=open("/dev/null", "w")
    )
    return Warehouse(spark, str(wh_root)), report


def test_synth_writes_every_landing_kind_and_a_matching_campaign(synth_campaign):
    names = sorted(p.name for p in Path(synth_campaign.landing).iterdir() if not p.name.startswith("_"))
    assert names == [
        "allowed_patterns.txt",
        "blocked_domains.txt",
        "blocked_emails.txt",
        "code_pool.csv",
        "fan_activity.parquet",
        "registrations_000.csv",
    ]
    campaign = load_campaign(synth_campaign.campaign_yaml)
    assert len(campaign.markets) == 8 and campaign.campaign_id == "synth-5k"


def test_synth_is_deterministic_for_a_seed(spark, synth_campaign, tmp_path):
    again = generate(spark, SynthSpec(campaign_id="synth-5k", registrants=N, markets=8, seed=11), str(tmp_path))
    first = (Path(synth_campaign.landing) / "registrations_000.csv").read_bytes()
    assert (Path(again.landing) / "registrations_000.csv").read_bytes() == first


def test_truth_plants_the_mess_the_screening_stage_must_find(spark, synth_campaign):
    truth = spark.read.parquet(synth_campaign.truth)
    roles = {r["role"]: r["count"] for r in truth.groupBy("role").count().collect()}
    assert roles["genuine"] > 0.85 * N and roles["duplicate"] > 0.01 * N and roles["ring"] > 0.01 * N
    flags = truth.agg(
        *[
            F.sum(F.col(c).cast("int")).alias(c)
            for c in ("intl", "shared_phone", "disposable", "blocked_domain", "do_not_text")
        ]
    ).first()
    assert all(flags[c] > 0 for c in flags.asDict()), flags
    # rings share a payment card and register from one IP
    per_ring = (
        truth.where("role = 'ring'").groupBy("ring_id").agg(F.count(F.lit(1)).alias("n")).agg(F.max("n")).first()[0]
    )
    assert per_ring >= 6


def test_every_registration_lands_and_planted_malformed_rows_are_quarantined(spark, synth_campaign, ingested):
    wh, _ = ingested
    truth = spark.read.parquet(synth_campaign.truth)
    regs = wh.read("registrations", "synth-5k")
    good_ids = truth.where(F.col("malformed").isNull()).select("global_user_id")
    assert regs.count() == N
    assert regs.select("global_user_id").subtract(good_ids).count() == 0
    q = wh.read("quarantine", "synth-5k").where(F.col("source_file").endswith("registrations_000.csv"))
    planted = {
        kind: n for kind, n in truth.where(F.col("malformed").isNotNull()).groupBy("malformed").count().collect()
    }
    assert q.count() == sum(planted.values())
    for kind, expected_reason in MALFORMED:
        matching = q.where(F.col("reason").startswith(expected_reason)).count()
        same_reason = sum(n for k, n in planted.items() if dict(MALFORMED)[k] == expected_reason)
        assert matching == same_reason, (kind, matching, same_reason)


def test_rows_read_match_the_file_and_reconcile(synth_campaign, ingested):
    _, report = ingested
    result = report.rows[0][1]
    for f in result.files:
        path = Path(f["source_file"].removeprefix("file:"))
        assert f["rows_read"] == f["rows_ingested"] + f["rows_quarantined"]
        if f["format"] == "csv":
            data_lines = [line for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
            assert f["rows_read"] == len(data_lines), path.name
    assert result.counts["rows_read"] == result.counts["rows_ingested"] + result.counts["rows_quarantined"]


def test_planted_phones_and_emails_arrive_as_typed(spark, synth_campaign, ingested):
    wh, _ = ingested
    truth = spark.read.parquet(synth_campaign.truth).select("global_user_id", "truth_email")
    regs = wh.read("registrations", "synth-5k").join(truth, "global_user_id")
    # Ingest trims but does not normalise: the typed email lower-cases to the planted one.
    mismatched = regs.where(F.lower(F.col("email")) != F.col("truth_email")).count()
    assert mismatched == 0


def test_truth_carries_the_tags_each_declared_planted_case_must_produce(spark, synth_campaign):
    truth = spark.read.parquet(synth_campaign.truth)
    accounts = truth.where("malformed IS NULL")
    for case in PLANTED:
        flagged = accounts.where(F.col(case.flag))
        assert flagged.count() > 0, case.flag
        for tag in case.tags:
            assert flagged.where(~F.array_contains("expected_tags", tag)).count() == 0, (case.flag, tag)
    assert accounts.where("role = 'ring'").where(~F.array_contains("expected_tags", "FRAUD_RING")).isEmpty()
    assert accounts.where("role = 'genuine' AND NOT intl AND NOT invalid_phone AND NOT shared_phone "
                          "AND NOT blocked_email AND NOT blocked_domain AND NOT disposable "
                          "AND NOT allowlisted AND size(expected_tags) > 0").isEmpty()  # fmt: skip
    reasons = {r["malformed"]: r["expected_quarantine_reason"] for r in truth.where("malformed IS NOT NULL").collect()}
    assert reasons == dict(MALFORMED)
