"""The assign_codes stage: exactly one code per selected fan (per market when fans may hold several).

Existing rows of `code_assignments` never change: the plan reads the campaign's assignments at
one Delta version v, checks uniqueness over those + the new rows (a violation fails the stage and
commits nothing), and appends the new rows in a Delta transaction that carries the application
transaction id (`campaign-pipeline/assign_codes/<campaign>`, version v + 1). Delta skips that
commit when another assignment run of the campaign committed after v (its id version is already
v + 1 or more), and fails it with a conflict when that run commits while this one is committing;
either way this run fails with a clear message and writes nothing, so a plan made on a stale
snapshot can never commit (plan B, commit A, commit B: B fails).

The same commit places coded fans in waves (`waves/membership.py`): new codes, and codes issued
earlier to fans no wave had taken yet, go to the open waves with room. A fan's wave and validity
are set once, when a wave first takes him: from `valid_days_before` days before that wave's notify
time to `valid_days_after` days after it. The commit is a MERGE that inserts the new rows and fills
`wave_id`, `valid_from` and `valid_until` only where they are still empty; nothing else ever
changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN, FAN_MARKET
from campaign_pipeline.codes.assign import (
    ASSIGNMENT_COLUMNS,
    assign_generated,
    assign_pool_codes,
    assign_tm,
    duplicate_problems,
    fans_needing_codes,
)
from campaign_pipeline.codes.checks import CHECKS
from campaign_pipeline.codes.generated import code_key
from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.quality.expectations import check_tables
from campaign_pipeline.stage_context import StageContext, StageReport, local_cut
from campaign_pipeline.warehouse import Warehouse, is_write_conflict
from campaign_pipeline.waves.membership import members_per_wave, place_in_waves, wave_status


@dataclass
class CodeInputs:
    selections: DataFrame
    code_pool: DataFrame
    registrants: DataFrame
    existing: DataFrame  # the campaign's code_assignments at the version this run started from
    version: int = 0  # that Delta version of code_assignments
    waves: DataFrame | None = None  # the campaign's `waves` rows (status of each planned wave)


@dataclass
class AssignmentPlan:
    new: DataFrame  # rows for code_assignments, not yet written
    placed: DataFrame  # existing rows in no wave yet that a wave takes now (wave and validity filled in)
    counts: dict[str, int] = field(default_factory=dict)
    shortfall: list[str] = field(default_factory=list)  # one line per pool that is too small


def read_inputs(wh: Warehouse, campaign_id: str) -> CodeInputs:
    """The stage's inputs; existing assignments pinned to one Delta version (the commit checks it)."""
    wh.ensure("code_assignments")
    version = wh.version("code_assignments")
    existing = (
        wh.spark.read.format("delta")
        .option("versionAsOf", version)
        .load(wh.path("code_assignments"))
        .where(F.col("campaign_id") == campaign_id)
    )
    return CodeInputs(
        wh.read("selections", campaign_id),
        wh.read("code_pool", campaign_id),
        wh.read("registrants", campaign_id),
        existing,
        version,
        wh.read("waves", campaign_id),
    )


def validity(campaign: Campaign) -> list:
    """valid_from / valid_until columns from the row's wave `notify_at` (null when in no wave)."""
    before, after = campaign.codes.valid_days_before, campaign.codes.valid_days_after
    return [
        (F.col("notify_at") - F.make_dt_interval(F.lit(before))).alias("valid_from"),
        (F.col("notify_at") + F.make_dt_interval(F.lit(after))).alias("valid_until"),
    ]


def with_validity(campaign: Campaign, assigned: DataFrame, placed: DataFrame, registrants: DataFrame) -> DataFrame:
    """Adds member id, wave and validity dates to assigned codes (`placed`: their wave, if any)."""
    joined = assigned.join(placed, FAN_MARKET, "left").join(registrants.select(*FAN, "member_id"), FAN, "left")
    return joined.select(*ASSIGNMENT_COLUMNS, "member_id", "wave_id", *validity(campaign))


