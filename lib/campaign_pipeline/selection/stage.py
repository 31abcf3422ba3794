"""The select stage: one verdict per registrant in `selections` (per won market when fans may
hold several). Allocation rules are in `selection.allocate`; verdicts:

| verdict | who | market_id | reasons |
|---|---|---|---|
| selected | placed by capacity (or kept from an earlier run) | the market | `[]` |
| waitlisted | eligible, scored ≥ min_score, not reached | first choice (with `waitlist_position`) | `NOT_REACHED` |
| rejected | ineligible, or no score, or below the lowest band / min_score | null | the screening reasons, `NO_SCORE`, `BELOW_LOWEST_BAND`, `BELOW_MIN_SCORE` |

A later run keeps every earlier `selected` row (top-up). With `options.reassign: true` only the
selections that hold an issued code are kept (issued codes are never taken back, so such a fan
keeps that market); every other fan is allocated again.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN, FAN_MARKET, columns
from campaign_pipeline.config import Campaign
from campaign_pipeline.frames import require_columns
from campaign_pipeline.quality.expectations import check_tables
from campaign_pipeline.selection.allocate import allocate, capacity_left, waitlist
from campaign_pipeline.selection.checks import CHECKS
from campaign_pipeline.stage_context import StageContext, StageReport, local_cut

COLUMNS = columns("selections")


def rejection_reasons(min_score: float):
    """Why a registrant cannot be selected (empty array when it can)."""
    return (
        F.when(~F.col("eligible"), F.col("ineligible_reasons"))
        .when(F.col("raw_score").isNull(), F.array(F.lit("NO_SCORE")))
        .when(F.col("band").isNull(), F.array(F.lit("BELOW_LOWEST_BAND")))
        .when(F.col("band_score") < F.lit(min_score), F.array(F.lit("BELOW_MIN_SCORE")))
        .otherwise(F.array().cast("array<string>"))
    )


def nothing_against() -> Column:
    """Whether a `selection_fans` row may be selected: no reason against him (`_why` empty)."""
    return F.coalesce(F.size("_why") == 0, F.lit(False))


def selection_fans(registrants: DataFrame, scores: DataFrame, kept: DataFrame, min_score: float) -> DataFrame:
    """One row per registrant with what selection needs of him: eligibility, score, listed markets,
    why he cannot be selected (`_why`, empty when he can) and whether an earlier selection of his
    is kept (`_kept`). Allocation, the rejected verdicts, the standings and the fairness counts
    all read this one frame."""
    kept_fans = kept.select(*FAN).distinct().withColumn("_kept", F.lit(True))
    fans = (
        registrants.select(*FAN, "eligible", "ineligible_reasons", "market_preferences")
        .join(scores.select(*FAN, "raw_score", "band", "band_score"), FAN, "left")
        .join(kept_fans, FAN, "left")
    )
    return fans.select(
        *FAN,
        "eligible",
        "market_preferences",
        "raw_score",
        "band",
        "band_score",
        rejection_reasons(min_score).alias("_why"),
        F.coalesce("_kept", F.lit(False)).alias("_kept"),
    )


def kept_selections(campaign: Campaign, previous: DataFrame, coded: DataFrame | None) -> DataFrame:
    """The earlier run's `selected` rows this run keeps (under `reassign`, those holding a code)."""
    kept = previous.where(F.col("verdict") == "selected").select(*COLUMNS)
    if campaign.options.reassign:
        issued = coded.select(*FAN_MARKET).distinct() if coded is not None else kept.limit(0).select(*FAN_MARKET)
        kept = kept.join(issued, FAN_MARKET, "left_semi")
    return kept


def select_fans(
    spark: SparkSession,
    campaign: Campaign,
    registrants: DataFrame,
    scores: DataFrame,
    previous: DataFrame,
    run_id: str,
    cut=local_cut,
    coded: DataFrame | None = None,
) -> DataFrame:
    """Pure selection: (registrants, scores, previous selections, issued codes) → selections.

    `coded` holds the (campaign, fan, market) rows of `code_assignments`; under `reassign` those
    selections are kept, everything else is allocated again.

    `cut(df, name)` materialises intermediate results (the stage passes its lineage policy).
    """
    kept, fans = selection_inputs(campaign, registrants, scores, previous, coded, cut)
    return verdicts(spark, campaign, fans, kept, run_id, cut)


