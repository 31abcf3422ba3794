"""The data-quality suite of every table the pipeline writes, in one place.

`SUITES[table](campaign, read)` gives the frame to validate and its `Suite`; `read(name)` returns
one campaign's rows of a table. The stage that writes a table runs its suite (`check_table`) and
fails on a critical expectation; the report stage and the data-quality notebook run them all
(`check_all`) without failing.

| table | critical (fails the stage) | warning (recorded, reported) |
|---|---|---|
| registrations | one row per landing line; fan id, registration time, a campaign market | a contact (email or phone) |
| registrants | one row per fan; E.164 phones; eligible ⇔ no disqualifying reason | a contact; clusters ≥ 1 |
| scores | one row per fan; scores in [0, 1]; band matches the score | fans without a score |
| selections | verdicts known; one verdict per fan; selected per market ≤ capacity; ... | |
| code_assignments | one code per (fan, market); codes unique per campaign; `valid_from < valid_until`; coded fans selected | coded fans in no wave |
| waves | one row per wave; status known; total = SMS + email | failed waves |
| wave_messages | one row per message; channel known; no unrendered `{{`; SMS only to `sms_countries`; every coded wave member has a message or no usable channel | |
| notification_log | one row per message; status known; a sent message has its time | outcomes of messages no longer planned |
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.expectations import (
    E164,
    CheckResult,
    Suite,
    great_expectations,
    raise_on_critical,
    record,
    summary,
    validate,
)
from campaign_pipeline.tables import FAN, FAN_MARKET

Reader = Callable[[str], DataFrame]
WAVE_STATUSES = ["scheduled", "sending", "completed", "completed_with_failures", "failed"]
OUTCOMES = ["sent", "failed", "skipped"]


def _gx():
    return great_expectations().expectations


def _true(column: str):
    return _gx().ExpectColumnValuesToBeInSet(column=column, value_set=[True])


def registrations_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = _gx()
    markets = F.array(*[F.lit(m.market_id) for m in campaign.markets])
    prefs = F.col("market_preferences")
    return read("registrations"), Suite(
        "registrations",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=["campaign_id", "source_file", "source_line"]),
            x.ExpectColumnValuesToNotBeNull(column="global_user_id"),
            x.ExpectColumnValuesToNotBeNull(column="registered_at"),
            _true("_campaign_markets_only"),
        ],
        {
            "_campaign_markets_only": (F.size(prefs) > 0) & (F.size(F.array_except(prefs, markets)) == 0),
            "_has_contact": F.col("email").isNotNull() | F.col("phone").isNotNull(),
        },
        [_true("_has_contact")],
    )


def registrants_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    from campaign_pipeline.screening.rules import DISQUALIFYING

    x = _gx()
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
        [_true("_has_contact"), x.ExpectColumnValuesToBeBetween(column="cluster_size", min_value=1)],
    )


def scores_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    from campaign_pipeline.scoring.model import band_of

    x = _gx()
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
            _true("_band_matches_score"),
            _true("_band_score_inside_band"),
        ],
        {"_band_matches_score": band_ok, "_band_score_inside_band": inside & band_ok},
        [x.ExpectColumnValuesToNotBeNull(column="raw_score")],
    )


def selections_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = _gx()
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
            _true("_one_verdict_per_fan"),
            _true("_within_capacity"),
            _true("_selected_has_market_and_rank"),
            _true("_rejected_has_reason"),
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


def code_assignments_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = _gx()
    selected = read("selections").where(F.col("verdict") == "selected").select(*FAN_MARKET, F.lit(True).alias("_sel"))
    data = read("code_assignments").join(selected, FAN_MARKET, "left")
    waves = [w.wave_id for w in campaign.waves]
    return data, Suite(
        "code_assignments",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=FAN_MARKET),
            x.ExpectColumnValuesToBeUnique(column="code"),
            _true("_validity_ordered"),
            _true("_code_unless_tm"),
            _true("_coded_fan_selected"),
        ],
        {
            "_validity_ordered": F.col("valid_from").isNull() | (F.col("valid_from") < F.col("valid_until")),
            "_code_unless_tm": (F.col("code_type") == "tm") | F.col("code").isNotNull(),
            "_coded_fan_selected": F.coalesce(F.col("_sel"), F.lit(False)),
            "_in_a_wave": F.col("wave_id").isNotNull(),
            "_wave_configured": F.col("wave_id").isNull() | F.col("wave_id").isin(*waves),
        },
        [_true("_in_a_wave"), _true("_wave_configured")],
    )


def waves_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = _gx()
    return read("waves"), Suite(
        "waves",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=["campaign_id", "wave_id"]),
            x.ExpectColumnValuesToBeInSet(column="status", value_set=WAVE_STATUSES),
            _true("_total_is_sms_plus_email"),
        ],
        {
            "_total_is_sms_plus_email": F.col("total").isNull()
            | (F.col("total") == F.coalesce(F.col("sms"), F.lit(0)) + F.coalesce(F.col("email"), F.lit(0))),
            "_not_failed": F.col("status") != "failed",
        },
        [_true("_not_failed")],
    )


def wave_messages_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = _gx()
    messages = read("wave_messages")
    countries = F.lit(list(campaign.options.sms_countries))
    phones = read("registrants").select(*FAN, "phone_country")
    # Every coded member of a scheduled wave has a message on each channel the wave's channel rule
    # gives him (plan_waves' own rule); a member with no usable channel has none. Sent and
    # sending waves are frozen as they were planned, so they are not re-derived here.
    from campaign_pipeline.waves.plan import coded_members, message_id, with_channel

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
            x.ExpectColumnValuesToBeInSet(column="channel", value_set=["sms", "email"]),
            x.ExpectColumnValuesToNotBeNull(column="recipient"),
            _true("_rendered"),
            _true("_sms_in_sms_countries"),
            x.ExpectColumnValuesToBeInSet(column="_members_without_message", value_set=[0]),
        ],
        {
            "_rendered": ~text.contains("{{") & ~text.contains("{%"),
            "_sms_in_sms_countries": (F.col("channel") != "sms") | F.array_contains(countries, F.col("phone_country")),
        },
    )


def notification_log_suite(campaign: Campaign, read: Reader) -> tuple[DataFrame, Suite]:
    x = _gx()
    planned = read("wave_messages").select("message_id", F.lit(True).alias("_planned"))
    data = read("notification_log").join(planned, "message_id", "left")
    return data, Suite(
        "notification_log",
        [
            x.ExpectCompoundColumnsToBeUnique(column_list=["campaign_id", "message_id"]),
            x.ExpectColumnValuesToBeInSet(column="status", value_set=OUTCOMES),
            _true("_sent_has_time"),
        ],
        {
            "_sent_has_time": (F.col("status") != "sent") | F.col("sent_at").isNotNull(),
            "_message_planned": F.coalesce(F.col("_planned"), F.lit(False)),
        },
        [_true("_message_planned")],
    )


SUITES: dict[str, Callable[[Campaign, Reader], tuple[DataFrame, Suite]]] = {
    "registrations": registrations_suite,
    "registrants": registrants_suite,
    "scores": scores_suite,
    "selections": selections_suite,
    "code_assignments": code_assignments_suite,
    "waves": waves_suite,
    "wave_messages": wave_messages_suite,
    "notification_log": notification_log_suite,
}


def campaign_reader(warehouse, campaign_id: str) -> Reader:
    return lambda name: warehouse.read(name, campaign_id)


def check_table(ctx, table: str) -> str:
    """Run `table`'s suite on the campaign's rows, record it, fail the stage on a critical failure;
    returns the summary line the stage prints."""
    data, suite = SUITES[table](ctx.campaign, campaign_reader(ctx.warehouse, ctx.campaign_id))
    ctx.describe(f"expectations on {table}")
    results = validate(data, table, suite)
    record(ctx, results)
    raise_on_critical(results, ctx.stage)
    return summary(results)


def check_all(campaign: Campaign, read: Reader, tables=None) -> list[CheckResult]:
    """Every suite (or those of `tables`) on the campaign's tables, recorded nowhere, failing nothing."""
    out: list[CheckResult] = []
    for table in tables or SUITES:
        data, suite = SUITES[table](campaign, read)
        out += validate(data, table, suite)
    return out
