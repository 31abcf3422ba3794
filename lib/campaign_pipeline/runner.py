"""The stage runner: the stages of `pipeline.PIPELINE` in order, each recorded in `pipeline_runs`.

`run_pipeline` runs the selected stages in pipeline order. Before a stage it checks the stage's
prerequisites from the pipeline definition; it prints one progress line per stage (counts and
seconds) and the stage's summary, and records each stage's start, end, status, counts (with
`ms:<step>` timings), per-file reconciliation and error in `pipeline_runs`. A failing stage stops
the run; the next run of the same campaign resumes at that stage unless told otherwise. The run's
checkpoint folder (lineage policy `checkpoint`) is deleted when the run ends, failed or not.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign, Environment
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import catalog_rows
from campaign_pipeline.ops import alerts
from campaign_pipeline.pipeline import PIPELINE, Stage, producer
from campaign_pipeline.privacy import scrub
from campaign_pipeline.quality.expectations import import_in_background
from campaign_pipeline.stage_context import StageContext, StageReport, run_checkpoint_dir
from campaign_pipeline.warehouse import Warehouse


def new_run_id(campaign_id: str, now: dt.datetime) -> str:
    return f"{campaign_id}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunReport:
    run_id: str
    rows: list[tuple[str, StageReport, float]]
    resumed_from: str | None = None


def _record(
    wh: Warehouse,
    ctx: StageContext,
    started: dt.datetime,
    status: str,
    seconds: float | None = None,
    report: StageReport | None = None,
    error: str | None = None,
) -> None:
    """Append the stage run's row: `running` when it starts, its outcome when it ends (read them
    through `stage_runs`, which keeps the latest row of each (run, stage))."""
    row = {
        "run_id": ctx.run_id,
        "campaign_id": ctx.campaign_id,
        "stage": ctx.stage,
        "started_at": started,
        "finished_at": None if status == "running" else dt.datetime.now(dt.UTC),
        "status": status,
        "seconds": seconds,
        "counts": report.recorded_counts() if report else {},
        "files": report.files if report else [],
        "error": error,
    }
    # Appends only: a blind append commits in about a fifth of a MERGE's time (measured ~0.4 s
    # against ~1.9 s per stage run on a small table), and no two writers ever touch one row.
    wh.append("pipeline_runs", catalog_rows(wh.spark, "pipeline_runs", [row]))


def stage_runs(wh: Warehouse, campaign_id: str | None = None) -> DataFrame:
    """`pipeline_runs` with one row per (run, stage): its outcome if it ended, else `running`
    (a stage that died without recording its end stays `running`)."""
    runs = wh.read("pipeline_runs", campaign_id)
    latest = Window.partitionBy("run_id", "stage").orderBy(F.col("finished_at").desc_nulls_last(), F.col("status"))
    return runs.withColumn("_latest", F.row_number().over(latest)).where("_latest = 1").drop("_latest")


def resume_point(wh: Warehouse, campaign_id: str, names: list[str]) -> tuple[str | None, str | None]:
    """(run id, stage) where the campaign's latest run failed, or (None, None) if it did not fail."""
    runs = stage_runs(wh, campaign_id)
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


def check_prerequisites(wh: Warehouse, campaign_id: str, stage: Stage, done_in_this_run: set[str]) -> None:
    """Each table the stage needs holds the campaign's rows, or the stage that writes it succeeded."""
    for table in stage.needs:
        maker = producer(table, before=stage.name)
        if maker is None or maker.name in done_in_this_run:
            continue
        if not wh.read(table, campaign_id).isEmpty():
            continue
        succeeded = wh.read("pipeline_runs", campaign_id).where(
            (F.col("stage") == maker.name) & (F.col("status") == "succeeded")
        )
        if succeeded.isEmpty():
            raise PipelineError(f"stage {stage.name} needs {table} for campaign {campaign_id}: run {maker.name} first")


def _selected(stages: Iterable[str] | None) -> list[Stage]:
    if not stages:
        return list(PIPELINE)
    names = [s.name for s in PIPELINE]
    unknown = [s for s in stages if s not in names]
    if unknown:
        raise PipelineError(f"--stages: unknown stage {unknown[0]!r}; stages are {', '.join(names)}")
    return [s for s in PIPELINE if s.name in set(stages)]


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def step_line(wh: Warehouse, stage: str, step: str, seconds: float, written: list[str]) -> str:
    """`  [screen] rules_and_write done · 1.9 s · registrants 6 rows (WRITE)`: a step as it ends,
    with the rows of each table it wrote (from the table's last commit; no extra Spark job)."""
    parts = [f"  [{stage}] {step} done · {seconds:.1f} s"]
    for name in written:
        try:
            operation, rows = wh.last_commit_rows(name)
        except Exception:  # noqa: BLE001 - progress is best effort; the stage's own report is the record
            continue
        if rows is not None:
            parts.append(f"{name} {rows:,} rows ({operation})")
    return " · ".join(parts)


