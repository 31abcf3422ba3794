"""Keep the warehouse healthy: compaction with Z-order, VACUUM, and archive of finished campaigns.

- **optimize**: `OPTIMIZE ... WHERE campaign_id = C ZORDER BY (<fan id>)` on the large tables, so
  one fan's rows sit in few files and Parquet statistics skip the rest (what `explain` reads).
- **vacuum**: `VACUUM ... RETAIN n HOURS` on every table; n is at least Delta's own safety
  floor (7 days, `delta.deletedFileRetentionDuration`), which stays switched on: a shorter
  retention could delete files a running reader still needs.
- **archive** (a finished campaign only: every configured wave ended, the last one longer ago
  than `--older-than`): one maintain run wins the campaign's archive (its `archives` row, a
  conditional write, with a lease renewed at every step) and moves table by table, `waves` last:
  copy the rows of the live table's current version under the archive root, verify the copy row
  for row, and delete the live rows only if the table has not moved since that version (moved:
  copy again). Rows committed between that check and the delete's own snapshot are recovered from
  the snapshot into the archive. A kill at any point leaves, per table, the live rows, or the
  live rows and a verified copy, or the verified copy alone; the `archives` row says the archive
  started, so the next run finishes it whatever was moved already. An archived campaign's row
  stays `archived`; rows that reach its live tables later are moved by the next maintain.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.catalog import CATALOG, spec
from campaign_pipeline.errors import ConfigError, PipelineError
from campaign_pipeline.frames import catalog_rows, sql_literal, sql_value
from campaign_pipeline.times import aware, ts
from campaign_pipeline.warehouse import Warehouse, is_write_conflict, retry_on_conflict

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
STAY_LIVE = ("pipeline_runs", "archives")
ARCHIVED, NOT_FINISHED, HELD_ELSEWHERE = "archived", "not finished", "held elsewhere"
ARCHIVE_LEASE_SECONDS = 3600  # renewed after every step of every table; a dead archive is taken over after it


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
    order but `waves` last (while a campaign's waves are live, a re-run can still tell it ended),
    except `pipeline_runs` and `archives`, which stay live (they record the archive itself)."""
    names = [t for t in CATALOG if "campaign_id" in spec(t).columns and t not in STAY_LIVE and wh.exists(t)]
    return sorted(names, key=lambda t: t == "waves")


def optimize(wh: Warehouse, campaign_id: str, out: MaintainReport) -> None:
    for table, column in ZORDER.items():
        if not wh.exists(table) or wh.read(table, campaign_id).isEmpty():
            continue
        sql = f"OPTIMIZE delta.`{wh.path(table)}` WHERE campaign_id = {sql_literal(campaign_id)} ZORDER BY ({column})"
        # A notify run's MERGE into the same files can win the race: compaction then runs again.
        metrics = retry_on_conflict(wh.spark, lambda q=sql: wh.spark.sql(q).first(), f"compacting {table}")["metrics"]
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
    # A table with an archive delete still to check keeps its old files: they are what time travel
    # recovers rows from if a killed archive's delete removed more than it copied.
    pending = set()
    if wh.exists("archives"):
        pending = {
            r[0].partition("#")[0] for r in wh.read("archives").where("pending IS NOT NULL").select("pending").collect()
        }
    for table in [t for t in CATALOG if wh.exists(t) and t not in pending]:
        session.sql(f"VACUUM delta.`{wh.path(table)}` RETAIN {retain_hours} HOURS")
    out.lines.append(f"vacuum: every table, files unreferenced for more than {retain_hours} h deleted")
    if pending:
        out.lines.append(
            f"vacuum: skipped {', '.join(sorted(pending))} (an archive's delete there is still to be checked)"
        )


def finished_since(wh: Warehouse, campaign, now: dt.datetime) -> dt.datetime | None:
    """When the campaign's last wave ended, or None while a configured wave has not ended."""
    rows = {r["wave_id"]: r for r in wh.read("waves", campaign.campaign_id).collect()}
    ends = []
    for w in campaign.waves:
        row = rows.get(w.wave_id)
        if row is None or row["status"] not in FINAL_WAVE:
            return None
        ends.append(aware(row["finished_at"]) or w.notify_at)
    if not ends:
        return None
    return max(ends)


