"""The data-quality suite of `selections`, run by select.

Critical: verdicts known; one verdict per fan; selected per market within capacity; a selected
fan has a market and a rank; a rejected one a reason.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN
from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.expectations import Reader, Suite, SuiteOf, all_true, expectations


def selections_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = expectations()
    capacity = F.create_map(*[v for m in campaign.markets for v in (F.lit(m.market_id), F.lit(m.capacity))])
    selected = F.col("verdict") == "selected"
    selections = read("selections")
    # Selected rows per market: one small aggregate joined back, not a window over (campaign,
    # market), which would sort every row and hold all rejected fans (no market) in one partition.
    per_market = (
        selections.where(selected)
        .groupBy(F.col("campaign_id").alias("_c"), F.col("market_id").alias("_m"))
        .agg(F.count(F.lit(1)).alias("_selected_in_market"))
    )
    on = (F.col("campaign_id") == F.col("_c")) & F.col("market_id").eqNullSafe(F.col("_m"))
    data = selections.join(F.broadcast(per_market), on, "left").drop("_c", "_m")
    in_market = F.coalesce(F.col("_selected_in_market"), F.lit(0))
    per_fan = Window.partitionBy(*FAN)
    one_verdict = F.size(F.collect_set("verdict").over(per_fan)) == 1
    if campaign.options.single_market:
        one_verdict = one_verdict & (F.count(F.lit(1)).over(per_fan) == 1)
    return data, Suite(
        "selections",
        [
            x.ExpectColumnValuesToBeInSet(column="verdict", value_set=["selected", "waitlisted", "rejected"]),
            all_true("_one_verdict_per_fan"),
            all_true("_within_capacity"),
            all_true("_selected_has_market_and_rank"),
            all_true("_rejected_has_reason"),
        ],
        {
            "_one_verdict_per_fan": one_verdict,
            # A capacity lowered below the selections already made fails here, loudly.
            "_within_capacity": ~selected | (in_market <= F.coalesce(capacity[F.col("market_id")], F.lit(0))),
            "_selected_has_market_and_rank": ~selected
            | (F.col("market_id").isNotNull() & F.col("market_rank").isNotNull()),
            "_rejected_has_reason": (F.col("verdict") != "rejected") | (F.size("reasons") > 0),
        },
    )


# The tables this stage checks after writing them, with their suites (`pipeline.SUITES` gathers them).
CHECKS: tuple[tuple[str, SuiteOf], ...] = (("selections", selections_suite),)
