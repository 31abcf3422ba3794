"""great-expectations suites, run on Spark DataFrames, with every result written to `dq_results`.

A suite is a list of expectations, each `critical` (a failure fails the stage that wrote the
table, naming the expectation and the observed value) or `warning` (recorded and reported, the
stage goes on), plus derived boolean columns for rules that span columns or tables
(`_eligible_with_reason` must be false everywhere). The severity is great-expectations' own
(`severity=` on the expectation), so Data Docs shows it too.

Results carry counts and observed values only: the unexpected-value lists great-expectations would
keep (phone numbers, emails, codes) are switched off, so `dq_results` and Data Docs never hold
personal data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame

from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import catalog_rows
from campaign_pipeline.privacy import scrub

# great-expectations draws tqdm progress bars; a batch job's log wants one line per stage. Set
# before great_expectations (and tqdm) is first imported.
os.environ.setdefault("TQDM_DISABLE", "1")

_BACKGROUND_IMPORT: threading.Thread | None = None


def import_in_background() -> None:
    """Start importing great_expectations (about 2 s of Python) on a thread of its own, so that it
    overlaps what the caller does next (the command line calls it before it starts Spark's JVM);
    `validate` and Data Docs wait for it to finish before they use the module."""
    global _BACKGROUND_IMPORT
    if _BACKGROUND_IMPORT is None and "great_expectations" not in sys.modules:
        _BACKGROUND_IMPORT = threading.Thread(target=_import_gx, name="great-expectations-import", daemon=True)
        _BACKGROUND_IMPORT.start()


def _import_gx() -> None:
    with contextlib.suppress(Exception):  # a failing import fails again, with its error, where it is used
        import great_expectations  # noqa: F401


def great_expectations():
    """The great_expectations module, once a background import (if one was started) has finished."""
    if _BACKGROUND_IMPORT is not None:
        _BACKGROUND_IMPORT.join()
    import great_expectations as gx

    return gx


E164 = r"^\+[1-9][0-9]{6,14}$"
CRITICAL, WARNING = "critical", "warning"
# Counts and observed values, never the rows' values (they may be phones, emails or codes).
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0}
# Rows up to which `validate(engine="auto")` checks on the driver with pandas: a bounded handful
# (tests, tiny campaigns), never registrant-sized data; anything larger is checked by Spark.
SMALL_TABLE = 10_000


@dataclass
class Suite:
    """Expectations on one table: `expectations` are critical, `warnings` only reported."""

    name: str
    expectations: list = field(default_factory=list)
    derived: dict[str, Column] = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def all(self) -> list:
        for e in self.expectations:
            e.severity = CRITICAL
        for e in self.warnings:
            e.severity = WARNING
        return [*self.expectations, *self.warnings]


@dataclass(frozen=True)
class CheckResult:
    table: str
    expectation: str  # e.g. expect_column_values_to_match_regex(phone_e164)
    severity: str
    success: bool
    observed: dict
    result: dict  # great-expectations' own JSON of the result (counts only), for Data Docs

    def line(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.observed.items() if v is not None)
        return f"{self.table}: {self.expectation} [{self.severity}] observed {shown or 'nothing'}"


def _name(config) -> str:
    kwargs = config.kwargs
    column = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
    return f"{config.type}({column})"


def _columns(expectations: list, available: list[str]) -> list[str]:
    """The columns the expectations look at (in the frame's order)."""
    used: set[str] = set()
    for e in expectations:
        used |= {getattr(e, "column", None)} | set(getattr(e, "column_list", None) or [])
    return [c for c in available if c in used]


def validate(df: DataFrame, table: str, suite: Suite, engine: str = "auto") -> list[CheckResult]:
    """Run `suite` on `df` (plus the suite's derived columns); one result per expectation.

    `engine`: `spark` validates the Spark DataFrame where it is; `pandas` brings the checked
    columns to the driver (Arrow) and validates them there; `auto` (the default) takes pandas up
    to `SMALL_TABLE` rows, where great-expectations' many small Spark jobs cost more than the
    data (about 1.5 s a suite on a handful of rows), and Spark beyond. Derived columns are always
    computed by Spark first, so both engines check the same values; a test holds their results
    equal on every suite.
    """
    gx = great_expectations()
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from pyspark import StorageLevel

    expectations = suite.all()
    derived = df.select(*df.columns, *[c.alias(n) for n, c in suite.derived.items()])
    data = derived.select(*_columns(expectations, derived.columns))
    # The expectations scan the data several times: read (and derive) it once. The count that
    # picks the engine fills the cache on every partition at once and sends the driver one number
    # per partition (a `limit` probe tries one partition first: on a large table one core cached it
    # alone while the other waited, and trying them all would send each one's first rows).
    cached = data.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if engine == "auto":
            engine = "pandas" if cached.count() <= SMALL_TABLE else "spark"
        context = gx.get_context(mode="ephemeral")
        # great-expectations passes `disable=` to tqdm itself, so TQDM_DISABLE alone does not silence it.
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        gx_suite = gx.ExpectationSuite(name=suite.name)
        for expectation in expectations:
            gx_suite.add_expectation(expectation)
        if engine == "pandas":
            source = context.data_sources.add_pandas(name=f"{table}_source")
            frame = cached.toPandas()
        else:
            source = context.data_sources.add_spark(name=f"{table}_source")
            frame = cached
        batch_definition = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("whole")
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        outcome = batch.validate(gx_suite, result_format=RESULT_FORMAT)
    finally:
        cached.unpersist()
    return [check_result(table, r) for r in outcome.results]


def check_result(table: str, r) -> CheckResult:
    """One great-expectations result as the pipeline keeps it: counts and observed values, an
    exception's message masked (a failed cast quotes the value: a phone, an email), no traceback."""
    config = r.expectation_config
    observed = {
        k: r.result.get(k)
        for k in ("element_count", "unexpected_count", "unexpected_percent", "observed_value")
        if k in r.result
    }
    result = r.to_json_dict()
    if "exception_info" in result:
        result["exception_info"], raised = _masked_exceptions(result["exception_info"])
        if raised:
            observed["error"] = raised[0]
    severity = str(getattr(config.severity, "value", config.severity) or CRITICAL)
    return CheckResult(table, _name(config), severity, bool(r.success), observed, result)


def _masked_exceptions(info) -> tuple[object, list[str]]:
    """A result's `exception_info` as `dq_results` keeps it (each message masked: a failed cast
    quotes the value, which may be a phone number or an email; no traceback), and the masked
    messages of the exceptions raised. great-expectations gives one (`raised_exception`,
    `exception_message`, `exception_traceback`) or one per failed metric."""
    if not isinstance(info, dict):
        return info, []
    if "raised_exception" in info:
        message = info.get("exception_message")
        masked = scrub(str(message))
        kept = {**info, "exception_message": None if message is None else masked, "exception_traceback": None}
        return kept, [masked] if info.get("raised_exception") else []
    each = {key: _masked_exceptions(value) for key, value in info.items()}
    return {key: kept for key, (kept, _) in each.items()}, [m for _, messages in each.values() for m in messages]


def failures(results: list[CheckResult], severity: str = CRITICAL) -> list[CheckResult]:
    return [r for r in results if not r.success and r.severity == severity]


def raise_on_critical(results: list[CheckResult], stage: str = "") -> None:
    """Fail with every failed critical expectation named, with what was observed."""
    failed = failures(results)
    if failed:
        where = f"{stage}: " if stage else ""
        raise PipelineError(
            f"{where}data quality check failed (critical) on {failed[0].table}:\n  "
            + "\n  ".join(r.line() for r in failed)
        )


def record(ctx, results: list[CheckResult]) -> None:
    """Append the results to `dq_results` under the stage's run id."""
    checked_at = dt.datetime.now(dt.UTC)
    rows = [
        {
            "run_id": ctx.run_id,
            "campaign_id": ctx.campaign_id,
            "table": r.table,
            "expectation": r.expectation,
            "success": r.success,
            "observed": json.dumps(r.observed, default=str),
            "severity": r.severity,
            "result": json.dumps(r.result, default=str),
            "checked_at": checked_at,
        }
        for r in results
    ]
    ctx.warehouse.append("dq_results", catalog_rows(ctx.spark, "dq_results", rows))


def summary(results: list[CheckResult]) -> str:
    """`6 passed` / `5 passed, 1 warning: expect_...(email)`."""
    passed = sum(r.success for r in results)
    warned = failures(results, WARNING)
    text = f"{passed} passed"
    if warned:
        text += f", {len(warned)} warning{'s' if len(warned) > 1 else ''}: " + "; ".join(
            r.line().split(": ", 1)[1] for r in warned
        )
    return text


def run_suite(ctx, table: str, df: DataFrame, suite: Suite) -> str:
    """Validate `df`, append one `dq_results` row per expectation (the stage's run), raise if a
    critical expectation failed; returns the summary line the stage prints."""
    results = validate(df, table, suite)
    record(ctx, results)
    raise_on_critical(results, ctx.stage)
    return summary(results)


# A table's suite: given the campaign and a reader of its tables (`read(name)` → the campaign's
# rows), the frame to validate and its `Suite`. Each stage keeps the suites of the tables it
# writes in its `checks.py`; `pipeline.SUITES` maps every table to its suite.
Reader = Callable[[str], DataFrame]
SuiteOf = Callable[[Campaign, Reader], "tuple[DataFrame, Suite]"]


def expectations():
    """great-expectations' expectation classes (`x.ExpectColumnValuesToNotBeNull(...)`)."""
    return great_expectations().expectations


def all_true(column: str):
    """An expectation that a derived boolean column holds on every row."""
    return expectations().ExpectColumnValuesToBeInSet(column=column, value_set=[True])


def campaign_reader(warehouse, campaign_id: str) -> Reader:
    return lambda name: warehouse.read(name, campaign_id)


def check_table(ctx, table: str, suite_of: SuiteOf) -> str:
    """Run `table`'s suite on the campaign's rows, record it, fail the stage on a critical failure;
    returns the summary line the stage prints."""
    data, suite = suite_of(ctx.campaign, campaign_reader(ctx.warehouse, ctx.campaign_id))
    ctx.describe(f"expectations on {table}")
    results = validate(data, table, suite)
    record(ctx, results)
    raise_on_critical(results, ctx.stage)
    return summary(results)


def check_tables(ctx, checks: tuple[tuple[str, SuiteOf], ...]) -> list[str]:
    """`check_table` for each (table, suite) of a stage's `CHECKS`, in order; their summary lines."""
    return [check_table(ctx, table, suite_of) for table, suite_of in checks]


def check_all(campaign: Campaign, read: Reader, suites: dict[str, SuiteOf]) -> list[CheckResult]:
    """Every suite of `suites` (table → suite) on the campaign's tables, recorded nowhere, failing nothing."""
    out: list[CheckResult] = []
    for table, suite_of in suites.items():
        data, suite = suite_of(campaign, read)
        out += validate(data, table, suite)
    return out