def archive_record(wh: Warehouse, campaign_id: str):
    """The campaign's `archives` row (None if no archive ever started)."""
    return wh.read("archives", campaign_id).first()


def comparable(col: Column, dtype: T.DataType) -> Column:
    """`col` in a form whose JSON is the same for equal values: map entries sorted by key, at any depth."""
    if isinstance(dtype, T.MapType):
        entries = F.transform(
            F.map_entries(col),
            lambda e: F.struct(e["key"].alias("k"), comparable(e["value"], dtype.valueType).alias("v")),
        )
        return F.array_sort(entries, lambda a, b: F.when(a["k"] < b["k"], -1).when(a["k"] > b["k"], 1).otherwise(0))
    if isinstance(dtype, T.ArrayType) and _has_map(dtype.elementType):
        return F.transform(col, lambda x: comparable(x, dtype.elementType))
    if isinstance(dtype, T.StructType) and _has_map(dtype):
        return F.struct(*[comparable(col[f.name], f.dataType).alias(f.name) for f in dtype.fields])
    if isinstance(dtype, T.TimestampType):  # JSON would keep milliseconds only
        return F.unix_micros(col)
    return col


def _has_map(dtype: T.DataType) -> bool:
    if isinstance(dtype, (T.MapType, T.TimestampType)):
        return True
    if isinstance(dtype, T.ArrayType):
        return _has_map(dtype.elementType)
    if isinstance(dtype, T.StructType):
        return any(_has_map(f.dataType) for f in dtype.fields)
    return False


def row_key(df: DataFrame) -> Column:
    """A row's whole content as one string: equal rows, equal keys (no hash, so no collision)."""
    fields = sorted(df.schema.fields, key=lambda f: f.name)  # whatever order each frame has its columns in
    return F.to_json(F.struct(*[comparable(F.col(f"`{f.name}`"), f.dataType).alias(f.name) for f in fields]))


def missing_from(rows: DataFrame, kept: DataFrame) -> DataFrame:
    """The rows of `rows` that `kept` does not hold, counted as a multiset: a row `rows` holds n
    times and `kept` m times is missing max(0, n − m) times."""
    held = kept.select(row_key(kept).alias("_k")).groupBy("_k").agg(F.count(F.lit(1)).alias("_held"))
    numbered = rows.withColumn("_k", row_key(rows)).withColumn(
        "_n", F.row_number().over(Window.partitionBy("_k").orderBy("_k"))
    )
    return (
        numbered.join(held, "_k", "left")
        .where(F.col("_n") > F.coalesce(F.col("_held"), F.lit(0)))
        .drop("_k", "_n", "_held")
    )


class ArchiveLease:
    """This maintain run's hold on a campaign's archive (its `archives` row), renewed after each step."""

    def __init__(self, wh: Warehouse, campaign_id: str, run_id: str):
        self.wh, self.campaign_id, self.run_id = wh, campaign_id, run_id

    def _set(self, values: dict[str, str]) -> None:
        changed = retry_on_conflict(
            self.wh.spark,
            lambda: self.wh.update(
                "archives", self.campaign_id, values, f"state = 'archiving' AND run_id = {sql_literal(self.run_id)}"
            ),
            "recording the archive's progress",
        )
        if changed != 1:
            holder = archive_record(self.wh, self.campaign_id)
            raise PipelineError(
                f"archive: campaign {self.campaign_id} is now archived by maintain run {holder['run_id']} "
                f"({holder['state']}); this run stopped after its last verified step"
            )

    def renew(self, moved: dict[str, int] | None = None, pending: str | None = None) -> None:
        """Extend the lease, record the rows moved so far, set (or clear) the pending delete."""
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ARCHIVE_LEASE_SECONDS)
        values = {"lease_until": ts(until), "pending": sql_literal(pending) if pending else "NULL"}
        if moved is not None:
            values["moved"] = sql_value(dict(sorted(moved.items())), T.MapType(T.StringType(), T.LongType()))
        self._set(values)

    def set_pending(self, pending: str | None) -> None:
        """Record (or clear) the delete about to be made, `table#tag`, so a killed run's is checked."""
        self.renew(pending=pending)

    def done(self, moved: dict[str, int]) -> None:
        self._set({"state": "'archived'", "lease_until": "NULL", "pending": "NULL", "finished_at": ts(dt.datetime.now(dt.UTC)),
                   "moved": sql_value(dict(sorted(moved.items())), T.MapType(T.StringType(), T.LongType()))})  # fmt: skip