def selection_inputs(
    campaign: Campaign,
    registrants: DataFrame,
    scores: DataFrame,
    previous: DataFrame,
    coded: DataFrame | None,
    cut=local_cut,
) -> tuple[DataFrame, DataFrame]:
    """(kept selections, `selection_fans`), each materialised once with `cut`."""
    require_columns(registrants, [*FAN, "eligible", "ineligible_reasons", "market_preferences"], "selection")
    require_columns(scores, [*FAN, "raw_score", "band", "band_score"], "selection")
    # Read once: every use below sees the same earlier selections, whatever another run commits.
    kept = cut(kept_selections(campaign, previous, coded), "kept selections")
    return kept, cut(selection_fans(registrants, scores, kept, campaign.options.min_score), "fans")


def verdicts(
    spark: SparkSession, campaign: Campaign, fans: DataFrame, kept: DataFrame, run_id: str, cut=local_cut
) -> DataFrame:
    """Selections from `selection_fans(...)` (materialised) and the kept selections."""
    opts = campaign.options
    kept_fans = kept.select(*FAN).distinct()
    candidates = fans.where(nothing_against())
    if opts.single_market:
        candidates = candidates.where(~F.col("_kept"))
    candidates = candidates.select(*FAN, "band_score", "market_preferences")
    left = capacity_left(spark, campaign, kept)
    placed = allocate(campaign, candidates, kept, left, cut)
    new_selected = placed.select(
        *FAN,
        F.lit("selected").alias("verdict"),
        "market_id",
        "preference_rank",
        "market_rank",
        F.lit(None).cast("long").alias("waitlist_position"),
        "band_score",
        F.array().cast("array<string>").alias("reasons"),
        F.lit(run_id).alias("run_id"),
    )
    placed_fans = placed.select(*FAN).unionByName(kept_fans)
    waiting = waitlist(candidates, placed_fans).withColumn("run_id", F.lit(run_id))
    rejected = fans.where((F.size("_why") > 0) & ~F.col("_kept")).select(
        *FAN,
        F.lit("rejected").alias("verdict"),
        F.lit(None).cast("string").alias("market_id"),
        F.lit(None).cast("int").alias("preference_rank"),
        F.lit(None).cast("long").alias("market_rank"),
        F.lit(None).cast("long").alias("waitlist_position"),
        "band_score",
        F.col("_why").alias("reasons"),
        F.lit(run_id).alias("run_id"),
    )
    out = kept.unionByName(new_selected).unionByName(waiting.select(*COLUMNS)).unionByName(rejected)
    return out.select(*COLUMNS)


def market_standings(fans: DataFrame, selections: DataFrame, run_id: str) -> DataFrame:
    """Per scored fan and each market he listed: his rank among that market's candidates (selected
    or waitlisted fans who listed it at any position, ranked by band_score, then fan id), their
    number, and the market's selected count and lowest selected band_score.

    `fans` is `selection_fans(...)` and `selections` what `verdicts` made of it: a candidate is a
    fan with `nothing_against()` him or a kept selection, exactly the fans `verdicts` selects or
    waitlists. What `explain` shows, computed once here instead of re-ranking a market at every
    lookup. A fan who is not a candidate (rejected, or not reached in single-market mode) gets the
    rank he would have: one behind the candidates ahead of him.
    """
    listed = fans.where(F.col("band_score").isNotNull()).select(
        *FAN,
        "band_score",
        (nothing_against() | F.col("_kept")).cast("int").alias("is_candidate"),
        F.posexplode("market_preferences").alias("pos", "market_id"),
    )
    market = Window.partitionBy("campaign_id", "market_id")
    ordered = market.orderBy(F.col("band_score").desc(), F.col("global_user_id")).rowsBetween(
        Window.unboundedPreceding, Window.currentRow
    )
    ranked = listed.select(
        *FAN,
        "market_id",
        (F.col("pos") + 1).cast("int").alias("preference_rank"),
        (F.sum("is_candidate").over(ordered) + 1 - F.col("is_candidate")).cast("long").alias("market_rank"),
        F.sum("is_candidate").over(market).cast("long").alias("candidates"),
    )
    cutoffs = (
        selections.where(F.col("verdict") == "selected")
        .groupBy("campaign_id", "market_id")
        .agg(F.count(F.lit(1)).alias("selected"), F.min("band_score").alias("lowest_selected_band_score"))
    )
    return (
        ranked.join(F.broadcast(cutoffs), ["campaign_id", "market_id"], "left")
        .withColumn("selected", F.coalesce("selected", F.lit(0)).cast("long"))
        .withColumn("run_id", F.lit(run_id))
        .select(*columns("standings"))
    )


