"""Keep the warehouse healthy: compaction with Z-order, VACUUM, and archive of finished campaigns.

- **optimize**: `OPTIMIZE ... WHERE campaign_id = C ZORDER BY (<fan id>)` on the large tables, so
  one fan's rows sit in few files and Parquet statistics skip the rest (what `explain` reads).
- **vacuum**: `VACUUM ... RETAIN n HOURS` on every table; n is at least Delta's own safety
  floor (7 days, `delta.deletedFileRetentionDuration`), which stays switched on: a shorter
  retention could delete files a running reader still needs.
- **archive** (a finished campaign only: every configured wave ended, the last one longer ago
  than `--older-than`): for each table, copy the campaign's rows to the same table under the
  archive root in an idempotent Delta transaction, verify the archived row count equals the live
  one, and only then delete the live rows. A kill at any point leaves, per table, the live rows,
  or the live rows and a verified copy, or the verified copy alone; a re-run finishes the move.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from pyspark.sql import functions as F

from campaign_pipeline.errors import ConfigError, PipelineError
from campaign_pipeline.tables import CATALOG, Warehouse, spec

# The tables that grow with registrants or messages, with the column one fan's lookups filter on.
ZORDER = {
    "registrations": "global_user_id",
    "fan_activity": "global_user_id",
    "registrants": "global_user_id",
    "scores": "global_user_id",
    "selections": "global_user_id",
    "standings": "global_user_id",
    "code_assignments": "global_user_id",
    "wave_messages": "global_user_id",
    "notification_log": "message_id",
}
MIN_RETAIN_HOURS = 168  # Delta's default deletedFileRetentionDuration, checked by Delta itself
FINAL_WAVE = ("completed", "completed_with_failures", "failed")


def parse_age(text: str) -> dt.timedelta:
    """`30d`, `12h`, `90m` → a timedelta (for `--older-than`)."""
    m = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text or "")
    if not m:
        raise ConfigError(f"--older-than: expected a number with d, h or m (e.g. 30d), got {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"d": dt.timedelta(days=n), "h": dt.timedelta(hours=n), "m": dt.timedelta(minutes=n)}[unit]


@dataclass
class MaintainReport:
    counts: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def campaign_tables(wh: Warehouse) -> list[str]:
    """The tables archived: every catalog table with a `campaign_id` column that exists, in catalog
    order, except `pipeline_runs`, which stays live (it records the archive run itself)."""
    return [t for t in CATALOG if "campaign_id" in spec(t).columns and t != "pipeline_runs" and wh.exists(t)]


def optimize(wh: Warehouse, campaign_id: str, out: MaintainReport) -> None:
    for table, column in ZORDER.items():
        if not wh.exists(table) or wh.read(table, campaign_id).isEmpty():
            continue
        metrics = wh.spark.sql(
            f"OPTIMIZE delta.`{wh.path(table)}` WHERE campaign_id = '{campaign_id}' ZORDER BY ({column})"
        ).first()["metrics"]
        added, removed = metrics["numFilesAdded"], metrics["numFilesRemoved"]
        out.counts[f"optimize:{table}:files_removed"] = removed
        out.counts[f"optimize:{table}:files_added"] = added
        out.lines.append(f"optimize {table:<18} {removed:>6,} files → {added:,} (z-order by {column})")


def vacuum(wh: Warehouse, retain_hours: int, out: MaintainReport) -> None:
    if retain_hours < MIN_RETAIN_HOURS:
        raise ConfigError(
            f"--retain-hours {retain_hours}: at least {MIN_RETAIN_HOURS} (7 days, Delta's retention safety "
            "check); readers and time travel within that window need the files"
        )
    # VACUUM lists a table's files with `parallelPartitionDiscovery.parallelism` tasks (10,000 by
    # default: minutes of empty tasks per table on a small cluster). A session of its own, sharing
    # the context, lists with a few tasks per core without changing the shared session's settings.
    session = wh.spark.newSession()
    session.conf.set(
        "spark.sql.sources.parallelPartitionDiscovery.parallelism", str(4 * wh.spark.sparkContext.defaultParallelism)
    )
    for table in [t for t in CATALOG if wh.exists(t)]:
        session.sql(f"VACUUM delta.`{wh.path(table)}` RETAIN {retain_hours} HOURS")
    out.lines.append(f"vacuum: every table, files unreferenced for more than {retain_hours} h deleted")


def finished_since(wh: Warehouse, campaign, now: dt.datetime) -> dt.datetime | None:
    """When the campaign's last wave ended, or None while a configured wave has not ended."""
    rows = {r["wave_id"]: r for r in wh.read("waves", campaign.campaign_id).collect()}
    ends = []
    for w in campaign.waves:
        row = rows.get(w.wave_id)
        if row is None or row["status"] not in FINAL_WAVE:
            return None
        ends.append(row["finished_at"] or w.notify_at)
    if not ends:
        return None
    end = max(ends)
    return end if end.tzinfo else end.replace(tzinfo=dt.UTC)


