"""The data-quality suite of `registrations`, run by ingest.

Critical: one row per landing line; fan id and registration time present; market preferences
name only the campaign's markets. Warning: a contact (email or phone).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.expectations import Reader, Suite, SuiteOf, all_true, expectations


def registrations_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = expectations()
    markets = F.array(*[F.lit(m.market_id) for m in campaign.markets])
    prefs = F.col("market_preferences")
    return read("registrations"), Suite(
        "registrations",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=["campaign_id", "source_file", "source_line"]),
            x.ExpectColumnValuesToNotBeNull(column="global_user_id"),
            x.ExpectColumnValuesToNotBeNull(column="registered_at"),
            all_true("_campaign_markets_only"),
        ],
        {
            "_campaign_markets_only": (F.size(prefs) > 0) & (F.size(F.array_except(prefs, markets)) == 0),
            "_has_contact": F.col("email").isNotNull() | F.col("phone").isNotNull(),
        },
        [all_true("_has_contact")],
    )


# The tables this stage checks after writing them, with their suites (`pipeline.SUITES` gathers them).
CHECKS: tuple[tuple[str, SuiteOf], ...] = (("registrations", registrations_suite),)
