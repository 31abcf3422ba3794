"""Capacity-safe allocation of fans to markets: a few rank-per-market rounds, no driver loop over fans.

Every ordering that decides an outcome is total: `band_score` descending, then `global_user_id`.

`order_by_preference: true` (the default). Round k offers the k-th preference of every fan still
unplaced (with `single_market: false`: of every fan) to the capacity each market has left; a market
takes the highest band scores. Rounds = the longest preference list (≤ 4), fewer when every market
is full earlier. First choices are served before any second choice.

`order_by_preference: false`. A stable matching by fan-proposing deferred acceptance: each round,
every fan not held by a market proposes to the next market on his list; each market keeps its
best holders and proposers (band score) up to the capacity it has left and rejects the rest, who
propose to their next choice in the next round. It stops when a round rejects nobody who has a
choice left; then no fan F and market M exist such that F prefers M to what he got and M has a
free seat or holds a fan with a lower band score. It takes at most 4 × the number of markets
rounds, each a join and a window (no driver loop over fans). With `single_market: false` one
round suffices: each market admits its best listers, and a fan keeps every market that admitted him.

Top-up: `kept` selections (an earlier run's `selected` rows) keep their market and rank, count
against capacity and are never offered again; new market ranks continue after them.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN
from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import literal_frame
from campaign_pipeline.stage_context import local_cut, session_settings

MARKET = ["campaign_id", "market_id"]
PLACED = ["campaign_id", "global_user_id", "market_id", "preference_rank", "market_rank", "band_score"]


def fan_order() -> list[Column]:
    return [F.col("band_score").desc(), F.col("global_user_id").asc()]


def offers(candidates: DataFrame) -> DataFrame:
    """(fan, market, preference_rank, band_score) per listed market; a market listed twice counts once.

    `candidates` has one row per fan and no null market in `market_preferences` (ingest drops
    unknown and empty entries; `registrants` is keyed by fan)."""
    exploded = candidates.select(
        *FAN, "band_score", "market_preferences", F.posexplode("market_preferences").alias("_pos", "market_id")
    )
    # A row per (fan, market) at the market's first position: a filter on each row, no shuffle.
    first = F.array_position("market_preferences", F.col("market_id")) == F.col("_pos") + 1
    return exploded.where(first).select(
        *FAN, "market_id", "band_score", (F.col("_pos") + 1).cast("int").alias("preference_rank")
    )


def capacity_left(spark, campaign: Campaign, kept: DataFrame) -> DataFrame:
    """(campaign_id, market_id, remaining, offset) per market: capacity minus kept selections."""
    caps = literal_frame(
        spark,
        [(campaign.campaign_id, m.market_id, int(m.capacity)) for m in campaign.markets],
        "campaign_id string, market_id string, capacity long",
    )
    held = kept.groupBy(*MARKET).agg(F.count(F.lit(1)).alias("taken"), F.max("market_rank").alias("last_rank"))
    return caps.join(held, MARKET, "left").select(
        *MARKET,
        F.greatest(F.col("capacity") - F.coalesce("taken", F.lit(0)), F.lit(0)).alias("remaining"),
        # New ranks continue after the highest kept rank (ranks stay unique inside a market).
        F.greatest(F.coalesce("taken", F.lit(0)), F.coalesce("last_rank", F.lit(0))).cast("long").alias("offset"),
    )


def _few_taken(base: DataFrame, fans: int, partitions: int) -> int | None:
    """The most capacity any market has left (`base`) when every market taking that many from
    each of the offers' input `partitions` still keeps at most half the `fans` (few taken out of
    many); else None."""
    most, markets = base.agg(F.max("remaining"), F.count(F.lit(1))).first()
    return int(most) if most is not None and most * markets * partitions * 2 <= fans else None


def _take(open_offers: DataFrame, left: DataFrame, most: int | None) -> DataFrame:
    """Offers ranked inside their market; those within the capacity left are admitted.

    `most` (when given) bounds every market's capacity left: that literal bound lets Spark keep
    each market's best `most` offers of every input partition before the shuffle (a window group
    limit; the caller sets `spark.sql.optimizer.windowGroupLimitThreshold` above it), sparing
    it the sort of every offer when few are taken out of many. The admitted rows are the same."""
    ranked = open_offers.join(F.broadcast(left), MARKET).where("remaining > 0")
    rank = F.row_number().over(Window.partitionBy(*MARKET).orderBy(*fan_order()))
    within = F.col("_r") <= F.col("remaining")
    if most is not None:
        within = within & (F.col("_r") <= F.lit(most))
    return ranked.withColumn("_r", rank).where(within)


def _after(base: DataFrame, placed_rounds: list[DataFrame]) -> DataFrame:
    """Capacity left after the placed rounds (each already materialised, so the plan stays small)."""
    if not placed_rounds:
        return base
    placed = placed_rounds[0].select(*MARKET)
    for more in placed_rounds[1:]:
        placed = placed.unionByName(more.select(*MARKET))
    taken = placed.groupBy(*MARKET).agg(F.count(F.lit(1)).alias("_n"))
    return base.join(taken, MARKET, "left").select(
        *MARKET,
        (F.col("remaining") - F.coalesce("_n", F.lit(0))).alias("remaining"),
        (F.col("offset") + F.coalesce("_n", F.lit(0))).alias("offset"),
    )


def _left_after(base: DataFrame, placed_rounds: list[DataFrame]) -> DataFrame | None:
    """`_after(base, placed_rounds)` as a small literal frame (`base` itself before the first round),
    or None when no market has capacity left. Read on the driver once per round, in place of the
    broadcast that would compute it inside the round."""
    if not placed_rounds:
        return base
    left = _after(base, placed_rounds)
    rows = left.collect()  # one row per market of the campaign
    if not any((r["remaining"] or 0) > 0 for r in rows):
        return None
    return literal_frame(base.sparkSession, rows, left.schema)


def _placements(admitted: DataFrame, rank: str) -> DataFrame:
    return admitted.select(
        *FAN, "market_id", "preference_rank", (F.col("offset") + F.col(rank)).alias("market_rank"), "band_score"
    )


def allocate(
    campaign: Campaign,
    candidates: DataFrame,
    kept: DataFrame,
    base: DataFrame,
    cut=local_cut,
) -> DataFrame:
    """New placements (PLACED columns) for `candidates` (fan, band_score, market_preferences).

    `base` is `capacity_left(...)`; `cut(df, name)` materialises each round (the lineage policy), so round
    k reads the earlier rounds' results instead of recomputing them: one Spark job per round.
    """
    opts = campaign.options
    all_offers = offers(candidates)
    if opts.single_market:
        all_offers = all_offers.join(kept.select(*FAN).distinct(), FAN, "left_anti")
    else:
        all_offers = all_offers.join(kept.select(*FAN, "market_id"), [*FAN, "market_id"], "left_anti")
    placed_rounds: list[DataFrame] = []
    key = FAN if opts.single_market else [*FAN, "market_id"]

    def unplaced(frame: DataFrame) -> DataFrame:
        for done in placed_rounds:
            frame = frame.join(done.select(*key), key, "left_anti")
        return frame

    if opts.order_by_preference:
        longest, fans = candidates.agg(F.max(F.size("market_preferences")), F.count(F.lit(1))).first()
        most = _few_taken(base, fans or 0, candidates.rdd.getNumPartitions())
        settings = {"spark.sql.optimizer.windowGroupLimitThreshold": str(most + 1)} if most is not None else {}
        with session_settings(candidates.sparkSession, settings):
            for k in range(1, (longest or 0) + 1):
                left = _left_after(base, placed_rounds)
                if left is None:  # every market is full: later rounds would admit nobody
                    break
                admitted = _take(unplaced(all_offers.where(F.col("preference_rank") == k)), left, most)
                placed_rounds.append(cut(_placements(admitted, "_r"), f"allocation round {k}"))
    elif not opts.single_market:
        placed_rounds.append(cut(_placements(_take(all_offers, base, None), "_r"), "allocation round 1"))
    else:
        placed_rounds.append(deferred_acceptance(all_offers, base, cut))
    placed = kept.limit(0).select(*PLACED)
    for more in placed_rounds:
        placed = placed.unionByName(more)
    return placed


def deferred_acceptance(all_offers: DataFrame, base: DataFrame, cut=local_cut) -> DataFrame:
    """Fan-proposing deferred acceptance (see the module docstring); PLACED columns."""
    choice = Window.partitionBy(*FAN).orderBy(F.col("preference_rank").asc(), F.col("market_id").asc())
    lists = cut(all_offers.withColumn("_choice", F.row_number().over(choice)), "allocation offers")
    # each fan proposes to his `_at`-th choice; a rejected fan moves on to the next one
    proposing = lists.where("_choice = 1").select(*FAN, F.col("_choice").alias("_at"))
    max_rounds = 4 * max(base.groupBy("campaign_id").count().agg(F.max("count")).first()[0] or 1, 1)
    for k in range(1, max_rounds + 1):
        targets = proposing.join(lists, FAN).where(F.col("_at") == F.col("_choice"))
        ranked = targets.join(F.broadcast(base), MARKET).withColumn(
            "_r", F.row_number().over(Window.partitionBy(*MARKET).orderBy(*fan_order()))
        )
        decided = cut(ranked.withColumn("_held", F.col("_r") <= F.col("remaining")), f"allocation round {k}")
        held = decided.where("_held")
        moving = decided.where(~F.col("_held")).select(*FAN, (F.col("_at") + 1).alias("_at"))
        moving = moving.join(lists.select(*FAN, F.col("_choice").alias("_at")), [*FAN, "_at"], "left_semi")
        if moving.isEmpty():
            return _placements(held, "_r")
        proposing = held.select(*FAN, "_at").unionByName(moving)
    raise PipelineError(f"selection: deferred acceptance did not settle in {max_rounds} rounds (4 × markets)")


def waitlist(candidates: DataFrame, placed_fans: DataFrame) -> DataFrame:
    """Candidates placed nowhere: waitlisted for their first choice, with a position in its queue."""
    waiting = candidates.join(placed_fans.select(*FAN).distinct(), FAN, "left_anti").withColumn(
        "market_id", F.element_at("market_preferences", 1)
    )
    position = F.row_number().over(Window.partitionBy(*MARKET).orderBy(*fan_order()))
    return waiting.select(
        *FAN,
        F.lit("waitlisted").alias("verdict"),
        "market_id",
        F.lit(1).alias("preference_rank"),
        F.lit(None).cast("long").alias("market_rank"),
        position.cast("long").alias("waitlist_position"),
        "band_score",
        F.array(F.lit("NOT_REACHED")).alias("reasons"),
    )