def _run_stage(ctx: StageContext, stage: Stage, done: set[str], out: TextIO) -> tuple[StageReport, float]:
    wh = ctx.warehouse
    started = dt.datetime.now(dt.UTC)
    if _is_terminal(out):  # on a terminal, each step as it ends, rather than minutes of silence
        ctx.on_step = lambda step, seconds, written: print(
            step_line(wh, stage.name, step, seconds, written), file=out, flush=True
        )
    # The `running` record commits while the prerequisites are read (each a Delta round trip of
    # about a second); the stage itself starts only once its record is in.
    recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-record")
    recording = recorder.submit(_record, wh, ctx, started, "running")
    recorder.shutdown(wait=False)
    t0 = time.perf_counter()
    try:
        ctx.describe("prerequisites")
        try:
            check_prerequisites(wh, ctx.campaign_id, stage, done)
        finally:
            recording.result()  # no stage without its record: a record that failed raises here
        report = stage.run(ctx)
    except Exception as exc:
        seconds = time.perf_counter() - t0
        message = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
        # Spark's and Delta's messages may quote a row's values (a cast's input, a constraint's
        # row): stored masked, as the command line and Slack show them
        _record(wh, ctx, started, "failed", seconds, error=scrub(message, limit=4000))
        print(f"[{stage.name}] FAILED after {seconds:.1f} s", file=out)
        alerts.post(ctx.env, alerts.stage_failure(ctx.campaign_id, stage.name, ctx.run_id, exc))
        raise
    finally:
        ctx.release()
        ctx.spark.sparkContext.setJobGroup("", "", interruptOnCancel=False)
    seconds = time.perf_counter() - t0
    report.steps = dict(ctx.steps)
    _record(wh, ctx, started, "succeeded", seconds, report)
    print(f"[{stage.name}] {report.headline()} · {seconds:.1f} s", file=out)
    for line in report.summary + ([report.steps_line()] if report.steps else []):
        print(f"    {line}", file=out)
    return report, seconds


def run_operation(
    spark: SparkSession,
    campaign: Campaign,
    env: Environment,
    name: str,
    run: Callable[[StageContext], StageReport],
    out: TextIO | None = None,
    now: dt.datetime | None = None,
    options: dict | None = None,
) -> tuple[str, StageReport]:
    """Run an operation that is not a pipeline stage (`maintain`) the way a stage runs: one line of
    progress, its summary, a `pipeline_runs` record, a Slack alert if it fails."""
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run_id = new_run_id(campaign.campaign_id, started)
    wh = Warehouse(spark, env.warehouse_root)
    ctx = StageContext(spark, campaign, env, wh, run_id, started, stage=name, now=now, options=options)
    report, _ = _run_stage(ctx, Stage(name, run, reads=(), writes=()), set(), out or sys.stdout)
    return run_id, report


def archived_note(wh: Warehouse, campaign_id: str) -> str | None:
    """'campaign C is archived …' when `maintain` archived the campaign (or is archiving it), else None."""
    if not wh.exists("archives"):
        return None
    row = wh.read("archives", campaign_id).first()
    if row is None:
        return None
    where = f" to {row['root']}" if row["root"] else ""
    state = "archived" if row["state"] == "archived" else "being archived"
    return f"campaign {campaign_id} is {state}{where} (maintain run {row['run_id']})"


def _remove_folder(spark: SparkSession, path: str) -> None:
    from campaign_pipeline.storage import hadoop_fs

    hpath, fs = hadoop_fs(spark, path)
    fs.delete(hpath, True)


def run_pipeline(
    spark: SparkSession,
    campaign: Campaign,
    env: Environment,
    stages: Iterable[str] | None = None,
    from_start: bool = False,
    out: TextIO | None = None,
    now: dt.datetime | None = None,
    options: dict | None = None,
) -> RunReport:
    """Run the selected (default: all) stages of the pipeline for one campaign, in pipeline order.

    `now` is the decision time (default: the run's start): waves due at or before it take no new
    fans and a wave is due to notify once it is past. Replays, backfills and tests set it; records
    keep the real clock. `options` are stage options (notify's wave, dry run, retry)."""
    out = out or sys.stdout
    stages = list(stages or [])
    selected = _selected(stages)
    import_in_background()  # the stages' checks need it (the command line has started it already)
    wh = Warehouse(spark, env.warehouse_root)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run_id = new_run_id(campaign.campaign_id, started)
    resumed_from = None
    if not stages and not from_start:
        names = [s.name for s in PIPELINE]
        previous_run, failed_stage = resume_point(wh, campaign.campaign_id, names)
        if failed_stage:
            selected = selected[names.index(failed_stage) :]
            resumed_from = failed_stage
            print(
                f"resuming after failed run {previous_run}: starting at stage {failed_stage} "
                "(earlier stages succeeded; use --from-start to redo them)",
                file=out,
            )
    archived = archived_note(wh, campaign.campaign_id)
    if archived:
        if all(s.name == "report" for s in selected):  # the scheduled report of a campaign that ended
            print(f"report: {archived}; nothing to report", file=out)
            return RunReport(run_id, [], resumed_from)
        raise PipelineError(f"{archived}: its stages no longer run (its rows are in the archive)")
    print(f"run {run_id} · campaign {campaign.campaign_id} · stages {', '.join(s.name for s in selected)}", file=out)
    report = RunReport(run_id, [], resumed_from)
    done: set[str] = set()
    try:
        for st in selected:
            ctx = StageContext(spark, campaign, env, wh, run_id, started, stage=st.name, now=now, options=options)
            result, seconds = _run_stage(ctx, st, done, out)
            done.add(st.name)
            report.rows.append((st.name, result, seconds))
    finally:
        _remove_folder(spark, run_checkpoint_dir(wh.root, run_id))
    return report
