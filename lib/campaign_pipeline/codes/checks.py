"""The data-quality suite of `code_assignments`, run by assign_codes.

Critical: one code per (fan, market); codes unique per campaign; validity ordered; a code unless
Ticketmaster issues it; coded fans selected. Warning: coded fans in no (configured) wave.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN_MARKET
from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.expectations import Reader, Suite, SuiteOf, all_true, expectations


def code_assignments_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = expectations()
    selected = read("selections").where(F.col("verdict") == "selected").select(*FAN_MARKET, F.lit(True).alias("_sel"))
    data = read("code_assignments").join(selected, FAN_MARKET, "left")
    waves = [w.wave_id for w in campaign.waves]
    return data, Suite(
        "code_assignments",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=FAN_MARKET),
            x.ExpectColumnValuesToBeUnique(column="code"),
            all_true("_validity_ordered"),
            all_true("_code_unless_tm"),
            all_true("_coded_fan_selected"),
        ],
        {
            "_validity_ordered": F.col("valid_from").isNull() | (F.col("valid_from") < F.col("valid_until")),
            "_code_unless_tm": (F.col("code_type") == "tm") | F.col("code").isNotNull(),
            "_coded_fan_selected": F.coalesce(F.col("_sel"), F.lit(False)),
            "_in_a_wave": F.col("wave_id").isNotNull(),
            "_wave_configured": F.col("wave_id").isNull() | F.col("wave_id").isin(*waves),
        },
        [all_true("_in_a_wave"), all_true("_wave_configured")],
    )


# The tables this stage checks after writing them, with their suites (`pipeline.SUITES` gathers them).
CHECKS: tuple[tuple[str, SuiteOf], ...] = (("code_assignments", code_assignments_suite),)
