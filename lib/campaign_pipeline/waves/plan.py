"""Messages of the waves: channel rule, locale, rendered text and a deterministic message id.

Channel (`waves[].channels`), over the registry's channels in priority order (`channels`):
- `auto` (default): the first channel the fan is reachable on — SMS when he has a valid mobile
  number in `sms_countries` and is not `do_not_text`; otherwise email.
- a channel's name (`sms`, `email`): that channel only; fans who cannot get it are not messaged
  in this wave (counted).
- `both`: every channel the fan is reachable on (SMS where possible and email where possible).
A fan with no channel is counted as unreachable. Locale: the fan's if a template exists for
it, else the market's, else `messages.default_locale`, else the built-in English template.
`message_id` = sha256(campaign ␟ wave ␟ fan ␟ channel), plus the market when fans may hold several.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN, FAN_MARKET
from campaign_pipeline.channels import all_channels
from campaign_pipeline.config import Campaign
from campaign_pipeline.frames import literal_frame, require_columns
from campaign_pipeline.waves.render import BUILTIN, templates_of, with_rendered


def channels_for(mode: str, reachable: dict[str, Column]) -> Column:
    """The channels a wave's rule gives a fan, from whether he is reachable on each (registry order)."""
    on = {name: F.when(ok, F.lit(name)) for name, ok in reachable.items()}
    if mode == "auto":
        return F.array_compact(F.array(F.coalesce(*on.values())))
    if mode == "both":
        return F.array_compact(F.array(*on.values()))
    return F.array_compact(F.array(on[mode]))


def by_channel(value) -> Column:
    """`value(channel)` for the message's channel (a CASE over the registry)."""
    out = F.lit(None)
    for c in all_channels():
        out = F.when(F.col("channel") == c.name, value(c)).otherwise(out)
    return out


def market_frame(spark, campaign: Campaign) -> DataFrame:
    rows = []
    for m in campaign.markets:
        for w in campaign.waves:
            local = w.notify_at.astimezone(ZoneInfo(m.timezone))
            rows.append(
                (
                    campaign.campaign_id,
                    m.market_id,
                    w.wave_id,
                    m.name,
                    m.event_date.isoformat(),
                    local.strftime("%Y-%m-%d %H:%M %Z"),
                    m.locale,
                    w.channels,
                )
            )
    return literal_frame(
        spark,
        rows,
        "campaign_id string, market_id string, wave_id string, market_name string, event_date string, "
        "wave_date string, market_locale string, channels string",
    )


def coded_members(campaign: Campaign, members: DataFrame, registrants: DataFrame) -> DataFrame:
    """Wave members (`code_assignments` rows with their code) with contact details and their market's wave facts."""
    require_columns(members, [*FAN_MARKET, "wave_id", "code", "code_type", "notify_at"], "wave planning")
    contact = registrants.select(
        *FAN,
        "member_id",
        "email",
        "phone_e164",
        "phone_type",
        "phone_country",
        "do_not_text",
        "first_name",
        "last_name",
        F.col("locale").alias("fan_locale"),
    )
    coded = members.join(contact, FAN, "inner")
    markets = F.broadcast(market_frame(members.sparkSession, campaign))
    return coded.join(markets, ["campaign_id", "market_id", "wave_id"], "left")


def with_channel(campaign: Campaign, coded: DataFrame) -> DataFrame:
    """One row per (member, channel) by the wave's channel rule; a member with no channel keeps a null one."""
    reachable = {c.name: c.reachable(campaign) for c in all_channels()}
    channel_list = F.lit(None).cast("array<string>")
    for mode in sorted({w.channels for w in campaign.waves}):
        channel_list = F.when(F.col("channels") == mode, channels_for(mode, reachable)).otherwise(channel_list)
    return coded.withColumn("channel", F.explode_outer(channel_list))


def template_key(campaign: Campaign) -> Column:
    """The fan's locale if a template exists for it, else the market's, else the default, else built-in."""
    known = [k for k in templates_of(campaign) if k != BUILTIN]
    if not known:
        return F.lit(BUILTIN)
    default = campaign.messages.default_locale
    return (
        F.when(F.col("fan_locale").isin(*known), F.col("fan_locale"))
        .when(F.col("market_locale").isin(*known), F.col("market_locale"))
        .otherwise(F.lit(default if default in known else BUILTIN))
    )


