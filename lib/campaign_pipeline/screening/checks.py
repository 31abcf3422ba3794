"""The data-quality suite of `registrants`, run by screen.

Critical: one row per fan; E.164 phones; eligible exactly when no disqualifying reason.
Warning: a contact; clusters of at least one account, weak-link clusters of at least two.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN
from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.expectations import E164, Reader, Suite, SuiteOf, all_true, expectations
from campaign_pipeline.screening.rules import DISQUALIFYING


def registrants_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:

    x = expectations()
    reasons_ok = F.array_intersect(F.col("ineligible_reasons"), F.array(*[F.lit(t) for t in DISQUALIFYING]))
    return read("registrants"), Suite(
        "registrants",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=FAN),
            x.ExpectColumnValuesToNotBeNull(column="global_user_id"),
            x.ExpectColumnValuesToNotBeNull(column="eligible"),
            x.ExpectColumnValuesToMatchRegex(column="phone_e164", regex=E164),
            x.ExpectColumnValuesToBeInSet(column="_eligible_with_reason", value_set=[False]),
            x.ExpectColumnValuesToBeInSet(column="_ineligible_without_reason", value_set=[False]),
        ],
        {
            "_eligible_with_reason": F.col("eligible") & (F.size(reasons_ok) > 0),
            "_ineligible_without_reason": ~F.col("eligible") & (F.size(F.col("ineligible_reasons")) == 0),
            "_has_contact": F.col("email_canonical").isNotNull() | F.col("phone_e164").isNotNull(),
        },
        [
            all_true("_has_contact"),
            x.ExpectColumnValuesToBeBetween(column="cluster_size", min_value=1),
            # a weak-link cluster links at least two accounts (null: not weakly linked)
            x.ExpectColumnValuesToBeBetween(column="weak_cluster_size", min_value=2),
        ],
    )


# The tables this stage checks after writing them, with their suites (`pipeline.SUITES` gathers them).
CHECKS: tuple[tuple[str, SuiteOf], ...] = (("registrants", registrants_suite),)
