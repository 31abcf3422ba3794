"""great-expectations suites, run on Spark DataFrames, with every result written to `dq_results`.

A suite is a list of expectation objects plus, where a rule spans columns, derived boolean
columns that the suite checks (`_eligible_with_reason` must be false everywhere). A failed suite
fails the stage with the failed expectations named.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.errors import PipelineError
from campaign_pipeline.tables import FAN, catalog_rows

# great-expectations draws tqdm progress bars; a batch job's log wants one line per stage. Set
# before great_expectations (and tqdm) is first imported.
os.environ.setdefault("TQDM_DISABLE", "1")

E164 = r"^\+[1-9][0-9]{6,14}$"


@dataclass
class Suite:
    name: str
    expectations: list = field(default_factory=list)
    derived: dict[str, Column] = field(default_factory=dict)


def registrants_suite(disqualifying: tuple[str, ...]) -> Suite:
    import great_expectations as gx

    reasons_ok = F.array_intersect(F.col("ineligible_reasons"), F.array(*[F.lit(t) for t in disqualifying]))
    return Suite(
        "registrants",
        [
            gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=FAN),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="global_user_id"),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="eligible"),
            gx.expectations.ExpectColumnValuesToMatchRegex(column="phone_e164", regex=E164),
            gx.expectations.ExpectColumnValuesToBeInSet(column="_eligible_with_reason", value_set=[False]),
            gx.expectations.ExpectColumnValuesToBeInSet(column="_ineligible_without_reason", value_set=[False]),
        ],
        {
            "_eligible_with_reason": F.col("eligible") & (F.size(reasons_ok) > 0),
            "_ineligible_without_reason": ~F.col("eligible") & (F.size(F.col("ineligible_reasons")) == 0),
        },
    )


def run_suite(ctx, table: str, df: DataFrame, suite: Suite) -> str:
    """Validate `df`, append one `dq_results` row per expectation (the stage's run), raise if any failed."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # great-expectations passes `disable=` to tqdm itself, so TQDM_DISABLE alone does not silence it.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_spark(name=f"{table}_source")
    asset = source.add_dataframe_asset(name=table)
    batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    data = df.select(*df.columns, *[c.alias(n) for n, c in suite.derived.items()])
    batch = batch_definition.get_batch(batch_parameters={"dataframe": data})
    gx_suite = gx.ExpectationSuite(name=suite.name)
    for expectation in suite.expectations:
        gx_suite.add_expectation(expectation)
    outcome = batch.validate(gx_suite)
    rows, failed = [], []
    for r in outcome.results:
        config = r.expectation_config
        column = config.kwargs.get("column") or ",".join(config.kwargs.get("column_list") or [])
        name = f"{config.type}({column})"
        observed = {
            k: r.result.get(k)
            for k in ("element_count", "unexpected_count", "unexpected_percent", "observed_value")
            if k in r.result
        }
        rows.append(
            {
                "run_id": ctx.run_id,
                "campaign_id": ctx.campaign_id,
                "table": table,
                "expectation": name,
                "success": bool(r.success),
                "observed": json.dumps(observed, default=str),
            }
        )
        if not r.success:
            failed.append(f"{name}: {observed}")
    ctx.warehouse.append("dq_results", catalog_rows(ctx.spark, "dq_results", rows))
    if failed:
        raise PipelineError(f"data quality checks failed on {table}: " + "; ".join(failed))
    return f"{len(rows)} passed"
