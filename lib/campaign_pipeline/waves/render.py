"""Message text from per-locale Jinja2 templates, with SMS length in GSM-7 / UCS-2 segments.

Rendering is the one place Python is unavoidable here: a vectorised pandas UDF compiles each
template once per batch. Variables: campaign_name, artist, market, market_id, event_date,
wave_date, code, link, first_name, last_name. A template that names another variable is a config
error found before any row is rendered (`validate_templates`).
"""

from __future__ import annotations

import math

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import ConfigError
from campaign_pipeline.templating import BUILTIN_TEMPLATES, compile_template, template_problem

BUILTIN = "__builtin__"
# GSM 03.38 basic character set, and the extension characters that take two septets.
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")

RENDERED = T.StructType(
    [
        T.StructField("subject", T.StringType()),
        T.StructField("text", T.StringType()),
        T.StructField("sms_segments", T.IntegerType()),
        T.StructField("sms_encoding", T.StringType()),
    ]
)


def sms_segments(text: str) -> tuple[int, str]:
    """(segments, encoding): GSM-7 when every character is in the GSM alphabet, else UCS-2."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        septets = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        return (1 if septets <= 160 else math.ceil(septets / 153)), "GSM-7"
    units = len(text.encode("utf-16-le")) // 2
    return (1 if units <= 70 else math.ceil(units / 67)), "UCS-2"


def templates_of(campaign: Campaign) -> dict[str, dict[str, str]]:
    out = {BUILTIN: dict(BUILTIN_TEMPLATES)}
    for locale, t in campaign.messages.templates.items():
        out[locale] = {"sms": t.sms, "email_subject": t.email_subject, "email_body": t.email_body}
    return out


def validate_templates(campaign: Campaign) -> None:
    """Render every template in the sandbox with sample values; a bad template names its config key."""
    for locale, fields in templates_of(campaign).items():
        for field, source in fields.items():
            problem = template_problem(field, source)
            if problem:
                key = "built-in template" if locale == BUILTIN else f"messages.templates.{locale}.{field}"
                raise ConfigError(f"{key}: {problem}")
    try:
        campaign.messages.link.format(campaign_id="c", market_id="m", wave_id="w")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"messages.link: unknown placeholder {exc} (use {{campaign_id}}, {{market_id}}, {{wave_id}})"
        ) from None


def render_messages(campaign: Campaign, template_key: Column, channel: Column, variables: Column) -> Column:
    """Struct (subject, text, sms_segments, sms_encoding) per message, from a pandas UDF."""
    templates = templates_of(campaign)

    @F.pandas_udf(RENDERED)
    def render(keys: pd.Series, channels: pd.Series, values: pd.DataFrame) -> pd.DataFrame:
        compiled = {(k, f): compile_template(f, src) for k, fields in templates.items() for f, src in fields.items()}
        rows = []
        for key, ch, vals in zip(keys, channels, values.to_dict("records"), strict=True):
            context = {k: ("" if v is None else v) for k, v in vals.items()}
            if ch == "sms":
                text = compiled[(key, "sms")].render(**context)
                segments, encoding = sms_segments(text)
                rows.append((None, text, segments, encoding))
            else:
                subject = compiled[(key, "email_subject")].render(**context)
                rows.append((subject, compiled[(key, "email_body")].render(**context), None, None))
        out = pd.DataFrame(rows, columns=["subject", "text", "sms_segments", "sms_encoding"])
        out["sms_segments"] = out["sms_segments"].astype("Int32")
        return out

    return render(template_key, channel, variables)
