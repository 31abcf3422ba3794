"""ANSI-safe parsing of landing rows: text in, typed columns plus the reasons a row cannot be used.

Spark 4 runs ANSI SQL, where a bad cast raises and fails the job. Every parser here uses
`try_*` functions instead, so a bad value becomes a reason on its row and the row goes to
`quarantine`, never a failed stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.ingest import sources as src

TRUE_WORDS = ("true", "t", "1", "yes", "y")
FALSE_WORDS = ("false", "f", "0", "no", "n")
MAX_PREFERENCES = 4
# An ISO-8601 timestamp must say its zone: `Z`, `+01:00`, `+0100` or `+01`. A bare date is UTC midnight.
_ZONE = r"(Z|z|[+-]\d{2}(:?\d{2})?)$"
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}$"


def clean_string(col: Column) -> Column:
    """Text without surrounding whitespace (tabs and no-break spaces too); blank is null."""
    trimmed = F.regexp_replace(col, r"^[\s\u00A0\uFEFF]+|[\s\u00A0\uFEFF]+$", "")
    return F.when(F.length(trimmed) > 0, trimmed)


def _shown(col: Column) -> Column:
    """A value quoted for a reason text, cut to 40 characters."""
    return F.concat(F.lit("'"), F.substring(col, 1, 40), F.lit("'"))


def parse_boolean(col: Column) -> Column:
    """true/false, t/f, 1/0, yes/no, y/n in any case; anything else is null."""
    word = F.lower(clean_string(col))
    return F.when(word.isin(*TRUE_WORDS), F.lit(True)).when(word.isin(*FALSE_WORDS), F.lit(False))


def parse_timestamp(col: Column) -> Column:
    """An ISO-8601 timestamp with zone (or a bare date, read as UTC midnight); otherwise null."""
    text = clean_string(col)
    has_zone = text.rlike(_ZONE) | text.rlike(_DATE_ONLY)
    return F.when(has_zone, text.try_cast("timestamp"))


def parse_long(col: Column) -> Column:
    """A whole number (a trailing `.0` accepted, as spreadsheets write it); otherwise null."""
    text = F.regexp_replace(clean_string(col), r"\.0+$", "")
    return F.when(text.rlike(r"^[+-]?\d{1,18}$"), text.try_cast("long"))


def parse_double(col: Column) -> Column:
    """A finite decimal number; otherwise null."""
    value = clean_string(col).try_cast("double")
    return F.when(~F.isnan(value) & (F.abs(value) < F.lit(float("inf"))), value)


def parse_markets(col: Column) -> Column:
    """Ordered, distinct market ids from `A|B|C` text or a JSON array; empty entries dropped."""
    text = clean_string(col)
    as_array = F.when(
        text.startswith("["), F.from_json(text, "array<string>")
    ).otherwise(F.split(text, r"\|"))
    trimmed = F.transform(as_array, lambda m: F.trim(m))
    return F.array_distinct(F.filter(trimmed, lambda m: m.isNotNull() & (F.length(m) > 0)))


Parser = Callable[[Column, str], tuple[Column, Column]]


def _problem_if(condition: Column, message: Column) -> Column:
    return F.when(condition, message)


def _field(name: str, kind: str, required: bool, campaign_id: str, market_ids: Sequence[str]) -> tuple[Column, Column]:
    """(typed value, problem text or null) for one landing field."""
    raw = F.col(name)
    text = clean_string(raw)
    missing = _problem_if(text.isNull(), F.lit(f"missing required field {name}")) if required else F.lit(None)

    def bad(value: Column, expected: str) -> Column:
        return _problem_if(text.isNotNull() & value.isNull(), F.concat(F.lit(f"{name}: expected {expected}, got "), _shown(text)))

    if kind in (src.STRING, src.ID):
        return text, missing
    if kind == src.UPPER:
        return F.upper(text), missing
    if kind == src.BOOL:
        value = parse_boolean(raw)
        return value, F.coalesce(missing, bad(value, "true/false/1/0/yes/no"))
    if kind == src.TIMESTAMP:
        value = parse_timestamp(raw)
        return value, F.coalesce(missing, bad(value, "an ISO-8601 timestamp with zone"))
    if kind in (src.LONG, src.COUNT, src.RANK):
        value = parse_long(raw)
        problem = bad(value, "a whole number")
        if kind == src.COUNT:
            problem = F.coalesce(problem, _problem_if(value < 0, F.concat(F.lit(f"{name}: expected a count >= 0, got "), _shown(text))))
        if kind == src.RANK:
            problem = F.coalesce(problem, _problem_if(value < 1, F.concat(F.lit(f"{name}: expected a rank >= 1, got "), _shown(text))))
        return value, F.coalesce(missing, problem)
    if kind == src.SCORE:
        value = parse_double(raw)
        out_of_range = _problem_if((value < 0) | (value > 1), F.concat(F.lit(f"{name}: expected a number in [0, 1], got "), _shown(text)))
        return value, F.coalesce(missing, bad(value, "a number in [0, 1]"), out_of_range)
    if kind == src.MARKETS:
        given = parse_markets(raw)
        known = F.array(*[F.lit(m) for m in market_ids])
        value = F.slice(F.filter(given, lambda m: F.array_contains(known, m)), 1, MAX_PREFERENCES)
        no_market = _problem_if(
            text.isNull() | (F.size(given) == 0) | given.isNull(), F.lit(f"no market in {name}")
        )
        none_known = _problem_if(
            F.size(value) == 0,
            F.concat(F.lit(f"{name}: no market of this campaign in "), _shown(text)),
        )
        return value, F.coalesce(no_market, none_known)
    raise ValueError(f"unknown field kind {kind!r} for {name}")


def parse_landing_rows(kind: src.FileKind, campaign_id: str, market_ids: Sequence[str]) -> Callable[[DataFrame], DataFrame]:
    """Typed columns of `kind` plus `reasons` (empty when the row can be ingested).

    Expects the reader's columns: `source_file`, `source_line`, `raw`, `shape_problem` and one
    string column per field of the kind (null where the file has no such column).
    """

    def transform(df: DataFrame) -> DataFrame:
        values, problems = [], [F.col("shape_problem")]
        for f in kind.fields:
            value, problem = _field(f.name, f.kind, f.required, campaign_id, market_ids)
            values.append(value.alias(f.name))
            problems.append(problem)
        if kind.has_campaign_column:
            cid = clean_string(F.col("campaign_id"))
            problems.append(
                _problem_if(
                    cid.isNotNull() & (cid != F.lit(campaign_id)),
                    F.concat(F.lit("campaign_id: "), _shown(cid), F.lit(f" is not this campaign ('{campaign_id}')")),
                )
            )
        reasons = F.filter(F.array(*problems), lambda p: p.isNotNull())
        # A row whose shape is wrong has meaningless field values: report the shape alone.
        reasons = F.when(F.col("shape_problem").isNotNull(), F.array(F.col("shape_problem"))).otherwise(reasons)
        extra = [F.col("extra")] if kind.carries_extra else []
        return df.select("source_file", "source_line", "raw", *values, *extra, reasons.alias("reasons"))

    return transform


def parse_list_entries(kind: src.FileKind) -> Callable[[DataFrame], DataFrame]:
    """Block/allow list lines → (`list_name`, `entry`, `reasons`). Emails and domains are lower-cased."""

    def transform(df: DataFrame) -> DataFrame:
        entry = clean_string(F.col("entry"))
        if kind.name == "blocked_emails":
            value = F.lower(entry)
            problem = _problem_if(~value.rlike(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), F.concat(F.lit("blocked_emails: expected an email address, got "), _shown(entry)))
        elif kind.name == "blocked_domains":
            value = F.regexp_replace(F.lower(entry), r"^@", "")
            problem = _problem_if(
                ~value.rlike(r"^([a-z0-9-]+\.)+[a-z0-9-]{2,}$"),
                F.concat(F.lit("blocked_domains: expected a domain name, got "), _shown(entry)),
            )
        else:
            value = F.lower(entry)
            problem = F.lit(None).cast("string")
        reasons = F.when(F.col("shape_problem").isNotNull(), F.array(F.col("shape_problem"))).otherwise(
            F.filter(F.array(problem), lambda p: p.isNotNull())
        )
        return df.select(
            "source_file", "source_line", "raw", F.lit(kind.name).alias("list_name"), value.alias("entry"), reasons.alias("reasons")
        )

    return transform