def archive(wh: Warehouse, archive_root: str, campaign, now: dt.datetime, older_than: dt.timedelta, out) -> bool:
    """Move a finished campaign's rows to the archive root (copy, verify, delete); False if not finished."""
    cid = campaign.campaign_id
    ended = finished_since(wh, campaign, now)
    if ended is None or now - ended < older_than:
        why = "a wave has not ended" if ended is None else f"its last wave ended {ended:%Y-%m-%d %H:%M %Z}"
        out.lines.append(f"archive: campaign {cid} is not finished for {older_than} yet ({why}); nothing moved")
        return False
    store = Warehouse(wh.spark, archive_root)
    moved = 0
    for table in campaign_tables(wh):
        version = wh.version(table)
        live = wh.spark.read.format("delta").option("versionAsOf", version).load(wh.path(table))
        live = live.where(F.col("campaign_id") == cid)
        n_live = live.count()
        n_kept = store.read(table, cid).count() if store.exists(table) else 0
        if n_live == 0:
            if n_kept:
                out.lines.append(f"archive {table:<18} already moved ({n_kept:,} rows archived)")
            continue
        if n_kept not in (0, n_live):
            raise PipelineError(
                f"archive: {table} of campaign {cid} has {n_live:,} live rows and {n_kept:,} archived ones: an "
                "earlier archive of a different version; compare the two tables before deleting anything"
            )
        if n_kept == 0:
            store.append_once(table, live, f"archive:{cid}:{table}", version, f"archive {cid} {table}@v{version}")
            n_kept = store.read(table, cid).count()
        if n_kept != n_live:
            raise PipelineError(
                f"archive: {table} of campaign {cid}: {n_kept:,} rows archived ≠ {n_live:,} live; live rows kept"
            )
        wh.delete(table, F.col("campaign_id") == cid)
        moved += n_live
        out.counts[f"archived:{table}"] = n_live
        out.lines.append(f"archive {table:<18} {n_live:>10,} rows copied, verified, deleted from the live table")
    out.counts["archived_rows"] = moved
    return True


def maintain(ctx) -> object:
    """The `maintain` operation for one campaign (options from the command line): archive it if it
    is finished, else compact it; then vacuum. Run through the runner, so it is recorded in
    `pipeline_runs` like a stage."""
    from campaign_pipeline.stage_context import StageReport

    options = ctx.options
    older_than = parse_age(options.get("older_than") or "30d")
    retain = int(options.get("retain_hours") or MIN_RETAIN_HOURS)
    if retain < MIN_RETAIN_HOURS:  # before any work: a bad option changes nothing
        vacuum(ctx.warehouse, retain, MaintainReport())
    out = MaintainReport()
    root = ctx.env.archive_root or f"{ctx.warehouse.root}/_archive"
    with ctx.step("archive"):
        archived = archive(ctx.warehouse, root, ctx.campaign, ctx.now, older_than, out)
    if not archived:
        with ctx.step("optimize"):
            optimize(ctx.warehouse, ctx.campaign_id, out)
    if not options.get("no_vacuum"):
        with ctx.step("vacuum"):
            vacuum(ctx.warehouse, retain, out)
    report = StageReport(counts={"archived": int(archived), **out.counts})
    report.summary = out.lines + ([f"archive root: {root}"] if archived else [])
    return report