def placements(campaign: Campaign, inputs: CodeInputs, new: DataFrame, now) -> DataFrame:
    """Wave placements for new codes and for earlier codes still in no wave (see the module docstring)."""
    waiting = inputs.existing.where(F.col("wave_id").isNull()).select(*FAN_MARKET).unionByName(new.select(*FAN_MARKET))
    ranks = inputs.selections.where(F.col("verdict") == "selected").select(*FAN_MARKET, "market_rank")
    waiting = waiting.join(ranks, FAN_MARKET, "left")
    held = members_per_wave(inputs.existing)
    return place_in_waves(campaign, waiting, held, wave_status(inputs.waves), now)


def pool_shortfall(assignment) -> tuple[dict[str, int], list[str]]:
    """Counts and one line per pool whose unused codes do not cover the fans that need one."""
    needed = {r["pool"]: r["needed"] for r in assignment.needed.collect()}
    available = {r["pool"]: r["available"] for r in assignment.available.collect()}
    counts: dict[str, int] = {}
    lines: list[str] = []
    for pool, n in sorted(needed.items()):
        have = available.get(pool, 0)
        if n > have:
            counts[f"no_code_available:{pool}"] = n - have
            where = "campaign-wide pool" if pool == "*" else pool
            lines.append(f"{where}: {n:,} selected fans need a code, {have:,} unused pool codes: short by {n - have:,}")
    used = sum(min(n, available.get(p, 0)) for p, n in needed.items())
    counts["pool_codes_unused_after"] = sum(available.values()) - used
    return counts, lines


def plan_assignments(
    campaign: Campaign, inputs: CodeInputs, key: bytes | None, run_id: str, assigned_at, cut=local_cut, now=None
) -> AssignmentPlan:
    """Pure: new code_assignments rows for selected fans without a code (`key` for generated codes),
    and wave placements of earlier codes in no wave yet; waves due at or before `now` (default
    `assigned_at`) take no one."""
    need = cut(
        fans_needing_codes(inputs.selections, inputs.existing, campaign.options.single_market), "fans needing codes"
    )
    source = campaign.codes.source
    counts: dict[str, int] = {}
    shortfall: list[str] = []
    if source == "pool":
        used = inputs.existing.select("campaign_id", "code")
        assignment = assign_pool_codes(campaign, need, inputs.code_pool, used)
        counts, shortfall = pool_shortfall(assignment)
    elif source == "generated":
        used = inputs.existing.select("campaign_id", "code").unionByName(inputs.code_pool.select("campaign_id", "code"))
        assignment, counts["collisions_regenerated"] = assign_generated(campaign, need, used, key, cut)
    else:
        assignment = assign_tm(need)
    assigned = cut(assignment.assigned, "assigned codes")
    placed = cut(placements(campaign, inputs, assigned, now or assigned_at), "wave placements")
    new = with_validity(campaign, assigned, placed, inputs.registrants)
    new = new.withColumn("assigned_at", F.lit(assigned_at).cast("timestamp")).withColumn("run_id", F.lit(run_id))
    late = inputs.existing.where(F.col("wave_id").isNull()).drop("wave_id", "valid_from", "valid_until")
    late = late.join(placed, FAN_MARKET, "inner").select(*late.columns, "wave_id", *validity(campaign))
    return AssignmentPlan(new, late, counts, shortfall)


def commit_assignments(
    wh: Warehouse, campaign_id: str, new: DataFrame, read_version: int, run_id: str, placed: DataFrame | None = None
) -> None:
    """Commit a plan made from `code_assignments` at `read_version` (new rows, and earlier rows whose
    wave is now set: `placed`), only if no other assignment run of the campaign committed since
    (checked inside the Delta transaction, see the module docstring). Without placements the
    commit is a plain append, else one MERGE."""
    lost = PipelineError(
        f"assign_codes: another run committed code assignments for campaign {campaign_id} after this one read "
        f"the table (version {read_version}); nothing of this run was written and no code was given twice. "
        "Re-run the stage to top up."
    )
    txn = {"app_id": f"campaign-pipeline/assign_codes/{campaign_id}", "txn_version": read_version + 1, "tag": run_id}
    try:
        if placed is None:
            committed = wh.append_once("code_assignments", new, campaign_id=campaign_id, **txn)
        else:
            rows = new.unionByName(placed)
            committed = wh.merge_once("code_assignments", rows, fill=("wave_id", "valid_from", "valid_until"), **txn)
    except Exception as exc:
        if not is_write_conflict(wh.spark, exc):
            raise
        raise lost from None
    if not committed:
        raise lost


