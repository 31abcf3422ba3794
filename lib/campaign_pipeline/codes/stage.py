"""The assign_codes stage: exactly one code per selected fan (per market when fans may hold several).

Existing rows of `code_assignments` never change: new rows are MERGEd in on (campaign, fan,
market) with insert-only semantics, after a uniqueness check over existing + new rows (a violation
fails the stage and commits nothing). Delta's optimistic concurrency makes two simultaneous runs
safe: the second to commit sees the first's files in the partition it read, fails with a clear
message and writes nothing. Validity runs from `valid_days_before` days before the fan's wave
notify time to `valid_days_after` days after it.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.codes.assign import (
    ASSIGNMENT_COLUMNS,
    assign_generated,
    assign_pool_codes,
    assign_tm,
    duplicate_problems,
    fans_needing_codes,
)
from campaign_pipeline.codes.generated import code_key
from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.runner import StageContext, StageResult, stage
from campaign_pipeline.session import set_stage_description
from campaign_pipeline.tables import Warehouse
from campaign_pipeline.waves.membership import wave_membership

FAN = ["campaign_id", "global_user_id"]


def with_validity(campaign: Campaign, assigned: DataFrame, membership: DataFrame, registrants: DataFrame) -> DataFrame:
    """Adds member id, wave and validity dates to assigned codes."""
    before, after = campaign.codes.valid_days_before, campaign.codes.valid_days_after
    joined = assigned.join(membership, ["campaign_id", "global_user_id", "market_id"], "left").join(
        registrants.select(*FAN, "member_id"), FAN, "left"
    )
    return joined.select(
        *ASSIGNMENT_COLUMNS,
        "member_id",
        "wave_id",
        (F.col("notify_at") - F.make_dt_interval(F.lit(before))).alias("valid_from"),
        (F.col("notify_at") + F.make_dt_interval(F.lit(after))).alias("valid_until"),
    )


def plan_assignments(ctx: StageContext, existing: DataFrame) -> tuple[DataFrame, dict[str, int], list[str]]:
    """New code_assignments rows (not yet written), counts, and per-market shortfall lines."""
    spark, wh, cid, campaign = ctx.spark, ctx.warehouse, ctx.campaign_id, ctx.campaign
    selections = wh.read("selections", cid)
    need = fans_needing_codes(selections, existing, campaign.options.single_market).localCheckpoint(eager=True)
    source = campaign.codes.source
    counts: dict[str, int] = {}
    shortfall: list[str] = []
    if source == "pool":
        used = existing.select("campaign_id", "code")
        assignment = assign_pool_codes(campaign, need, wh.read("code_pool", cid), used)
        needed = {r["pool"]: r["needed"] for r in assignment.needed.collect()}
        available = {r["pool"]: r["available"] for r in assignment.available.collect()}
        for pool, n in sorted(needed.items()):
            have = available.get(pool, 0)
            if n > have:
                counts[f"no_code_available:{pool}"] = n - have
                where = "campaign-wide pool" if pool == "*" else pool
                shortfall.append(
                    f"{where}: {n:,} selected fans need a code, {have:,} unused pool codes: short by {n - have:,}"
                )
        counts["pool_codes_unused_after"] = sum(available.values()) - sum(
            min(n, available.get(p, 0)) for p, n in needed.items()
        )
    elif source == "generated":
        key = code_key(ctx.env.secrets.code_key_env)
        used = existing.select("campaign_id", "code").unionByName(
            wh.read("code_pool", cid).select("campaign_id", "code")
        )
        assignment, collisions = assign_generated(campaign, need, used, key)
        counts["collisions_regenerated"] = collisions
    else:
        assignment = assign_tm(need)
    selected = selections.where(F.col("verdict") == "selected")
    membership = wave_membership(spark, campaign, selected)
    new = with_validity(campaign, assignment.assigned, membership, wh.read("registrants", cid))
    new = new.withColumn("assigned_at", F.lit(ctx.started_at).cast("timestamp")).withColumn("run_id", F.lit(ctx.run_id))
    return new, counts, shortfall


def commit_assignments(wh: Warehouse, campaign_id: str, new: DataFrame) -> None:
    """Insert-only MERGE; a concurrent commit to the campaign's assignments fails this one cleanly."""
    try:
        wh.merge("code_assignments", new)
    except Exception as exc:  # noqa: BLE001 - Delta raises JVM exceptions; only conflicts are translated
        text = f"{type(exc).__name__}: {exc}"
        if "Concurrent" in text or "DELTA_CONCURRENT" in text:
            raise PipelineError(
                f"assign_codes: another run committed code assignments for campaign {campaign_id} while this one was "
                "running (Delta optimistic concurrency); nothing of this run was written and no code was given twice. "
                "Re-run the stage to top up."
            ) from None
        raise


