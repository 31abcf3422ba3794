"""While plan_waves rewrites scheduled waves' messages, no notify run may take those waves.

plan_waves first holds every `scheduled` wave of the campaign: one conditional `UPDATE` of
`waves` sets `planning_run` (this run) and `planning_until` on the rows that are still
`scheduled` and not held by another planner. A notify run's claim requires a wave without a
live planner and is conditional on the row it read, so the two are ordered by Delta: either the
claim committed first (the wave is `sending`, the planner does not hold it and leaves its
messages exactly as they are) or the hold did (the claim changes no row, or conflicts, and the
notify run says the wave is being re-planned). The hold is renewed just before the messages are
written and released at the end; a planner that dies leaves a hold that expires after
`PLANNING_SECONDS`.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import sql_literal
from campaign_pipeline.times import aware, now_utc, ts
from campaign_pipeline.warehouse import Warehouse, retry_on_conflict

PLANNING_SECONDS = 1800  # longer than any plan_waves write; a dead planner's hold expires after it


def _hold(wh: Warehouse, cid: str, run_id: str, where: str) -> None:
    now = now_utc()
    until = now + dt.timedelta(seconds=PLANNING_SECONDS)
    values = {"planning_run": sql_literal(run_id), "planning_until": ts(until)}
    retry_on_conflict(
        wh.spark, lambda: wh.update("waves", cid, values, where.format(now=ts(now))), "holding waves to re-plan them"
    )


def held_waves(wh: Warehouse, cid: str, run_id: str) -> list[str]:
    """The campaign's waves this run holds now (still `scheduled`, held by it)."""
    rows = wh.read("waves", cid).where(
        (F.col("status") == "scheduled")
        & (F.col("planning_run") == run_id)
        & (F.col("planning_until") > F.lit(now_utc()))
    )
    return sorted(r["wave_id"] for r in rows.select("wave_id").collect())


def hold_scheduled_waves(wh: Warehouse, cid: str, run_id: str) -> list[str]:
    """Hold every scheduled wave of the campaign for this plan_waves run; the ids held. Another
    planner's live hold is an error that names it (two plans of one campaign never interleave)."""
    if not wh.exists("waves"):
        return []
    me = sql_literal(run_id)
    _hold(
        wh,
        cid,
        run_id,
        f"status = 'scheduled' AND (planning_until IS NULL OR planning_until < {{now}} OR planning_run = {me})",
    )
    now = now_utc()
    others = [
        r
        for r in wh.read("waves", cid).where(F.col("status") == "scheduled").collect()
        if r["planning_run"] not in (None, run_id) and aware(r["planning_until"]) and aware(r["planning_until"]) > now
    ]
    if others:
        release(wh, cid, run_id)
        r = others[0]
        raise PipelineError(
            f"plan_waves: run {r['planning_run']} is re-planning campaign {cid} (it holds {r['wave_id']} until "
            f"{aware(r['planning_until']):%H:%M:%S} UTC); run plan_waves again after it ends"
        )
    return held_waves(wh, cid, run_id)


def renew(wh: Warehouse, cid: str, run_id: str) -> list[str]:
    """Extend this run's hold just before it writes; the waves it still holds."""
    if not wh.exists("waves"):
        return []
    _hold(wh, cid, run_id, f"status = 'scheduled' AND planning_run = {sql_literal(run_id)}")
    return held_waves(wh, cid, run_id)


def release(wh: Warehouse, cid: str, run_id: str) -> None:
    if not wh.exists("waves"):
        return
    retry_on_conflict(
        wh.spark,
        lambda: wh.update(
            "waves", cid, {"planning_run": "NULL", "planning_until": "NULL"}, f"planning_run = {sql_literal(run_id)}"
        ),
        "releasing the waves plan_waves held",
    )
