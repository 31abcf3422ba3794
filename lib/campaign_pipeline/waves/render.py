"""Message text from per-locale Jinja2 templates, with SMS length in GSM-7 / UCS-2 segments.

Templates made only of text and `{{ variable }}` outputs (the built-in ones and most real ones)
are rendered by Spark's own string functions: the literal parts Jinja2's parser finds, the
variables' values in between (HTML-escaped as markupsafe does where the template autoescapes),
and the SMS segments from a regular expression over the GSM alphabet and the UTF-16 length.
Any other template (filters, conditions, loops) is rendered by Jinja2 in its sandbox, in a
vectorised pandas UDF that compiles each template once per batch; the tests hold the two to
identical output. Variables: campaign_name, artist, market, market_id, event_date,
wave_date, code, link, first_name, last_name. A template that names another variable is a config
error found before any row is rendered (`validate_templates`). A template that fails on one
fan's values (a `.split()[0]` of an empty name) fails that message only: its `error` says which
field and why, and plan_waves quarantines it.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.channels import all_channels
from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import ConfigError
from campaign_pipeline.privacy import scrub
from campaign_pipeline.python_workers import keep_zip_directories
from campaign_pipeline.templating import (
    BUILTIN_TEMPLATES,
    GSM7_BASIC,
    GSM7_EXTENDED,
    VARIABLES,
    autoescaped,
    compile_template,
    literal_parts,
    render_bounded,
    sms_segments,
    template_problem,
)

BUILTIN = "__builtin__"
_GSM7_ONLY = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(GSM7_BASIC | GSM7_EXTENDED)) + "]*\\z"
_GSM7_EXT = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted(GSM7_EXTENDED)) + "]"
# markupsafe.escape, in its order (the ampersand first)
_HTML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("'", "&#39;"))

RENDERED = T.StructType(
    [
        T.StructField("subject", T.StringType()),
        T.StructField("text", T.StringType()),
        T.StructField("sms_segments", T.IntegerType()),
        T.StructField("sms_encoding", T.StringType()),
        # why this message could not be rendered (`<field>: <error>`), else null
        T.StructField("error", T.StringType()),
    ]
)


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


def render_messages(
    campaign: Campaign, template_key: Column, channel: Column, variables: Column, engine: str = "auto"
) -> Column:
    """Struct (subject, text, sms_segments, sms_encoding, error) per message.

    `engine`: "spark" (every template must be text and variables only), "jinja" (the pandas UDF),
    or "auto": Spark when every template allows it, else Jinja2. As one Column, Spark's rendering
    writes out the text once for each SMS figure that reads it; `with_rendered` does not.
    """
    templates, parts = templates_of(campaign), _spark_parts(campaign, engine)
    if parts is not None:
        return _with_sms_figures(*_render_in_spark(templates, parts, template_key, channel, variables))
    return _render_in_jinja(templates, template_key, channel, variables)


def with_rendered(
    df: DataFrame,
    campaign: Campaign,
    name: str,
    template_key: Column,
    channel: Column,
    variables: Column,
    engine: str = "auto",
) -> DataFrame:
    """`df` with column `name`: what `render_messages` gives, each message's text rendered once.

    Spark's rendering is a CASE over channels and templates of concatenated, escaped values. The
    SMS segments read the text four times over (the GSM-7 test, its septets, its UTF-16 units),
    and inside a CASE Spark's common-subexpression elimination does not share it: rendered in
    the same projection, each text was built about six times. Here the text is a column of its
    own first, and the figures read that column.
    """
    templates, parts = templates_of(campaign), _spark_parts(campaign, engine)
    if parts is None:
        return df.withColumn(name, _render_in_jinja(templates, template_key, channel, variables))
    subject, text, counted = _render_in_spark(templates, parts, template_key, channel, variables)
    s, t, c = (f"__{name}_{part}" for part in ("subject", "text", "counted"))
    clash = sorted({s, t, c} & set(df.columns))
    if clash:
        raise ValueError(f"with_rendered: the frame already has column {clash[0]}, which rendering uses for itself")
    # Not cheap and read several times, so Spark keeps this projection apart from the next one.
    staged = df.select("*", subject.alias(s), text.alias(t), counted.alias(c))
    return staged.withColumn(name, _with_sms_figures(F.col(s), F.col(t), F.col(c))).drop(s, t, c)


def _spark_parts(campaign: Campaign, engine: str) -> dict | None:
    """The templates' literal parts by (template, field) when Spark's string functions render them
    (see `render_messages`), else None (Jinja2 renders)."""
    if engine not in ("spark", "auto"):
        return None
    templates = templates_of(campaign)
    parts = {(k, f): literal_parts(f, src) for k, fields in templates.items() for f, src in fields.items()}
    return parts if engine == "spark" or all(p is not None for p in parts.values()) else None


def _value(variables: Column, name: str, escaped: bool) -> Column:
    text = F.coalesce(variables[name].cast("string"), F.lit(""))
    if escaped:
        for raw, entity in _HTML_ESCAPES:
            text = F.replace(text, F.lit(raw), F.lit(entity))
    return text


def _render_in_spark(templates, parts, template_key: Column, channel: Column, variables: Column):
    """(subject, text, whether SMS segments are counted) of each message, in Spark's functions."""

    def field(name: str) -> Column:
        out = F.lit(None).cast("string")
        for key, fields in templates.items():
            pieces = parts[(key, name)]
            if pieces is None:
                raise ConfigError(f"template {key}.{name} needs Jinja2 (filters or blocks); render with engine='jinja'")
            escaped = autoescaped(name, fields[name])
            cols = [F.lit(v) if kind == "text" else _value(variables, v, escaped) for kind, v in pieces]
            out = F.when(template_key == F.lit(key), F.concat(*cols) if cols else F.lit("")).otherwise(out)
        return out

    text = F.lit(None).cast("string")
    subject = F.lit(None).cast("string")
    counted = F.lit(False)
    for c in all_channels():
        on = channel == F.lit(c.name)
        text = F.when(on, field(c.text_template)).otherwise(text)
        if c.subject_template:
            subject = F.when(on, field(c.subject_template)).otherwise(subject)
        if c.counts_segments:
            counted = counted | on
    return subject, text, counted