@stage("assign_codes", order=50, description="one unique code per selected fan by a partitioned join")
def assign_codes(ctx: StageContext) -> StageResult:
    """Assign codes to selected fans without one; existing assignments never change."""
    spark, wh, cid, campaign = ctx.spark, ctx.warehouse, ctx.campaign_id, ctx.campaign
    if not wh.exists("selections"):
        raise PipelineError(f"no selections for campaign {cid}: run the select stage first")
    wh.ensure("code_assignments")
    version = wh.version("code_assignments")
    existing = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(wh.path("code_assignments"))
        .where(F.col("campaign_id") == cid)
    )
    set_stage_description(spark, "assign_codes", f"plan with source {campaign.codes.source}")
    new, counts, shortfall = plan_assignments(ctx, existing)
    if shortfall and not campaign.codes.allow_partial:
        raise PipelineError(
            "assign_codes: the code pool is too small; nothing was written (set codes.allow_partial: true to assign "
            "what there is):\n  " + "\n  ".join(shortfall)
        )
    new = new.localCheckpoint(eager=True)
    set_stage_description(spark, "assign_codes", "uniqueness check")
    problems = duplicate_problems(existing, new, campaign.options.single_market)
    if problems:
        raise PipelineError("assign_codes: uniqueness check failed, nothing was written: " + "; ".join(problems))
    n_new = new.count()
    if n_new:
        set_stage_description(spark, "assign_codes", "merge into code_assignments")
        commit_assignments(wh, cid, new)
    table = wh.read("code_assignments", cid)
    after = duplicate_problems(table.limit(0), table, campaign.options.single_market)
    if after:
        raise PipelineError("assign_codes: code_assignments holds duplicates after the commit: " + "; ".join(after))
    per_market = {
        (r["market_id"], r["code_type"]): (r["n"], r["no_wave"])
        for r in table.groupBy("market_id", "code_type")
        .agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("wave_id").isNull().cast("int")).alias("no_wave"))
        .collect()
    }
    result = StageResult()
    total = sum(n for n, _ in per_market.values())
    result.counts = {"assigned_now": n_new, "codes_held": total, **counts}
    result.counts["without_wave"] = sum(w for _, w in per_market.values())
    short = sum(v for k, v in counts.items() if k.startswith("no_code_available:"))
    result.counts["no_code_available"] = short
    result.summary = [
        f"{n_new:,} codes assigned now ({campaign.codes.source}); {total:,} held in total"
        + (f"; {short:,} selected fans without a code (NO_CODE_AVAILABLE)" if short else "")
    ]
    for m in campaign.markets:
        held = sum(n for (market, _), (n, _) in per_market.items() if market == m.market_id)
        result.counts[f"codes:{m.market_id}"] = held
        result.summary.append(f"{m.market_id:<12} {held:>10,} codes  (capacity {m.capacity:,})")
    result.summary += [f"short: {line}" for line in shortfall]
    if result.counts["without_wave"]:
        result.summary.append(f"{result.counts['without_wave']:,} coded fans are in no wave yet (no validity dates)")
    return result
