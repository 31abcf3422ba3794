"""`campaign-pipeline runs`: what ran for a campaign, read from `pipeline_runs` with delta-rs (no JVM).

A run is its stage rows (the latest row of each stage: its outcome, or `running` for a stage that
has not ended or died without saying so). A run failed when one of its stages failed or was left
running; the latest run of a campaign is the one a plain `run` resumes, so a failed one comes with
the command that resumes it.
"""

from __future__ import annotations

import datetime as dt

from campaign_pipeline.ops.explain.readers import DeltaTables
from campaign_pipeline.privacy import scrub

NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


def _latest_per_stage(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """One row per (run, stage): the finished one if any (as `runner.stage_runs` keeps it)."""
    out: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["run_id"], row["stage"])
        best = out.get(key)
        if best is None or (row["finished_at"] or NEVER, best["status"]) > (
            best["finished_at"] or NEVER,
            row["status"],
        ):
            out[key] = row
    return out


def recent_runs(warehouse_root: str, campaign_id: str, last: int, campaign_arg: str, env: str) -> list[dict]:
    """The campaign's `last` runs, newest first, each with its stages (in the order they started)."""
    rows = DeltaTables(warehouse_root).campaign_rows("pipeline_runs", campaign_id)
    runs: dict[str, list[dict]] = {}
    for row in _latest_per_stage(rows).values():
        runs.setdefault(row["run_id"], []).append(row)
    ordered = sorted(runs.items(), key=lambda kv: (min(r["started_at"] for r in kv[1]), kv[0]), reverse=True)
    out = []
    for i, (run_id, stages) in enumerate(ordered[:last]):
        stages.sort(key=lambda r: (r["started_at"], r["finished_at"] or NEVER))
        started = min(r["started_at"] for r in stages)
        finished = None if any(r["finished_at"] is None for r in stages) else max(r["finished_at"] for r in stages)
        broken = [r for r in stages if r["status"] in ("failed", "running")]
        status = "failed" if any(r["status"] == "failed" for r in stages) else ("running" if broken else "succeeded")
        run = {
            "run_id": run_id,
            "status": status,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat() if finished else None,
            "seconds": round((finished - started).total_seconds(), 1) if finished else None,
            "stages": [
                {
                    "stage": r["stage"],
                    "status": r["status"],
                    "started_at": r["started_at"].isoformat(),
                    "seconds": None if r["seconds"] is None else round(r["seconds"], 1),
                    "counts": {k: v for k, v in (r["counts"] or {}).items() if not k.startswith("ms:")},
                    # masked again: rows recorded before errors were stored masked
                    "error": scrub(r["error"], limit=4000) if r["error"] else None,
                }
                for r in stages
            ],
            "resume": None,
        }
        if broken:
            if i > 0:
                run["resume"] = "a later run followed; only the latest run resumes"
            else:
                verb = "maintain" if broken[0]["stage"] == "maintain" else "run"
                command = f"campaign-pipeline {verb} --campaign {campaign_arg} --env {env}"
                # a `running` row is a live run as often as a dead one (notify --due every few
                # minutes): resuming a live run would overlap it
                run["resume"] = (
                    command
                    if status == "failed"
                    else f"{command} (only once its process has ended: a running stage may still be live)"
                )
        out.append(run)
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not ended"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def run_lines(runs: list[dict], campaign_id: str, warehouse_root: str) -> list[str]:
    """The runs as a person reads them: one line per run, one per stage, the error and the resume command."""
    if not runs:
        return [f"campaign {campaign_id}: no runs recorded in {warehouse_root}/pipeline_runs"]
    lines = [f"campaign {campaign_id}: the last {len(runs)} run(s) in {warehouse_root}, newest first"]
    for run in runs:
        started = dt.datetime.fromisoformat(run["started_at"])
        lines.append(
            f"\n{run['run_id']}  {run['status'].upper()}  started {started:%Y-%m-%d %H:%M:%S %Z} · {_duration(run['seconds'])}"
        )
        for st in run["stages"]:
            counts = " · ".join(
                f"{k.replace('_', ' ')} {v:,}" for k, v in list(st["counts"].items())[:5] if ":" not in k
            )
            lines.append(f"  {st['stage']:<14}{st['status']:<11}{_duration(st['seconds']):>12}  {counts}".rstrip())
            if st["error"]:
                lines.append(f"    error: {st['error']}")
        if run["resume"]:
            lines.append(f"  resume: {run['resume']}")
    return lines
