"""ANSI-safe parsing of landing rows: text in, typed columns plus the reasons a row cannot be used.

Spark 4 runs ANSI SQL, where a bad cast raises and fails the job. Every parser here uses
`try_*` functions instead, so a bad value becomes a reason on its row and the row goes to
`quarantine`, never a failed stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.ingest import sources as src

TRUE_WORDS = ("true", "t", "1", "yes", "y")
FALSE_WORDS = ("false", "f", "0", "no", "n")
MAX_PREFERENCES = 4
# An ISO-8601 timestamp must say its zone: `Z`, `+01:00`, `+0100` or `+01`. A bare date is UTC midnight.
_ZONE = r"(Z|z|[+-]\d{2}(:?\d{2})?)$"
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}$"
_WHITESPACE = " \t\r\n\u00a0\ufeff"


def clean_string(col: Column) -> Column:
    """Text without surrounding whitespace (tabs and no-break spaces too); blank is null."""
    trimmed = F.trim(col, F.lit(_WHITESPACE))
    return F.when(trimmed != F.lit(""), trimmed)  # not `length`: that counts every character


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
    from_text = F.split(text, r"\s*\|\s*")
    # JSON arrays are rare (JSON lines / columnar files); only they pay for the per-element trim.
    from_json = F.transform(F.from_json(text, "array<string>"), lambda m: F.trim(m, F.lit(_WHITESPACE)))
    as_array = F.when(text.startswith("["), from_json).otherwise(from_text)
    return F.array_distinct(F.array_remove(F.array_compact(as_array), ""))


Parser = Callable[[Column, str], tuple[Column, Column]]

LARGEST_WHOLE = 10**18 - 1  # 18 digits: the most `parse_long` takes
# Timestamps taken as typed: their text (`yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX`) reads back as the same
# instant. Outside these years the text is parsed as any other file's.
TYPED_YEARS = (1000, 9999)


_WHOLE_NUMBERS = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def takes_typed(kind: str, dtype: T.DataType) -> bool:
    """Whether a field of `kind` is taken from a columnar file's column of `dtype` as it is typed
    (`_as_typed`), beside its text: whole numbers for whole-number fields, timestamps for timestamps."""
    if kind in (src.LONG, src.COUNT, src.RANK):
        return isinstance(dtype, _WHOLE_NUMBERS)
    return kind == src.TIMESTAMP and isinstance(dtype, T.TimestampType)


def _as_typed(kind: str, value: Column, from_text: Column) -> Column:
    """A columnar file's typed value (`_v_<field>`, see `readers.read_columnar`; `takes_typed`
    says which) as `from_text`, the parse of its text, would give it: the same value, without a
    regular expression per value."""
    if kind in (src.LONG, src.COUNT, src.RANK):
        whole = value.cast("long")
        return F.when((whole >= -LARGEST_WHOLE) & (whole <= LARGEST_WHOLE), whole)
    if kind == src.TIMESTAMP:
        return F.when(F.year(value).between(*TYPED_YEARS), value).otherwise(from_text)
    raise ValueError(f"no typed reading for field kind {kind!r}")


def _problem_if(condition: Column, message: Column) -> Column:
    return F.when(condition, message)


def _typed(name: str, kind: str, market_ids: Sequence[str]) -> Column:
    """The typed value of a cleaned landing field (column `name` is already `clean_string`-ed)."""
    text = F.col(name)
    if kind in (src.STRING, src.ID):
        return text
    if kind == src.UPPER:
        return F.upper(text)
    if kind == src.BOOL:
        return parse_boolean(text)
    if kind == src.TIMESTAMP:
        return parse_timestamp(text)
    if kind in (src.LONG, src.COUNT, src.RANK):
        return parse_long(text)
    if kind == src.SCORE:
        return parse_double(text)
    if kind == src.MARKETS:
        return parse_markets(text)  # all given markets; cut to the campaign's below
    raise ValueError(f"unknown field kind {kind!r} for {name}")


def _problem(name: str, kind: str, required: bool) -> Column:
    """Why a field cannot be used (null if it can), from cleaned text `_t_<name>` and typed `name`."""
    text, value = F.col(f"_t_{name}"), F.col(name)

    def bad(expected: str) -> Column:
        return _problem_if(
            text.isNotNull() & value.isNull(), F.concat(F.lit(f"{name}: expected {expected}, got "), _shown(text))
        )

    def out_of_range(condition: Column, expected: str) -> Column:
        return _problem_if(condition, F.concat(F.lit(f"{name}: expected {expected}, got "), _shown(text)))

    problems: list[Column] = []
    if required:
        problems.append(_problem_if(text.isNull(), F.lit(f"missing required field {name}")))
    if kind == src.BOOL:
        problems.append(bad("true/false/1/0/yes/no"))
    elif kind == src.TIMESTAMP:
        problems.append(bad("an ISO-8601 timestamp with zone"))
    elif kind in (src.LONG, src.COUNT, src.RANK):
        problems.append(bad("a whole number"))
        if kind == src.COUNT:
            problems.append(out_of_range(value < 0, "a count >= 0"))
        if kind == src.RANK:
            problems.append(out_of_range(value < 1, "a rank >= 1"))
    elif kind == src.SCORE:
        problems.append(bad("a number in [0, 1]"))
        problems.append(out_of_range((value < 0) | (value > 1), "a number in [0, 1]"))
    elif kind == src.MARKETS:
        given = F.col("_given_markets")
        problems = [
            _problem_if(text.isNull() | given.isNull() | (F.size(given) == 0), F.lit(f"no market in {name}")),
            _problem_if(F.size(value) == 0, F.concat(F.lit(f"{name}: no market of this campaign in "), _shown(text))),
        ]
    return F.coalesce(*problems) if problems else F.lit(None).cast("string")


def parse_landing_rows(
    kind: src.FileKind, campaign_id: str, market_ids: Sequence[str]
) -> Callable[[DataFrame], DataFrame]:
    """Typed columns of `kind` plus `reasons` (empty when the row can be ingested).

    Expects the reader's columns: `source_file`, `source_line`, `raw`, `shape_problem` and one
    string column per field of the kind (null where the file has no such column), and any typed
    `_v_<field>` a columnar reader passes along (taken as `_as_typed` says). Three projections —
    clean, type, judge — so each value is cleaned and parsed once per row.
    """
    names = kind.field_names
    keep = ["source_file", "source_line", "raw", "shape_problem", *(["extra"] if kind.carries_extra else [])]

    def transform(df: DataFrame) -> DataFrame:
        as_typed = [c for c in df.columns if c.startswith("_v_")]
        cleaned = df.select(*keep, *as_typed, *[clean_string(F.col(n)).alias(n) for n in names])
        typed_cols = []
        for f in kind.fields:
            typed_cols.append(F.col(f.name).alias(f"_t_{f.name}"))
            value = _typed(f.name, f.kind, market_ids)
            if f"_v_{f.name}" in as_typed:
                value = _as_typed(f.kind, F.col(f"_v_{f.name}"), value)
            typed_cols.append(value.alias(f.name))
        if any(f.kind == src.MARKETS for f in kind.fields):
            markets_field = next(f.name for f in kind.fields if f.kind == src.MARKETS)
            typed = cleaned.select(*keep, *typed_cols)
            # The campaign's markets among those given (already distinct), in the fan's order. An IN list
            # per element, not `array_intersect` with the campaign's markets: that builds a hash set of
            # every market of the campaign for each row (1.5 s per million rows at 50 markets).
            campaign_markets = F.filter(F.col("_given_markets"), lambda m: m.isin(*market_ids))
            typed = typed.withColumnRenamed(markets_field, "_given_markets").withColumn(
                markets_field, F.slice(campaign_markets, 1, MAX_PREFERENCES)
            )
        else:
            typed = cleaned.select(*keep, *typed_cols)
        problems = [F.col("shape_problem")] + [_problem(f.name, f.kind, f.required) for f in kind.fields]
        if kind.has_campaign_column:
            cid = F.col("_t_campaign_id")
            problems.append(
                _problem_if(
                    cid.isNotNull() & (cid != F.lit(campaign_id)),
                    F.concat(F.lit("campaign_id: "), _shown(cid), F.lit(f" is not this campaign ('{campaign_id}')")),
                )
            )
        # A row whose shape is wrong has meaningless field values: report the shape alone.
        reasons = F.when(F.col("shape_problem").isNotNull(), F.array(F.col("shape_problem"))).otherwise(
            F.array_compact(F.array(*problems))
        )
        extra = ["extra"] if kind.carries_extra else []
        return typed.select("source_file", "source_line", "raw", *names, *extra, reasons.alias("reasons"))

    return transform


def parse_list_entries(kind: src.FileKind) -> Callable[[DataFrame], DataFrame]:
    """Block/allow list lines → (`list_name`, `entry`, `reasons`). Emails and domains are lower-cased."""

    def transform(df: DataFrame) -> DataFrame:
        entry = clean_string(F.col("entry"))
        if kind.name == "blocked_emails":
            value = F.lower(entry)
            problem = _problem_if(
                ~value.rlike(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
                F.concat(F.lit("blocked_emails: expected an email address, got "), _shown(entry)),
            )
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
            "source_file",
            "source_line",
            "raw",
            F.lit(kind.name).alias("list_name"),
            value.alias("entry"),
            reasons.alias("reasons"),
        )

    return transform
