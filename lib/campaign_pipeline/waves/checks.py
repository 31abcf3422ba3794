"""The data-quality suites of `waves` and `wave_messages`, run by plan_waves.

waves — critical: one row per wave; status known; total = the sum of the channels' counts.
Warning: failed waves.
wave_messages — critical: one row per message; channel known; recipient present; no unrendered
template; each channel's own rule (SMS only to `sms_countries`); every coded member of a
scheduled wave has a message on each channel the wave's rule gives him, or was quarantined.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN, FAN_MARKET
from campaign_pipeline.channels import all_channels, names
from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.expectations import Reader, Suite, SuiteOf, all_true, expectations
from campaign_pipeline.waves.membership import WAVE_STATUSES
from campaign_pipeline.waves.plan import coded_members, message_id, with_channel


def waves_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = expectations()
    return read("waves"), Suite(
        "waves",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=["campaign_id", "wave_id"]),
            x.ExpectColumnValuesToBeInSet(column="status", value_set=WAVE_STATUSES),
            all_true("_total_is_sms_plus_email"),
        ],
        {
            # (named for the two built-in channels; it sums every registered channel's column)
            "_total_is_sms_plus_email": F.col("total").isNull()
            | (F.col("total") == sum((F.coalesce(F.col(c), F.lit(0)) for c in names()), F.lit(0))),
            "_not_failed": F.col("status") != "failed",
        },
        [all_true("_not_failed")],
    )


def wave_messages_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = expectations()
    messages = read("wave_messages")
    # each channel's own rule on its messages (SMS: only to `sms_countries`)
    channel_rules = [(c.name, c.rule[0], c.rule[1](campaign)) for c in all_channels() if c.rule is not None]
    rules = [(column, rule) for _, column, rule in channel_rules]
    phones = read("registrants").select(*FAN, "phone_country")
    # Every coded member of a scheduled wave has a message on each channel the wave's channel rule
    # gives him (plan_waves' own rule); a member with no usable channel has none. Sent and
    # sending waves are frozen as they were planned, so they are not re-derived here.
    scheduled = read("waves").where(F.col("status") == "scheduled").select("wave_id")
    members = (
        read("code_assignments")
        .where(F.col("wave_id").isNotNull())
        .join(scheduled, "wave_id")
        .select(*FAN_MARKET, "wave_id", "code", "code_type", F.lit(None).cast("timestamp").alias("notify_at"))
    )
    due = with_channel(campaign, coded_members(campaign, members, read("registrants")))
    # A message plan_waves quarantined (its template failed on the fan, or it is too long) is
    # accounted for: its quarantine row names its message id.
    quarantined = (
        read("quarantine")
        .where(F.col("stage") == "plan_waves")
        .select(F.split(F.col("raw"), " ").getItem(1).alias("message_id"))
    )
    gaps = (
        due.where(F.col("channel").isNotNull())
        .withColumn("message_id", message_id(campaign))
        .select(*FAN_MARKET, "wave_id", "channel", "message_id")
        .join(messages.select(*FAN_MARKET, "wave_id", "channel"), [*FAN_MARKET, "wave_id", "channel"], "left_anti")
        .join(quarantined, "message_id", "left_anti")
        .agg(F.count(F.lit(1)).alias("_members_without_message"))
    )
    data = messages.join(phones, FAN, "left").crossJoin(gaps)
    text = F.concat_ws("\n", F.col("text"), F.coalesce(F.col("subject"), F.lit("")))
    return data, Suite(
        "wave_messages",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=["campaign_id", "message_id"]),
            x.ExpectColumnValuesToBeInSet(column="channel", value_set=names()),
            x.ExpectColumnValuesToNotBeNull(column="recipient"),
            all_true("_rendered"),
            *[all_true(column) for column, _ in rules],
            x.ExpectColumnValuesToBeInSet(column="_members_without_message", value_set=[0]),
        ],
        {
            "_rendered": ~text.contains("{{") & ~text.contains("{%"),
            **{column: (F.col("channel") != name) | rule for name, column, rule in channel_rules},
        },
    )


# The tables this stage checks after writing them, with their suites (`pipeline.SUITES` gathers them).
CHECKS: tuple[tuple[str, SuiteOf], ...] = (("waves", waves_suite), ("wave_messages", wave_messages_suite))
