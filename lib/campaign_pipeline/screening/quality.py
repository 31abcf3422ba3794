"""Screening quality against a synthetic campaign's ground truth (tests, demo, benchmarks)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def screening_quality(registrants: DataFrame, truth: DataFrame, allow_intl_phones: bool = False) -> dict[str, float]:
    """Rates the issue's quality bar is stated in (each in [0, 1], 1 is perfect)."""
    t = truth.where(F.col("malformed").isNull())
    j = t.join(registrants.select("global_user_id", "eligible", "phone_e164"), "global_user_id")
    not_clean = F.col("intl") | F.col("blocked_email") | F.col("blocked_domain") | F.col("disposable")
    clean_genuine = (F.col("role") == "genuine") & ~not_clean & (F.pmod(F.col("person_id"), F.lit(8)) >= 3)
    must_block = F.col("blocked_email") | F.col("blocked_domain") | F.col("disposable")
    if not allow_intl_phones:
        must_block = must_block | F.col("intl")

    def rate(condition, good) -> F.Column:
        # null when nothing was planted: a rate over no accounts says nothing
        return F.sum(F.when(condition & good, 1).otherwise(0)) / F.sum(F.when(condition, 1))

    row = j.agg(
        rate(F.col("role") == "ring", ~F.col("eligible")).alias("ring_ineligible"),
        rate(clean_genuine, F.col("eligible")).alias("clean_genuine_eligible"),
        rate(must_block, ~F.col("eligible")).alias("blocked_ineligible"),
        # the allow list lifts email blocks only: an allow-listed fan with a foreign phone stays out
        rate(F.col("allowlisted") & (F.lit(allow_intl_phones) | ~F.col("intl")), F.col("eligible")).alias(
            "allowlisted_eligible"
        ),
        rate(F.col("truth_phone_e164").isNotNull(), F.col("phone_e164") == F.col("truth_phone_e164")).alias(
            "phone_e164_match"
        ),
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
