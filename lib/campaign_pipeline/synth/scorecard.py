"""Screening quality against a synthetic campaign's ground truth (tests, demo, benchmarks).

The truth says, per account, the tags screening must give it (`expected_tags`, declared with each
planted case in `synth.spec`), whether its person has a single account, and its role; this module
only compares.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.screening.rules import DISQUALIFYING, TAG_ORDER
from campaign_pipeline.synth.spec import DECOYS

BLOCKING = ("BLOCKED_EMAIL", "BLOCKED_DOMAIN")


def _expects(*tags: str) -> Column:
    return F.arrays_overlap(F.col("expected_tags"), F.array(*[F.lit(t) for t in tags]))


def screening_quality(registrants: DataFrame, truth: DataFrame, allow_intl_phones: bool = False) -> dict[str, float]:
    """Rates the quality bar is stated in (each in [0, 1], 1 is perfect), plus `found:<TAG>` per
    planted tag: the share of accounts expected to carry the tag that got it. Stealth rings:
    `stealth_ineligible` (the share of stealth-ring accounts screened out) and `stealth_rings`
    (how many were planted); decoys: `decoy_eligible:<kind>` (the share kept eligible). A rate is
    None when nothing it counts was planted (or the truth predates the column)."""
    t = truth.where(F.col("malformed").isNull())
    for name, kind in (("decoy", "string"), ("stealth_ring_id", "long")):
        if name not in t.columns:  # a truth written before stealth rings and decoys
            t = t.withColumn(name, F.lit(None).cast(kind))
    j = t.join(registrants.select("global_user_id", "eligible", "phone_e164", "tags"), "global_user_id")
    disqualifying = [x for x in DISQUALIFYING if not (allow_intl_phones and x == "INTL_PHONE")]
    clean_genuine = (F.col("role") == "genuine") & F.col("single_account") & ~_expects(*disqualifying)
    must_block = _expects(*BLOCKING, *([] if allow_intl_phones else ["INTL_PHONE"]))

    def rate(condition, good) -> Column:
        # null when nothing was planted: a rate over no accounts says nothing
        return F.sum(F.when(condition & good, 1).otherwise(0)) / F.sum(F.when(condition, 1))

    planted = [tag for tag in TAG_ORDER if tag not in ("DUPLICATE_ACCOUNT", "UNCONFIRMED_PHONE")]
    row = j.agg(
        rate(_expects("FRAUD_RING"), ~F.col("eligible")).alias("ring_ineligible"),
        rate(clean_genuine, F.col("eligible")).alias("clean_genuine_eligible"),
        rate(must_block, ~F.col("eligible")).alias("blocked_ineligible"),
        # the allow list lifts email blocks only: an allow-listed fan with a foreign phone stays out
        rate(
            _expects("ALLOWLISTED") & ~_expects(*[x for x in disqualifying if x not in BLOCKING]), F.col("eligible")
        ).alias("allowlisted_eligible"),
        rate(F.col("truth_phone_e164").isNotNull(), F.col("phone_e164") == F.col("truth_phone_e164")).alias(
            "phone_e164_match"
        ),
        *[rate(_expects(tag), F.array_contains("tags", tag)).alias(f"found:{tag}") for tag in planted],
        rate(F.col("role") == "stealth", ~F.col("eligible")).alias("stealth_ineligible"),
        *[rate(F.col("decoy") == k.kind, F.col("eligible")).alias(f"decoy_eligible:{k.kind}") for k in DECOYS],
        F.count_distinct("stealth_ring_id").alias("stealth_rings"),
    ).first()
    persons = (
        j.where(F.col("role") != "ring")
        .groupBy("person_id")
        .agg(F.count(F.lit(1)).alias("accounts"), F.sum(F.col("eligible").cast("int")).alias("kept"))
        .where("accounts > 1")
    )
    multi = persons.agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.when(F.col("kept") == 1, 1).otherwise(0)).alias("ok")
    ).first()
    out = {k: (None if v is None else float(v)) for k, v in row.asDict().items()}
    out["multi_account_persons_keep_one"] = float(multi["ok"] or 0) / max(1, multi["n"] or 0)
    out["multi_account_persons"] = float(multi["n"] or 0)
    return out