def fairness_summary(selections: DataFrame, fans: DataFrame, scores: DataFrame):
    """Counts behind the fairness summary: per band, per market (first choice), rounds. `fans` has
    each registrant's `market_preferences` (`selection_fans(...)`); the band is the fan's score's.

    (campaign, fan, market) is the key of `selections`, so the rows of one group (one verdict and
    market) are different fans: a count, not a distinct count, gives the fans."""
    first = fans.select(*FAN, F.element_at("market_preferences", 1).alias("first_choice"))
    rows = (
        selections.join(first, FAN, "left")
        .join(scores.select(*FAN, "band"), FAN, "left")
        .groupBy("verdict", "market_id", "first_choice", "band", "preference_rank")
        .agg(F.count(F.lit(1)).alias("rows"))
        .collect()
    )
    return [r.asDict() for r in rows]


def select(ctx: StageContext) -> StageReport:
    """Write one verdict per registrant into `selections` (a no-op when nothing changed)."""

    wh, cid, campaign = ctx.warehouse, ctx.campaign_id, ctx.campaign
    registrants, scores = wh.read("registrants", cid), wh.read("scores", cid)
    with ctx.step("allocate"):
        previous, coded = wh.read("selections", cid), wh.read("code_assignments", cid)
        kept, fans = selection_inputs(campaign, registrants, scores, previous, coded, ctx.cut)
        selections = verdicts(ctx.spark, campaign, fans, kept, ctx.run_id, ctx.cut)
    with ctx.step("write"):
        written = wh.replace_if_changed("selections", selections, cid, cut=ctx.cut)
    with ctx.step("standings"):
        # This run's verdicts, not a fresh read: another run may have replaced the table since.
        standings = market_standings(fans, selections, ctx.run_id)
        wh.replace_if_changed("standings", standings, cid, cut=ctx.cut)
    with ctx.step("counts_and_checks"):
        table = wh.read("selections", cid)
        dq = check_tables(ctx, CHECKS)[0]
        return select_report(campaign, fairness_summary(table, fans, scores), written, dq)


def select_report(campaign: Campaign, facts: list[dict], written: bool, dq: str) -> StageReport:
    """Verdict counts, per-market capacity use, selection rate per band, rounds used."""
    result = StageReport()

    def total(**match) -> int:
        return sum(f["rows"] for f in facts if all(f[k] == v for k, v in match.items()))

    selected_fans, waitlisted, rejected = (
        total(verdict="selected"),
        total(verdict="waitlisted"),
        total(verdict="rejected"),
    )
    result.counts = {
        "registrants": selected_fans + waitlisted + rejected,
        "selected": selected_fans,
        "waitlisted": waitlisted,
        "rejected": rejected,
        "selections": total(verdict="selected"),
    }
    lines = [
        f"{selected_fans:,} selected · {waitlisted:,} waitlisted · {rejected:,} rejected"
        + ("" if written else " · unchanged since the last run (nothing written)"),
        f"{'market':<12}{'capacity':>10}{'selected':>10}{'left':>8}{'waitlisted':>12}{'rejected':>10}   first choice served",
    ]
    for m in campaign.markets:
        sel = total(verdict="selected", market_id=m.market_id)
        wait = total(verdict="waitlisted", market_id=m.market_id)
        rej = total(verdict="rejected", first_choice=m.market_id)
        firsts = total(verdict="selected", market_id=m.market_id, preference_rank=1)
        result.counts[f"selected:{m.market_id}"] = sel
        result.counts[f"capacity_left:{m.market_id}"] = max(m.capacity - sel, 0)
        lines.append(
            f"{m.market_id:<12}{m.capacity:>10,}{sel:>10,}{max(m.capacity - sel, 0):>8,}{wait:>12,}{rej:>10,}   "
            f"{firsts / sel if sel else 0:.0%}"
        )
    lines.append("selection rate per band (selected / eligible candidates of the band):")
    for band in sorted(campaign.scoring.bands, key=lambda b: -b.min):
        sel = total(verdict="selected", band=band.name)
        cands = sel + total(verdict="waitlisted", band=band.name)
        result.counts[f"band_selected:{band.name}"] = sel
        lines.append(f"  {band.name:<8} {sel:>10,} / {cands:<10,} {sel / cands if cands else 0:.1%}")
    by_round = {k: total(verdict="selected", preference_rank=k) for k in range(1, 5)}
    rounds = max([k for k, n in by_round.items() if n], default=0)
    result.counts["rounds"] = rounds
    lines.append(
        f"rounds used {rounds}; selections by choice: "
        + ", ".join(f"choice {k}: {n:,}" for k, n in by_round.items() if n)
    )
    lines.append(f"expectations: {dq}")
    result.summary = lines
    return result
