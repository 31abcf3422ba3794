"""The data-quality suite of `scores`, run by score.

Critical: one row per fan; scores in [0, 1]; the band matches the score and the lottery score
lies inside its band. Warning: fans without a score.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN
from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.expectations import Reader, Suite, SuiteOf, all_true, expectations
from campaign_pipeline.scoring.bands import band_of


def scores_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = expectations()
    bands = campaign.scoring.bands
    name, low, high = band_of(bands, F.col("raw_score"))
    band_ok = F.col("band").eqNullSafe(name)
    inside = F.col("band_score").isNull() | ((F.col("band_score") >= low) & (F.col("band_score") <= high))
    return read("scores"), Suite(
        "scores",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=FAN),
            x.ExpectColumnValuesToBeBetween(column="raw_score", min_value=0.0, max_value=1.0),
            x.ExpectColumnValuesToBeBetween(column="band_score", min_value=0.0, max_value=1.0),
            x.ExpectColumnValuesToBeInSet(column="band", value_set=[b.name for b in bands]),
            all_true("_band_matches_score"),
            all_true("_band_score_inside_band"),
        ],
        {"_band_matches_score": band_ok, "_band_score_inside_band": inside & band_ok},
        [x.ExpectColumnValuesToNotBeNull(column="raw_score")],
    )


# The tables this stage checks after writing them, with their suites (`pipeline.SUITES` gathers them).
CHECKS: tuple[tuple[str, SuiteOf], ...] = (("scores", scores_suite),)