def take_archive(wh: Warehouse, cid: str, run_id: str, root: str, record) -> tuple[ArchiveLease | None, str]:
    """Win the campaign's archive: start it (no row yet) or take over one whose holder stopped
    renewing; exactly one of concurrent maintain runs wins. (lease, why not)."""
    now = dt.datetime.now(dt.UTC)
    until = now + dt.timedelta(seconds=ARCHIVE_LEASE_SECONDS)
    try:
        if record is None:
            row = {"campaign_id": cid, "run_id": run_id, "state": "archiving", "started_at": now,
                   "lease_until": until, "root": root, "moved": {}}  # fmt: skip
            wh.merge("archives", catalog_rows(wh.spark, "archives", [row]), campaign_id=cid)
        else:
            lease = aware(record["lease_until"])
            condition = f"state = 'archiving' AND run_id = {sql_literal(record['run_id'])} AND " + (
                f"lease_until = {ts(lease)}" if lease is not None else "lease_until IS NULL"
            )
            wh.update("archives", cid, {"run_id": sql_literal(run_id), "lease_until": ts(until)}, condition)
    except Exception as exc:
        if not is_write_conflict(wh.spark, exc):
            raise
    mine = archive_record(wh, cid)
    if mine is not None and mine["run_id"] == run_id and mine["state"] == "archiving":
        return ArchiveLease(wh, cid, run_id), ""
    return None, f"maintain run {mine['run_id']} holds it ({mine['state']})" if mine is not None else "not started"


def fingerprint(df: DataFrame) -> tuple:
    """(rows, sum of a 64-bit hash of each whole row): equal multisets of rows, equal fingerprints."""
    row = df.agg(F.count(F.lit(1)).alias("n"), F.sum(F.xxhash64(row_key(df)).cast("decimal(38,0)")).alias("h")).first()
    return row["n"], row["h"]


def copy_into(store: Warehouse, table: str, rows: DataFrame, cid: str, what: str) -> None:
    """Append to the archive the rows it does not hold yet, then check that it holds every one.
    The usual case — nothing of the campaign archived yet — is one append and one comparison of
    fingerprints (count and hash sum of whole rows, one aggregate a side); only an archive that
    already holds some of the campaign's rows is compared row for row."""
    if not store.exists(table) or store.read(table, cid).isEmpty():
        store.append(table, rows)
        if fingerprint(store.read(table, cid)) == fingerprint(rows):
            return
        left = missing_from(rows, store.read(table, cid)).count()
    else:
        rows_missing = missing_from(rows, store.read(table, cid))
        if not rows_missing.isEmpty():
            store.append(table, rows_missing)
        left = missing_from(rows, store.read(table, cid)).count()
    if left:
        raise PipelineError(
            f"archive: {table} of campaign {cid}: {left:,} of the {rows.count():,} rows of {what} are not in the archive "
            "after the copy; live rows kept"
        )


