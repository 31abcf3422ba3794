"""Which wave each coded (fan, market) belongs to, decided once.

A coded fan's wave is recorded in `code_assignments.wave_id` the first time a wave takes him, with
his code's validity dates, and never changes afterwards. Fans in no wave yet are placed in waves
that are still open: the wave's `waves.status` is `scheduled` (or it was never planned) and its
`notify_at` is after the run's decision time (`--now`, default: when the run started). Open waves
are filled in `notify_at` order (wave id breaks ties); a wave takes fans of its `markets` (all
markets when empty) ordered by `market_rank`, then market id, then fan id, up to its `limit` minus
the fans it already holds. A wave that is sending or sent, or whose notify time has passed, takes
no one; a fan no open wave takes stays in no wave (no validity dates yet) and the stages count
him, until a wave with room is added.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN_MARKET as KEY
from campaign_pipeline.config import Campaign, Wave
from campaign_pipeline.frames import literal_frame, union_all

# Every status a `waves` row can have: scheduled → sending → completed / completed_with_failures / failed.
WAVE_STATUSES = ["scheduled", "sending", "completed", "completed_with_failures", "failed"]
MEMBER_SCHEMA = "campaign_id string, global_user_id string, market_id string, wave_id string, notify_at timestamp"


def ordered_waves(campaign: Campaign) -> list[Wave]:
    return sorted(campaign.waves, key=lambda w: (w.notify_at, w.wave_id))


def wave_status(waves: DataFrame | None) -> dict[str, str]:
    """wave id → status, from the campaign's `waves` rows (a wave never planned has none)."""
    if waves is None:
        return {}
    return {r["wave_id"]: r["status"] for r in waves.select("wave_id", "status").collect()}


def open_waves(campaign: Campaign, status: dict[str, str], now: dt.datetime) -> list[Wave]:
    """Waves that may still take fans: still scheduled (or never planned) and due after `now`."""
    return [
        w for w in ordered_waves(campaign) if status.get(w.wave_id, "scheduled") == "scheduled" and w.notify_at > now
    ]


def wave_times(campaign: Campaign, spark) -> DataFrame:
    """(campaign_id, wave_id, notify_at) of the configured waves."""
    return literal_frame(
        spark,
        [(campaign.campaign_id, w.wave_id, w.notify_at) for w in campaign.waves],
        "campaign_id string, wave_id string, notify_at timestamp",
    )


def place_in_waves(
    campaign: Campaign, unplaced: DataFrame, held: dict[str, int], status: dict[str, str], now: dt.datetime
) -> DataFrame:
    """(campaign_id, global_user_id, market_id, wave_id, notify_at) for the `unplaced` coded rows
    (with `market_rank`) that an open wave takes; `held` counts the fans each wave holds already."""
    remaining = unplaced.select(*KEY, "market_rank")
    parts: list[DataFrame] = []
    for wave in open_waves(campaign, status, now):
        room = None if wave.limit is None else wave.limit - held.get(wave.wave_id, 0)
        if room is not None and room <= 0:
            continue
        pool = remaining
        if wave.markets:
            pool = pool.where(F.col("market_id").isin(wave.markets))
        if room is not None:
            order = Window.partitionBy("campaign_id").orderBy(
                F.col("market_rank").asc_nulls_last(), F.col("market_id"), F.col("global_user_id")
            )
            pool = pool.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= room).drop("_n")
        taken = pool.select(
            *KEY, F.lit(wave.wave_id).alias("wave_id"), F.lit(wave.notify_at).cast("timestamp").alias("notify_at")
        )
        parts.append(taken)
        remaining = remaining.join(taken.select(*KEY), KEY, "left_anti")
    if not parts:
        return unplaced.sparkSession.createDataFrame([], MEMBER_SCHEMA)
    return union_all(parts)


def members_per_wave(assignments: DataFrame) -> dict[str, int]:
    """wave id → coded fans it holds."""
    return {
        r["wave_id"]: r["n"]
        for r in assignments.where(F.col("wave_id").isNotNull())
        .groupBy("wave_id")
        .count()
        .withColumnRenamed("count", "n")
        .collect()
    }


def day_before_first_wave(campaign: Campaign) -> dt.datetime:
    """The decision time the demo and the benchmark play a campaign at, whatever today's date."""
    return min(w.notify_at for w in campaign.waves) - dt.timedelta(days=1)
