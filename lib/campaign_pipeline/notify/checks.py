"""The data-quality suite of `notification_log`, run by notify.

Critical: one row per message; status known; a sent message has its time. Warning: outcomes of
messages no longer planned.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.expectations import Reader, Suite, SuiteOf, all_true, expectations

OUTCOMES = ["sent", "failed", "skipped"]


def notification_log_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = expectations()
    planned = read("wave_messages").select("message_id", F.lit(True).alias("_planned"))
    data = read("notification_log").join(planned, "message_id", "left")
    return data, Suite(
        "notification_log",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=["campaign_id", "message_id"]),
            x.ExpectColumnValuesToBeInSet(column="status", value_set=OUTCOMES),
            all_true("_sent_has_time"),
        ],
        {
            "_sent_has_time": (F.col("status") != "sent") | F.col("sent_at").isNotNull(),
            "_message_planned": F.coalesce(F.col("_planned"), F.lit(False)),
        },
        [all_true("_message_planned")],
    )


# The tables this stage checks after writing them, with their suites (`pipeline.SUITES` gathers them).
CHECKS: tuple[tuple[str, SuiteOf], ...] = (("notification_log", notification_log_suite),)