def check_unique(existing: DataFrame, new: DataFrame, single_market: bool, when: str) -> None:
    problems = duplicate_problems(existing, new, single_market)
    if problems:
        raise PipelineError(f"assign_codes: uniqueness check failed {when}: " + "; ".join(problems))


def assign_codes(ctx: StageContext) -> StageReport:
    """Assign codes to selected fans without one and place coded fans in open waves; an issued code,
    a fan's wave and his validity never change once set."""

    wh, cid, campaign = ctx.warehouse, ctx.campaign_id, ctx.campaign
    single = campaign.options.single_market
    inputs = read_inputs(wh, cid)
    key = code_key(ctx.env) if campaign.codes.source == "generated" else None
    with ctx.step("plan"):
        plan = plan_assignments(campaign, inputs, key, ctx.run_id, ctx.started_at, ctx.cut, ctx.now)
        if plan.shortfall and not campaign.codes.allow_partial:
            raise PipelineError(
                "assign_codes: the code pool is too small; nothing was written (set codes.allow_partial: true to "
                "assign what there is):\n  " + "\n  ".join(plan.shortfall)
            )
        new = ctx.cut(plan.new, "planned assignments")
        placed = ctx.cut(plan.placed, "earlier codes placed in a wave now")
    with ctx.step("check_and_commit"):
        check_unique(inputs.existing, new, single, "before the commit, nothing was written")
        n_new, n_placed = new.count(), placed.count()
        if n_new or n_placed:
            commit_assignments(wh, cid, new, inputs.version, ctx.run_id, placed if n_placed else None)
        table = wh.read("code_assignments", cid)
        check_unique(table.limit(0), table, single, "after the commit")
    with ctx.step("expectations"):
        dq = check_tables(ctx, CHECKS)[0]
    with ctx.step("counts"):
        report = codes_report(campaign, table, n_new, plan)
        report.counts["placed_in_wave_now"] = n_placed
        report.summary.append(f"expectations: {dq}")
        if n_placed:
            report.summary.insert(1, f"{n_placed:,} fans coded earlier were placed in a wave now (validity set)")
        return report


def codes_report(campaign: Campaign, table: DataFrame, n_new: int, plan: AssignmentPlan) -> StageReport:
    """Codes assigned now and held per market, shortfalls, fans in no wave yet."""
    per_market = {
        (r["market_id"], r["code_type"]): (r["n"], r["no_wave"])
        for r in table.groupBy("market_id", "code_type")
        .agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("wave_id").isNull().cast("int")).alias("no_wave"))
        .collect()
    }
    total = sum(n for n, _ in per_market.values())
    short = sum(v for k, v in plan.counts.items() if k.startswith("no_code_available:"))
    report = StageReport(counts={"assigned_now": n_new, "codes_held": total, **plan.counts})
    report.counts["without_wave"] = sum(w for _, w in per_market.values())
    report.counts["no_code_available"] = short
    report.summary = [
        f"{n_new:,} codes assigned now ({campaign.codes.source}); {total:,} held in total"
        + (f"; {short:,} selected fans without a code (NO_CODE_AVAILABLE)" if short else "")
    ]
    for m in campaign.markets:
        held = sum(n for (market, _), (n, _) in per_market.items() if market == m.market_id)
        report.counts[f"codes:{m.market_id}"] = held
        report.summary.append(f"{m.market_id:<12} {held:>10,} codes  (capacity {m.capacity:,})")
    report.summary += [f"short: {line}" for line in plan.shortfall]
    if report.counts["without_wave"]:
        report.summary.append(
            f"{report.counts['without_wave']:,} coded fans are in no wave yet (no validity dates): every open wave "
            "is full or does not cover their market; add a wave or raise a wave's limit (waves in the campaign config)"
        )
    return report
