"""The stage runner: registered stages in pipeline order, each recorded in `pipeline_runs`.

A stage is a function `(StageContext) -> StageResult` registered with `@stage(name, order)`.
`run_pipeline` runs the selected stages in order, prints one progress line per stage (counts
and seconds), names the stage's Spark jobs for the Spark UI, and records each stage's start,
end, status, counts, per-file reconciliation and error in `pipeline_runs`. A failing stage
stops the run; the next run of the same campaign resumes at that stage unless told otherwise.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign, Environment
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.session import set_stage_description
from campaign_pipeline.tables import CATALOG, FILE_COUNTS, Warehouse


@dataclass
class StageContext:
    spark: SparkSession
    campaign: Campaign
    env: Environment
    warehouse: Warehouse
    run_id: str
    started_at: dt.datetime

    @property
    def campaign_id(self) -> str:
        return self.campaign.campaign_id


@dataclass
class StageResult:
    counts: dict[str, int] = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # extra lines printed under the progress line

    def rows(self, default: int = 0) -> int:
        """The row count a stage is measured by: rows read, registrants, codes held or messages."""
        for key in ("rows_read", "registrants", "codes_held", "messages"):
            if key in self.counts:
                return self.counts[key]
        return default

    def headline(self) -> str:
        keys = [k for k in self.counts if ":" not in k and "." not in k]
        return " · ".join(f"{k.replace('_', ' ')} {self.counts[k]:,}" for k in keys[:6])


@dataclass(frozen=True)
class Stage:
    name: str
    order: int
    func: Callable[[StageContext], StageResult]
    description: str


_STAGES: dict[str, Stage] = {}


def stage(name: str, order: int, description: str = ""):
    """Register a stage function under `name`; `order` places it in the pipeline."""

    def decorate(func: Callable[[StageContext], StageResult]):
        _STAGES[name] = Stage(name, order, func, description or (func.__doc__ or "").strip().splitlines()[0])
        return func

    return decorate


def registered_stages() -> list[Stage]:
    _load_builtin_stages()
    return sorted(_STAGES.values(), key=lambda s: s.order)


def _load_builtin_stages() -> None:
    # Importing a stage module registers it; later issues add their modules here.
    import campaign_pipeline.codes.stage  # noqa: F401
    import campaign_pipeline.ingest.stage  # noqa: F401
    import campaign_pipeline.scoring.stage  # noqa: F401
    import campaign_pipeline.screening.stage  # noqa: F401
    import campaign_pipeline.selection.stage  # noqa: F401
    import campaign_pipeline.waves.stage  # noqa: F401


def new_run_id(campaign_id: str, now: dt.datetime) -> str:
    return f"{campaign_id}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunReport:
    run_id: str
    rows: list[tuple[str, StageResult, float]]
    resumed_from: str | None = None


def _record(
    wh: Warehouse,
    run_id: str,
    campaign_id: str,
    name: str,
    started: dt.datetime,
    status: str,
    seconds: float | None = None,
    result: StageResult | None = None,
    error: str | None = None,
) -> None:
    """Write the stage run's row; a running stage has no end time yet."""
    finished = None if status == "running" else dt.datetime.now(dt.UTC)
    spark = wh.spark
    schema = CATALOG["pipeline_runs"].schema
    row = (
        run_id,
        campaign_id,
        name,
        started,
        finished,
        status,
        seconds,
        {k: int(v) for k, v in (result.counts if result else {}).items()},
        [tuple(f[k] for k in FILE_COUNTS.fieldNames()) for f in (result.files if result else [])],
        error,
    )
    df = spark.createDataFrame([row], schema)
    if status == "running":  # a new (run, stage): nothing to update yet
        wh.append("pipeline_runs", df)
    else:
        wh.merge("pipeline_runs", df, update_existing=True)


def resume_point(wh: Warehouse, campaign_id: str, names: list[str]) -> tuple[str | None, str | None]:
    """(run id, stage) where the campaign's latest run failed, or (None, None) if it did not fail."""
    runs = wh.read("pipeline_runs", campaign_id)
    latest = runs.orderBy(F.col("started_at").desc(), F.col("run_id").desc()).select("run_id").first()
    if latest is None:
        return None, None
    failed = (
        runs.where((F.col("run_id") == latest[0]) & (F.col("status").isin("failed", "running")))
        .select("stage")
        .collect()
    )
    failed_names = {r[0] for r in failed}
    for name in names:
        if name in failed_names:
            return latest[0], name
    return None, None


def run_pipeline(
    spark: SparkSession,
    campaign: Campaign,
    env: Environment,
    stages: Iterable[str] | None = None,
    from_start: bool = False,
    out: TextIO | None = None,
) -> RunReport:
    """Run the selected (default: all) registered stages for one campaign, in pipeline order."""
    import sys

    out = out or sys.stdout
    known = registered_stages()
    names = [s.name for s in known]
    if stages:
        wanted = list(stages)
        unknown = [s for s in wanted if s not in names]
        if unknown:
            raise PipelineError(f"--stages: unknown stage {unknown[0]!r}; stages are {', '.join(names)}")
        selected = [s for s in known if s.name in wanted]
    else:
        selected = known
    wh = Warehouse(spark, env.warehouse_root)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run_id = new_run_id(campaign.campaign_id, now)
    resumed_from = None
    if not stages and not from_start:
        previous_run, failed_stage = resume_point(wh, campaign.campaign_id, names)
        if failed_stage:
            selected = [s for s in selected if s.order >= _STAGES[failed_stage].order]
            resumed_from = failed_stage
            print(
                f"resuming after failed run {previous_run}: starting at stage {failed_stage} "
                "(earlier stages succeeded; use --from-start to redo them)",
                file=out,
            )
    print(f"run {run_id} · campaign {campaign.campaign_id} · stages {', '.join(s.name for s in selected)}", file=out)
    report = RunReport(run_id, [], resumed_from)
    for st in selected:
        ctx = StageContext(spark, campaign, env, wh, run_id, now)
        started = dt.datetime.now(dt.UTC)
        stage_row = (wh, run_id, campaign.campaign_id, st.name, started)
        _record(*stage_row, "running")
        set_stage_description(spark, st.name, f"{campaign.campaign_id} run {run_id}")
        t0 = time.perf_counter()
        try:
            result = st.func(ctx)
        except Exception as exc:
            seconds = time.perf_counter() - t0
            message = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
            _record(*stage_row, "failed", seconds, error=message[:4000])
            print(f"[{st.name}] FAILED after {seconds:.1f} s", file=out)
            raise
        finally:
            spark.sparkContext.setJobGroup("", "", interruptOnCancel=False)
        seconds = time.perf_counter() - t0
        _record(*stage_row, "succeeded", seconds, result)
        print(f"[{st.name}] {result.headline()} · {seconds:.1f} s", file=out)
        for line in result.summary:
            print(f"    {line}", file=out)
        report.rows.append((st.name, result, seconds))
    return report