def _with_sms_figures(subject: Column, text: Column, counted: Column) -> Column:
    """The RENDERED struct of a rendered subject and text: SMS segments and encoding where counted."""
    gsm = text.rlike(_GSM7_ONLY)
    septets = F.length(text) + F.length(text) - F.length(F.regexp_replace(text, _GSM7_EXT, ""))
    units = (F.octet_length(F.encode(text, "UTF-16LE")) / 2).cast("long")
    segments = F.when(gsm, F.when(septets <= 160, 1).otherwise(F.ceil(septets / 153))).otherwise(
        F.when(units <= 70, 1).otherwise(F.ceil(units / 67))
    )
    return F.struct(
        subject.alias("subject"),
        text.alias("text"),
        F.when(counted, segments.cast("int")).alias("sms_segments"),
        F.when(counted, F.when(gsm, "GSM-7").otherwise("UCS-2")).alias("sms_encoding"),
        F.lit(None).cast("string").alias("error"),  # text and variables only: nothing can fail
    )


def _render_in_jinja(templates, template_key: Column, channel: Column, variables: Column) -> Column:
    # per channel: (text field, subject field, whether SMS segments are counted), for the UDF
    shapes = {c.name: (c.text_template, c.subject_template, c.counts_segments) for c in all_channels()}

    @F.pandas_udf(RENDERED)
    def render(keys: pd.Series, channels: pd.Series, values: pd.DataFrame) -> pd.DataFrame:
        keep_zip_directories()  # the worker's next tasks start faster
        compiled = {(k, f): compile_template(f, src) for k, fields in templates.items() for f, src in fields.items()}
        names = [n for n in VARIABLES if n in values.columns]
        columns = [["" if v is None else v for v in values[n].tolist()] for n in names]
        rows = []
        for key, ch, *vals in zip(keys.tolist(), channels.tolist(), *columns, strict=True):
            context = dict(zip(names, vals, strict=True))
            text_field, subject_field, counts_segments = shapes.get(ch, (None, None, False))
            field = text_field
            try:  # one message that cannot be rendered is quarantined; the others go on
                subject = None
                if subject_field:
                    field = subject_field
                    subject = render_bounded(compiled[(key, subject_field)], context)
                    field = text_field
                text = render_bounded(compiled[(key, text_field)], context)
                segments, encoding = sms_segments(text) if counts_segments else (None, None)
                rows.append((subject, text, segments, encoding, None))
            except Exception as exc:  # noqa: BLE001 - whatever a template raises on a row is that row's problem
                # The error may quote the fan's values (a name, the code): masked before it is kept.
                text = scrub(str(exc), hide=tuple(str(v) for v in vals if v))
                first = text.strip().splitlines()[0][:300] if text.strip() else ""
                rows.append(
                    (None, None, None, None, f"{field}: {type(exc).__name__}" + (f": {first}" if first else ""))
                )
        out = pd.DataFrame(rows, columns=["subject", "text", "sms_segments", "sms_encoding", "error"])
        out["sms_segments"] = out["sms_segments"].astype("Int32")
        return out

    return render(template_key, channel, variables)