def move_table(wh: Warehouse, store: Warehouse, table: str, cid: str, lease: ArchiveLease, rounds: int = 5) -> int:
    """Move one table's rows of the campaign to the archive: copy (append) those of the live table's
    current version that the archive does not hold yet, check that the archive holds every one, and
    delete them from the live table only if it has not moved since that version (if it moved, copy
    again). The delete is recorded as pending in the `archives` row first: rows a concurrent writer
    committed between the check and the delete's own snapshot are recovered from that snapshot
    (Delta's time travel) into the archive — by this run, or by the next if this one is killed.
    The archive only ever gains rows. Returns the rows moved (0: nothing left live)."""
    wh.ensure(table)  # a table an older version wrote gains the catalog's new columns first
    for _ in range(rounds):
        version = wh.version(table)
        live = at_version(wh, table, cid, version)
        n_live = live.count()
        if n_live == 0:
            return 0
        copy_into(store, table, live, cid, f"version {version}")
        if wh.version(table) != version:
            continue  # written to since the copy: copy its new version first
        tag = f"archive-delete {cid} {table} {uuid.uuid4().hex}"
        lease.set_pending(f"{table}#{tag}")  # renews the lease too
        read_version = delete_campaign(wh, table, cid, tag)
        if read_version != version:
            n_live = recover_deleted(wh, store, table, cid, read_version)
        return n_live  # the caller clears the pending delete with the table's count
    raise PipelineError(
        f"archive: {table} of campaign {cid} changed during each of {rounds} copies; live rows kept (something still "
        "writes to this campaign: stop it, then run maintain again)"
    )


def at_version(wh: Warehouse, table: str, cid: str, version: int) -> DataFrame:
    """The campaign's rows of `table` at `version`, with the catalog's columns (a version written
    before a column was added reads it as null)."""
    rows = wh.spark.read.format("delta").option("versionAsOf", version).load(wh.path(table))
    rows = rows.where(F.col("campaign_id") == cid)
    have = set(rows.columns)
    return rows.select(
        *[
            F.col(f"`{f.name}`") if f.name in have else F.lit(None).cast(f.dataType).alias(f.name)
            for f in spec(table).schema.fields
        ]
    )


def recover_deleted(wh: Warehouse, store: Warehouse, table: str, cid: str, read_version: int) -> int:
    """What a delete removed is the campaign's rows at the version it read; copy any the archive lacks."""
    removed = at_version(wh, table, cid, read_version)
    copy_into(store, table, removed, cid, f"version {read_version} (read by the delete)")
    return removed.count()


def finish_pending(wh: Warehouse, store: Warehouse, cid: str, pending: str, lease: ArchiveLease, out) -> None:
    """A run killed around a delete left `table#tag`: if that delete committed, make sure the archive
    holds what it removed; then clear it."""
    from delta.tables import DeltaTable

    table, _, tag = pending.partition("#")
    if wh.exists(table):
        commit = DeltaTable.forPath(wh.spark, wh.path(table)).history().where(F.col("userMetadata") == tag).first()
        if commit is not None:
            recover_deleted(wh, store, table, cid, commit["readVersion"])
            out.lines.append(f"archive {table:<18} the delete a killed run committed: its rows checked in the archive")
    lease.set_pending(None)


def delete_campaign(wh: Warehouse, table: str, cid: str, tag: str) -> int:
    """Delete the campaign's rows in a commit tagged `tag`; the version of the table it read."""
    from delta.tables import DeltaTable

    session = wh.spark.newSession()
    session.conf.set("spark.databricks.delta.commitInfo.userMetadata", tag)
    retry_on_conflict(
        wh.spark,
        lambda: DeltaTable.forPath(session, wh.path(table)).delete(f"campaign_id = {sql_literal(cid)}"),
        f"deleting the archived rows of {table}",
    )
    commit = (
        DeltaTable.forPath(wh.spark, wh.path(table))
        .history(50)
        .where(F.col("userMetadata") == tag)
        .select("readVersion")
        .first()
    )
    if commit is None:
        raise PipelineError(f"archive: the delete from {table} left no commit to check (tag {tag})")
    return commit["readVersion"]


