"""Stealth rings (scalper accounts that share no identifier) on synthetic campaigns of several seeds:
screening as the stage runs it, on the generated accounts (no landing files: ingest is covered by
test_synthetic_campaign), against the ground truth."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from campaign_pipeline.screening.stage import screen_registrants
from campaign_pipeline.synth import SynthSpec
from campaign_pipeline.synth.accounts import Draw, accounts, fan_activity, make_campaign
from campaign_pipeline.synth.scorecard import screening_quality
from campaign_pipeline.synth.spec import ALLOWED_PATTERN, BLOCKED_DOMAIN, REGISTRATION_COLUMNS

N = 10_000
# With test_synthetic_campaign's 20k campaign (seed 5, asserted there too): two seeds. 202 is the
# hardest seed measured (its rings lean most on the weakest signals); `make demo` prints a third.
SEEDS = (202,)


def _screened(spark, seed: int):
    spec = SynthSpec(campaign_id=f"stealth-{seed}", registrants=N, markets=6, seed=seed, stealth_rings=20)
    campaign = make_campaign(spec)
    acc = accounts(spark, spec, campaign).localCheckpoint()
    # the registration columns as ingest types them (the landing files' strings are not written here)
    typed = {"campaign_id": F.lit(spec.campaign_id), "registered_at": F.col("truth_registered_at")}
    registrations = acc.select(
        *[typed.get(c, F.col(c)).alias(c) for c in REGISTRATION_COLUMNS],
        F.lit("registrations.csv").alias("source_file"),
        F.col("acct").alias("source_line"),
    )
    activity = fan_activity(Draw(spec.seed), acc).withColumn("campaign_id", F.lit(spec.campaign_id))
    blocked = [r["truth_email"] for r in acc.where("blocked_email").select("truth_email").collect()]
    lists = {"blocked_emails": blocked, "blocked_domains": [BLOCKED_DOMAIN], "allowed_patterns": [ALLOWED_PATTERN]}
    registrants, figures = screen_registrants(campaign, registrations, activity, lists)
    truth = acc.withColumn("malformed", F.lit(None).cast("string"))
    return screening_quality(registrants, truth), figures, registrants, truth


@pytest.mark.parametrize("seed", SEEDS)
def test_stealth_rings_are_caught_and_honest_look_alikes_stay_eligible(spark, seed):
    q, figures, registrants, truth = _screened(spark, seed)
    assert q["stealth_ineligible"] >= 0.95, q
    assert q["clean_genuine_eligible"] >= 0.995, q
    for kind in ("company", "campus", "family", "new_fan"):
        assert q[f"decoy_eligible:{kind}"] >= 0.98, (kind, q)
    # today's figures hold beside the new rule
    assert q["ring_ineligible"] >= 0.99 and q["blocked_ineligible"] == 1.0, q
    assert figures["weak_links"] > 0 and figures["weak_candidate_pairs"] >= figures["weak_links"]
    # every caught ring account names the signals that linked it, and its cluster's size
    caught = (
        registrants.join(truth.where("role = 'stealth'").select("global_user_id", "stealth_tactics"), "global_user_id")
        .where(F.array_contains("tags", "STEALTH_RING"))
        .collect()
    )
    assert caught and all(r["weak_cluster_size"] > 6 and r["weak_signals"] for r in caught)
