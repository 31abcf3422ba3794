"""The pipeline, in one place: each stage in order, with the tables it reads and writes.

Adding a stage is writing its folder (a `run(ctx) -> StageReport` function) and one line in
`PIPELINE`. The runner checks prerequisites from `needs` (a table an earlier stage writes must
hold the campaign's rows, or that stage must have succeeded for the campaign); the CLI verbs,
`jobs/`, `benchmarks/run.py` and the stage diagram of the README and the docs all come from this list.
Every stage also writes its row of `pipeline_runs` (the runner does that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from campaign_pipeline.catalog import CATALOG, LANDED
from campaign_pipeline.codes import checks as codes_checks
from campaign_pipeline.codes.stage import assign_codes
from campaign_pipeline.ingest import checks as ingest_checks
from campaign_pipeline.ingest.stage import ingest
from campaign_pipeline.notify import checks as notify_checks
from campaign_pipeline.notify.stage import notify
from campaign_pipeline.quality.expectations import SuiteOf
from campaign_pipeline.report.stage import report
from campaign_pipeline.scoring import checks as scoring_checks
from campaign_pipeline.scoring.stage import score
from campaign_pipeline.screening import checks as screening_checks
from campaign_pipeline.screening.stage import screen
from campaign_pipeline.selection import checks as selection_checks
from campaign_pipeline.selection.stage import select
from campaign_pipeline.stage_context import StageContext, StageReport
from campaign_pipeline.waves import checks as waves_checks
from campaign_pipeline.waves.stage import plan_waves

LANDING = "landing files"  # what ingest reads: files, not a table


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], StageReport]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    needs: tuple[str, ...] = ()  # read tables that must hold the campaign's rows before the stage runs
    description: str = ""
    job: str = ""  # jobs/<job>.py, the spark-submit entry point (default: the stage name)
    # (table, suite) for the tables the stage checks after writing them (its `checks.py`)
    checks: tuple[tuple[str, SuiteOf], ...] = ()

    @property
    def job_file(self) -> str:
        return f"jobs/{self.job or self.name}.py"


INGESTED = LANDED  # registrations, fan_activity, external_scores, fanlist_ranks, code_pool, screening_lists

# fmt: off
PIPELINE: tuple[Stage, ...] = (
    Stage("ingest", ingest, reads=(LANDING, "landing_files"),
          writes=(*INGESTED, "landing_files", "quarantine"),
          description="land a campaign's files in Delta tables; unparseable rows go to quarantine",
          checks=ingest_checks.CHECKS),
    Stage("screen", screen, reads=("registrations", "fan_activity", "screening_lists"),
          writes=("registrants", "dq_results"), needs=("registrations",),
          description="normalise, validate, resolve identities, detect fraud",
          checks=screening_checks.CHECKS),
    Stage("score", score, reads=("registrants", "fan_activity", "external_scores", "fanlist_ranks"),
          writes=("scores", "dq_results"), needs=("registrants",),
          description="one raw score, band and lottery band_score per registrant",
          checks=scoring_checks.CHECKS),
    Stage("select", select, reads=("registrants", "scores", "selections", "code_assignments"),
          writes=("selections", "standings", "dq_results"), needs=("registrants", "scores"),
          description="allocate eligible scored fans to markets within capacity", job="select_fans",
          checks=selection_checks.CHECKS),
    Stage("assign_codes", assign_codes,
          reads=("selections", "code_pool", "registrants", "code_assignments", "waves"),
          writes=("code_assignments",), needs=("selections",),
          description="one unique code per selected fan by a partitioned join, placed in an open wave",
          checks=codes_checks.CHECKS),
    Stage("plan_waves", plan_waves,
          reads=("code_assignments", "registrants", "wave_messages", "notification_log", "waves"),
          writes=("wave_messages", "waves"), needs=("code_assignments",),
          description="one row per message for the fans of each wave, legacy zips",
          checks=waves_checks.CHECKS),
    Stage("notify", notify, reads=("waves", "wave_messages", "notification_log"),
          writes=("notification_log", "waves"), needs=("waves",),
          description="send due waves by SMS and email, exactly once, at the gateway's pace",
          checks=notify_checks.CHECKS),
    Stage("report", report,
          reads=("landing_files", *INGESTED, "quarantine", "registrants", "scores", "selections",
                 "code_assignments", "waves", "wave_messages", "notification_log", "dq_results",
                 "campaign_stats", "pipeline_runs"),
          writes=("reconciliation", "campaign_stats"), needs=("registrations",),
          description="reconcile stage to stage, snapshot the funnel, write the HTML report and Data Docs"),
)
# fmt: on
STAGES: dict[str, Stage] = {s.name: s for s in PIPELINE}
# Every checked table's data-quality suite, from the stage that writes it: what the report, the
# data-quality notebook and the tests run.
SUITES: dict[str, SuiteOf] = {table: suite for s in PIPELINE for table, suite in s.checks}


def producer(table: str, before: str | None = None) -> Stage | None:
    """The stage that writes `table` (the last one before stage `before`, when given)."""
    found = None
    for s in PIPELINE:
        if s.name == before:
            break
        if table in s.writes:
            found = s
    return found


def check_definition() -> list[str]:
    """Problems with `PIPELINE` itself (unknown tables, a need nobody earlier writes); empty when sound."""
    problems = []
    for s in PIPELINE:
        for table in (*s.reads, *s.writes):
            if table != LANDING and table not in CATALOG:
                problems.append(f"stage {s.name}: table {table!r} is not in the catalog (catalog.py)")
        for table in s.needs:
            if table not in s.reads:
                problems.append(f"stage {s.name}: needs {table!r} but does not list it in reads")
            if producer(table, before=s.name) is None:
                problems.append(f"stage {s.name}: needs {table!r} but no earlier stage writes it")
        for table, _ in s.checks:
            if table not in s.writes:
                problems.append(f"stage {s.name}: checks {table!r} but does not list it in writes")
    return problems


def diagram() -> str:
    """The stage diagram the README and docs/concepts/stages.md show (a test and the docs build keep them equal)."""
    lines = ["```", "landing files"]
    for s in PIPELINE:
        reads = ", ".join(t for t in s.reads if t != LANDING)
        lines.append(f"  │  {s.name:<13} {s.description}")
        if reads:
            lines.append(f"  │  {'':<13} reads  {reads}")
        lines.append(f"  │  {'':<13} writes {', '.join(s.writes)}")
        lines.append("  ▼")
    lines.append(
        "fans: SMS gateway and email queue (downstream readers follow the change feed of wave_messages and notification_log)"
    )
    lines.append("```")
    return "\n".join(lines)