def archive(
    wh: Warehouse,
    archive_root: str,
    campaign,
    now: dt.datetime,
    older_than: dt.timedelta,
    out,
    run_id: str = "maintain",
) -> str:
    """Move a finished campaign's rows to the archive root (copy, verify, delete) under one archive
    holder, table by table, `waves` last; a run killed after any table is finished by the next.
    ARCHIVED, NOT_FINISHED, or HELD_ELSEWHERE (another maintain run is archiving it)."""
    cid = campaign.campaign_id
    record = archive_record(wh, cid)
    if record is None:
        ended = finished_since(wh, campaign, now)
        if ended is None or now - ended < older_than:
            why = "a wave has not ended" if ended is None else f"its last wave ended {ended:%Y-%m-%d %H:%M %Z}"
            out.lines.append(f"archive: campaign {cid} is not finished for {older_than} yet ({why}); nothing moved")
            return NOT_FINISHED
    elif record["state"] == "archiving":
        lease_until = aware(record["lease_until"])
        if record["run_id"] != run_id and lease_until is not None and lease_until > dt.datetime.now(dt.UTC):
            out.lines.append(
                f"archive: campaign {cid} is being archived by maintain run {record['run_id']} (until "
                f"{lease_until:%H:%M:%S} UTC); nothing done here"
            )
            return HELD_ELSEWHERE
    root = record["root"] if record is not None and record["root"] else archive_root
    if record is not None and record["state"] == "archived":
        left = [t for t in campaign_tables(wh) if not wh.read(t, cid).isEmpty()]
        if not left:
            out.lines.append(
                f"archive: campaign {cid} was archived by maintain run {record['run_id']}; nothing left live"
            )
            return ARCHIVED
        out.lines.append(f"archive: campaign {cid} is archived, but {', '.join(left)} gained rows since: moving them")
        try:
            reopened = wh.update(
                "archives", cid, {"state": "'archiving'", "run_id": sql_literal(run_id)},
                f"state = 'archived' AND run_id = {sql_literal(record['run_id'])}",
            )  # fmt: skip
        except Exception as exc:
            if not is_write_conflict(wh.spark, exc):
                raise
            reopened = 0
        if reopened != 1:
            out.lines.append(f"archive: campaign {cid}: another maintain run is moving them; nothing done here")
            return HELD_ELSEWHERE
        record = archive_record(wh, cid)
    if record is not None and root != archive_root:
        out.lines.append(f"archive: continuing into {root}, the root this campaign's archive started in")
    lease, why = take_archive(wh, cid, run_id, root, record)
    if lease is None:
        out.lines.append(f"archive: campaign {cid}: another maintain run won its archive: {why}; nothing done here")
        return HELD_ELSEWHERE
    store = Warehouse(wh.spark, root)
    moved = dict((record["moved"] or {}) if record is not None else {})
    if record is not None and record["pending"]:
        finish_pending(wh, store, cid, record["pending"], lease, out)
    for table in campaign_tables(wh):
        n = move_table(wh, store, table, cid, lease)
        if n:
            moved[table] = moved.get(table, 0) + n
            lease.renew(moved)  # and clears the pending delete
            out.counts[f"archived:{table}"] = n
            out.lines.append(f"archive {table:<18} {n:>10,} rows copied, verified, deleted from the live table")
        elif table in moved:
            out.lines.append(f"archive {table:<18} already moved ({moved[table]:,} rows archived)")
        _after_table(table)
    lease.done(moved)
    out.counts["archived_rows"] = sum(out.counts.get(f"archived:{t}", 0) for t in moved)
    return ARCHIVED


def _after_table(table: str) -> None:
    """A point between two tables of an archive (tests stop a run here, as a kill would)."""


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
        outcome = archive(ctx.warehouse, root, ctx.campaign, ctx.now, older_than, out, ctx.run_id)
    archived = outcome == ARCHIVED
    if outcome == NOT_FINISHED:  # a campaign another run is archiving is left to it, uncompacted
        with ctx.step("optimize"):
            optimize(ctx.warehouse, ctx.campaign_id, out)
    if not options.get("no_vacuum"):
        with ctx.step("vacuum"):
            vacuum(ctx.warehouse, retain, out)
    report = StageReport(counts={"archived": int(archived), **out.counts})
    report.summary = out.lines + ([f"archive root: {root}"] if archived else [])
    return report
