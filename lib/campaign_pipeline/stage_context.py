"""What every stage is given and what it gives back.

A stage is `run(ctx: StageContext) -> StageReport`: read through `ctx.warehouse`, compute with a
pure core, write, report. This module imports nothing else of the project, so stage modules, the
pipeline definition and the runner can all import it without a cycle.

- `ctx.step("name")` names and times one step of the stage (the Spark UI shows
  `<stage>: <step>`); the runner records the timings as `ms:<step>` in `pipeline_runs.counts`.
- `ctx.cut(df, "name")` cuts the lineage of `df` by the environment's one lineage policy
  (`lineage:` in the environment config): `checkpoint` to the run's checkpoint folder (reliable;
  the default), `local_checkpoint` (executor storage; what the tests use on tiny data) or `persist`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: importing them would tie this module to the rest of the project
    from pyspark.sql import DataFrame, SparkSession

LINEAGE_POLICIES = ("checkpoint", "local_checkpoint", "persist")
# Reliable checkpoints by default: at millions of rows, local checkpoints held in executor memory
# for a whole run slowed every later stage (measured at 2M, see benchmarks/RESULTS.md).
DEFAULT_LINEAGE = {"local": "checkpoint", "cluster": "checkpoint"}


def run_checkpoint_dir(warehouse_root: str, run_id: str) -> str:
    """Where a run's reliable checkpoints go; the runner deletes the folder when the run ends."""
    return f"{warehouse_root}/_checkpoints/{run_id}"


def local_cut(df: DataFrame, step: str = "") -> DataFrame:
    """The lineage cut pure functions use when called without a stage (a notebook, a unit test)."""
    return df.localCheckpoint(eager=True)


@contextmanager
def session_settings(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Spark SQL settings for the plans made (and run) inside the block; restored after it."""
    saved = {key: spark.conf.get(key, None) for key in settings}
    try:
        for key, value in settings.items():
            spark.conf.set(key, value)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


# A cut remembers how its rows are partitioned only if its plan knew before it ran, which an
# adaptive plan never does (it decides its partitions as it goes): cut without adaptive execution.
KEEP_LAYOUT = {"spark.sql.adaptive.enabled": "false"}


def layout_keeping(cut: Callable[[DataFrame, str], DataFrame]) -> Callable[[DataFrame, str], DataFrame]:
    """`cut`, made so that the cut frame keeps the hash partitioning it was computed with: a join
    or repartition on the same key later moves none of its rows."""

    def keeping(df: DataFrame, step: str = "") -> DataFrame:
        with session_settings(df.sparkSession, KEEP_LAYOUT):
            return cut(df, step)

    return keeping


@dataclass
class StageReport:
    """What a stage tells the runner: counts (recorded), per-file figures, lines printed under its
    progress line, and the seconds of each named step (filled by `StageContext.step`)."""

    counts: dict[str, int] = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)

    def rows(self, default: int = 0) -> int:
        """The row count a stage is measured by: rows read, registrants, codes held or messages."""
        for key in ("rows_read", "registrants", "codes_held", "messages"):
            if key in self.counts:
                return self.counts[key]
        return default

    def headline(self) -> str:
        keys = [k for k in self.counts if ":" not in k and "." not in k]
        return " · ".join(f"{k.replace('_', ' ')} {self.counts[k]:,}" for k in keys[:6])

    def recorded_counts(self) -> dict[str, int]:
        """Counts plus `ms:<step>` per named step, as `pipeline_runs.counts` holds them."""
        out = {k: int(v) for k, v in self.counts.items()}
        out.update({f"ms:{name}": int(seconds * 1000) for name, seconds in self.steps.items()})
        return out

    def steps_line(self) -> str:
        return "steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.steps.items())


class StageContext:
    """One stage run of one campaign: session, configs, warehouse, run id, step clock, lineage policy."""

    def __init__(
        self,
        spark: SparkSession,
        campaign: Any,
        env: Any,
        warehouse: Any,
        run_id: str,
        started_at: dt.datetime,
        stage: str = "stage",
        now: dt.datetime | None = None,
        options: dict | None = None,
    ):
        self.spark = spark
        self.campaign = campaign
        self.env = env
        self.warehouse = warehouse
        self.run_id = run_id
        self.started_at = started_at
        # The decision time: a wave due at or before it takes no new fans (default: the run's start).
        self.now = now or started_at
        self.options = dict(options or {})  # command options of the stage (e.g. notify --wave)
        self.stage = stage
        self.lineage = getattr(env, "lineage", None) or DEFAULT_LINEAGE.get(getattr(env, "mode", "local"), "checkpoint")
        if self.lineage not in LINEAGE_POLICIES:
            raise ValueError(f"lineage: expected one of {', '.join(LINEAGE_POLICIES)}, got {self.lineage!r}")
        self.steps: dict[str, float] = {}
        # Called with (step, seconds, tables written in the step) as each step ends: the runner
        # prints it, with the rows of each write from Delta's commit metrics, on a terminal.
        self.on_step: Callable[[str, float, list[str]], None] | None = None
        self._persisted: list[DataFrame] = []

    @property
    def campaign_id(self) -> str:
        return self.campaign.campaign_id

    @property
    def checkpoint_dir(self) -> str:
        return run_checkpoint_dir(self.warehouse.root, self.run_id)

    def describe(self, text: str) -> None:
        """Name the Spark jobs that follow (`<stage>: <text>`) so the Spark UI reads like the pipeline."""
        label = f"{self.stage}: {text}" if text else self.stage
        sc = self.spark.sparkContext
        sc.setJobGroup(self.stage, f"{label} · {self.campaign_id} run {self.run_id}", interruptOnCancel=False)
        sc.setJobDescription(label)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step `name` (a step entered twice adds up)."""
        self.describe(name)
        t0 = time.perf_counter()
        first_write = len(getattr(self.warehouse, "written", []))
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            self.steps[name] = self.steps.get(name, 0.0) + seconds
            if self.on_step is not None:
                written = list(dict.fromkeys(getattr(self.warehouse, "written", [])[first_write:]))
                self.on_step(name, seconds, written)

    def cut(self, df: DataFrame, name: str) -> DataFrame:
        """`df` materialised with its lineage cut by the environment's policy (job group named `name`)."""
        self.describe(name)
        if self.lineage == "local_checkpoint":
            return df.localCheckpoint(eager=True)
        if self.lineage == "checkpoint":
            sc = self.spark.sparkContext
            current = sc.getCheckpointDir() or ""
            if f"/_checkpoints/{self.run_id}/" not in current:  # Spark adds a uuid folder below ours
                sc.setCheckpointDir(self.checkpoint_dir)
            return df.checkpoint(eager=True)
        from pyspark import StorageLevel

        out = df.persist(StorageLevel.MEMORY_AND_DISK)
        out.count()
        self._persisted.append(out)
        return out

    def drop(self, df: DataFrame) -> None:
        """Give up a cut no longer needed before the stage ends: what `cut` persisted is freed now
        (a checkpoint's files go with the run's checkpoint folder when the run ends)."""
        for i, kept in enumerate(self._persisted):
            if kept is df:
                del self._persisted[i]
                df.unpersist()
                return

    def release(self) -> None:
        """Drop what `cut` persisted (the runner calls it when the stage ends)."""
        for df in self._persisted:
            df.unpersist()
        self._persisted.clear()
