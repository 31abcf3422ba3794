"""Code assignment as a deterministic partitioned join.

Selected fans without a code are ranked inside (campaign, pool) by (market_rank, market, fan);
available pool codes are ranked inside (campaign, pool) by a seeded hash of the code; both sides
are repartitioned on (campaign, pool) and joined on (campaign, pool, rank). `pool` is the market
(`codes.per_market: true`) or `*` for one campaign-wide pool. Generated codes need no pool: each
fan's code is derived from the key, and collisions with any code of the campaign (or between two
new fans) are regenerated with the next counter. TM rows carry no code string.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN
from campaign_pipeline.catalog import FAN_MARKET as KEY
from campaign_pipeline.codes.generated import CodeGenerator
from campaign_pipeline.codes.pool import available_codes, pool_key
from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import union_all
from campaign_pipeline.stage_context import local_cut

MAX_GENERATION_ATTEMPTS = 8
ASSIGNMENT_COLUMNS = ["campaign_id", "market_id", "global_user_id", "code", "code_type"]


@dataclass
class Assignment:
    assigned: DataFrame  # ASSIGNMENT_COLUMNS
    needed: DataFrame  # (campaign_id, pool, needed): fans without a code per pool
    available: DataFrame  # (campaign_id, pool, available): free codes per pool


def fans_needing_codes(selections: DataFrame, assignments: DataFrame, single_market: bool) -> DataFrame:
    """Selected (fan, market) rows without a code yet; with single_market, a fan who holds a code
    for any market gets no second one."""
    selected = selections.where(F.col("verdict") == "selected").select(*KEY, "market_rank")
    key = FAN if single_market else KEY
    return selected.join(assignments.select(*key).distinct(), key, "left_anti")


def assign_pool_codes(campaign: Campaign, need: DataFrame, pool: DataFrame, used: DataFrame) -> Assignment:
    per_market = campaign.codes.per_market
    fans = need.withColumn("pool", pool_key(per_market, F.col("market_id")))
    fan_order = Window.partitionBy("campaign_id", "pool").orderBy(
        F.col("market_rank").asc_nulls_last(), F.col("market_id"), F.col("global_user_id")
    )
    fans = fans.withColumn("code_rank", F.row_number().over(fan_order).cast("long"))
    codes = available_codes(pool, used, per_market, campaign.seed)
    parts = ["campaign_id", "pool"]
    joined = fans.repartition("campaign_id", "pool").join(
        codes.repartition("campaign_id", "pool"), [*parts, "code_rank"], "inner"
    )
    assigned = joined.select(*KEY[:1], "market_id", "global_user_id", "code", F.lit("pool").alias("code_type"))
    return Assignment(
        assigned.select(*ASSIGNMENT_COLUMNS),
        fans.groupBy(*parts).agg(F.count(F.lit(1)).alias("needed")),
        codes.groupBy(*parts).agg(F.count(F.lit(1)).alias("available")),
    )


def _without_pools(need: DataFrame, assigned: DataFrame) -> Assignment:
    """An assignment that draws on no pool (TM placeholders, generated codes)."""
    empty = need.sparkSession.createDataFrame([], "campaign_id string, pool string, needed long")
    return Assignment(assigned, empty, empty.withColumnRenamed("needed", "available"))


def assign_tm(need: DataFrame) -> Assignment:
    assigned = need.select(
        "campaign_id",
        "market_id",
        "global_user_id",
        F.lit(None).cast("string").alias("code"),
        F.lit("tm").alias("code_type"),
    )
    return _without_pools(need, assigned)


def assign_generated(
    campaign: Campaign,
    need: DataFrame,
    used: DataFrame,
    key: bytes,
    cut=local_cut,
) -> tuple[Assignment, int]:
    """Generated codes; returns the assignment and the number of collisions resolved."""
    length = campaign.codes.length
    taken = used.select("campaign_id", "code").where("code IS NOT NULL").distinct()
    todo = need.select(*KEY).withColumn("counter", F.lit(0))
    accepted: list[DataFrame] = []
    collisions = 0
    generator = CodeGenerator(need.sparkSession, key, length)
    for attempt in range(1, MAX_GENERATION_ATTEMPTS + 1):
        candidates = todo.withColumn(
            "code", generator.code(F.col("campaign_id"), F.col("global_user_id"), F.col("market_id"), F.col("counter"))
        )
        # Between two new fans, the smaller (fan, market) keeps the code; an existing code always wins.
        first = Window.partitionBy("campaign_id", "code").orderBy("global_user_id", "market_id")
        candidates = candidates.withColumn("_n", F.row_number().over(first))
        clash = candidates.join(taken.withColumn("_taken", F.lit(True)), ["campaign_id", "code"], "left")
        clash = cut(clash.withColumn("_ok", (F.col("_n") == 1) & F.col("_taken").isNull()), f"generate codes {attempt}")
        ok = clash.where("_ok").select(*KEY, "code")
        accepted.append(ok)
        taken = taken.unionByName(ok.select("campaign_id", "code"))
        retry = clash.where(~F.col("_ok")).select(*KEY, (F.col("counter") + 1).alias("counter"))
        n_retry = retry.count()
        if n_retry == 0:
            break
        collisions += n_retry
        todo = retry
    else:
        raise PipelineError(
            f"assign_codes: {n_retry} generated codes still collide after {MAX_GENERATION_ATTEMPTS} attempts; "
            f"codes.length {length} is too short for this campaign"
        )
    assigned = union_all(accepted).select(
        "campaign_id", "market_id", "global_user_id", "code", F.lit("generated").alias("code_type")
    )
    return _without_pools(need, assigned), collisions


def duplicate_problems(existing: DataFrame, new: DataFrame, single_market: bool) -> list[str]:
    """Uniqueness of codes and of fans over existing + new rows; empty when all is well."""
    both = existing.select(*ASSIGNMENT_COLUMNS).unionByName(new.select(*ASSIGNMENT_COLUMNS))
    problems = []
    dup_codes = both.where("code IS NOT NULL").groupBy("campaign_id", "code").count().where("count > 1")
    fan_key = FAN if single_market else KEY
    dup_fans = both.groupBy(*fan_key).count().where("count > 1")
    n_codes, n_fans = dup_codes.count(), dup_fans.count()
    if n_codes:
        problems.append(f"{n_codes} code(s) would be given twice")
    if n_fans:
        problems.append(f"{n_fans} fan(s) would get a second code")
    return problems