def template_variables(campaign: Campaign) -> Column:
    return F.struct(
        F.lit(campaign.name).alias("campaign_name"),
        F.lit(campaign.artist).alias("artist"),
        F.col("market_name").alias("market"),
        F.col("market_id"),
        F.col("event_date"),
        F.col("wave_date"),
        F.coalesce(F.col("code"), F.lit("")).alias("code"),
        F.col("link"),
        F.coalesce(F.col("first_name"), F.lit("")).alias("first_name"),
        F.coalesce(F.col("last_name"), F.lit("")).alias("last_name"),
    )


def message_id(campaign: Campaign) -> Column:
    """sha256(campaign, wave, fan[, market], channel): the same message always has the same id."""
    parts = [F.col("campaign_id"), F.col("wave_id"), F.col("global_user_id")]
    if not campaign.options.single_market:
        parts.append(F.col("market_id"))
    parts.append(F.col("channel"))
    return F.substring(F.sha2(F.concat_ws("\u001f", *parts), 256), 1, 32)


def plan_messages(campaign: Campaign, members: DataFrame, registrants: DataFrame, run_id: str) -> DataFrame:
    """One row per message (catalog `wave_messages` columns) for coded wave members."""
    messages = with_channel(campaign, coded_members(campaign, members, registrants))
    link = F.lit(campaign.messages.link)
    for name in ("campaign_id", "market_id", "wave_id"):
        link = F.replace(link, F.lit("{" + name + "}"), F.col(name))
    messages = messages.where(F.col("channel").isNotNull()).withColumn("_template", template_key(campaign))
    messages = messages.withColumn("link", link)
    rendered = with_rendered(
        messages, campaign, "_r", F.col("_template"), F.col("channel"), template_variables(campaign)
    )
    default = campaign.messages.default_locale
    return rendered.select(
        "campaign_id",
        "wave_id",
        message_id(campaign).alias("message_id"),
        "global_user_id",
        "member_id",
        "market_id",
        "channel",
        by_channel(lambda c: F.col(c.recipient)).alias("recipient"),
        "code",
        "code_type",
        F.when(F.col("_template") == BUILTIN, F.lit(default)).otherwise(F.col("_template")).alias("locale"),
        F.col("_r.subject").alias("subject"),
        F.col("_r.text").alias("text"),
        "link",
        F.col("_r.sms_segments").alias("sms_segments"),
        F.col("_r.sms_encoding").alias("sms_encoding"),
        "first_name",
        "last_name",
        "email",
        F.col("phone_e164").alias("mobile_number"),
        "do_not_text",
        "notify_at",
        F.lit(run_id).alias("run_id"),
        message_problem(campaign).alias(PROBLEM),
    )


PROBLEM = "_problem"  # why a planned message is quarantined instead of sent (null: it is fine)


def message_problem(campaign: Campaign) -> Column:
    """Over the rendered messages: why one cannot be sent (its template failed on this fan's
    values, or it is longer than `messages.max_sms_segments` / `messages.max_email_bytes`), naming
    the campaign, the template's config key, the kind of message and the fan (masked)."""
    key = F.when(F.col("_template") == BUILTIN, F.lit("the built-in template")).otherwise(
        F.concat(F.lit("messages.templates."), F.col("_template"))
    )
    fan = F.when(
        F.length("global_user_id") > 4,
        F.concat(
            F.substring("global_user_id", 1, 2),
            F.repeat(F.lit("*"), F.length("global_user_id") - 4),
            F.substring("global_user_id", -2, 2),
        ),
    ).otherwise(F.repeat(F.lit("*"), F.length("global_user_id")))
    where = F.concat(F.lit(f"campaign {campaign.campaign_id}, "), F.col("channel"), F.lit(" message to fan "), fan)
    problem = F.when(
        F.col("_r.error").isNotNull(),
        F.concat(F.lit("template "), key, F.lit("."), F.col("_r.error"), F.lit(" ("), where, F.lit(")")),
    )
    for c in all_channels():
        if c.too_long is not None:
            why = c.too_long(campaign, F.col("_r.subject"), F.col("_r.text"), F.col("_r.sms_segments"))
            problem = problem.when(
                (F.col("channel") == c.name) & why.isNotNull(), F.concat(why, F.lit(" ("), where, F.lit(")"))
            )
    return problem


def unreachable(members: DataFrame, messages: DataFrame) -> DataFrame:
    """Wave members (coded fans, from `code_assignments`) with no message: no usable channel for their wave."""
    return members.select(*FAN_MARKET).join(messages.select(*FAN_MARKET).distinct(), FAN_MARKET, "left_anti")
