"""The ingest stage: land a campaign's files in Delta, quarantining what cannot be parsed.

Rules:
- Landing folder: `<landing_root>/<campaign_id>/` when it exists, else `<landing_root>` itself.
- A file is identified by its path; its MD5 checksum decides what happens: unknown path → ingest;
  same path and checksum → nothing changes; same path, new checksum → its earlier rows (and
  quarantined rows) are replaced atomically per table.
- Per file, rows read = rows ingested + rows quarantined; the stage reads the tables back to
  prove it, and records the figures in `pipeline_runs.files` and `landing_files`.
- Problems with a whole file (missing folder, a required column absent from the header, an
  unsupported format) stop the stage before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from campaign_pipeline.errors import InputError, PipelineError
from campaign_pipeline.frames import catalog_rows, sql_literal, union_all
from campaign_pipeline.ingest import sources as src
from campaign_pipeline.ingest.checks import CHECKS
from campaign_pipeline.ingest.code_pool import flag_duplicate_codes
from campaign_pipeline.ingest.parse import parse_landing_rows, parse_list_entries
from campaign_pipeline.ingest.readers import read_landing_file
from campaign_pipeline.quality.expectations import check_tables
from campaign_pipeline.quality.reconcile import reason_category
from campaign_pipeline.spreadsheets import FORMULA_START
from campaign_pipeline.stage_context import StageContext, StageReport
from campaign_pipeline.storage import hadoop_fs
from campaign_pipeline.warehouse import Warehouse, absolute_root


@dataclass(frozen=True)
class LandingFile:
    path: str
    name: str
    size: int
    kind: src.FileKind
    fmt: str
    parts: tuple[str, ...] = ()  # a folder of part files (Spark output) is one logical file
    rejected: str | None = None  # why the file is listed but not ingested


def resolve_landing_folder(spark: SparkSession, landing_root: str, campaign_id: str) -> str:
    """The campaign's landing folder, or an InputError naming what was looked for."""
    root = absolute_root(landing_root)
    for candidate in (f"{root}/{campaign_id}", root):
        hpath, fs = hadoop_fs(spark, candidate)
        if fs.exists(hpath) and fs.getFileStatus(hpath).isDirectory():
            return fs.makeQualified(hpath).toString()
    raise landing_not_found(root, campaign_id)


def landing_not_found(root: str, campaign_id: str) -> InputError:
    return InputError(
        f"landing folder not found: neither {root}/{campaign_id} nor {root} is a folder "
        f"(campaign {campaign_id}); pass --landing DIR or set landing_root in the environment config"
    )


def _part_folder(fs, status, kind: src.FileKind) -> LandingFile:
    """A folder named like a landing file: one logical file made of its parts, or a rejected one."""
    name, path = status.getPath().getName(), status.getPath().toString()
    parts = sorted(
        (s for s in fs.listStatus(status.getPath()) if s.isFile() and not s.getPath().getName().startswith(("_", "."))),
        key=lambda s: s.getPath().getName(),
    )
    formats = {src.format_of(s.getPath().getName()) for s in parts}
    fmt = src.format_of(name) or (next(iter(formats)) if len(formats) == 1 else None)
    size = sum(int(s.getLen()) for s in parts)
    rejected = None
    if not parts:
        rejected = "an empty folder"
    elif len(formats) != 1 or fmt not in formats or fmt not in kind.formats:
        found = ", ".join(sorted(f or "unknown" for f in formats))
        rejected = (
            f"a folder of parts must hold one format of a {kind.name} file ({', '.join(kind.formats)}); found {found}"
        )
    elif fmt in ("csv", "tsv"):
        rejected = f"a folder of {fmt.upper()} parts (each part repeats the header): deliver one file"
    return LandingFile(path, name + "/", size, kind, fmt or "", tuple(s.getPath().toString() for s in parts), rejected)


def list_landing_files(spark: SparkSession, folder: str) -> tuple[list[LandingFile], list[str]]:
    """Contract files in `folder` (top level; a folder of part files counts as one), and the names
    of everything else, which is listed as ignored."""
    hpath, fs = hadoop_fs(spark, folder)
    found, ignored = [], []
    for status in sorted(fs.listStatus(hpath), key=lambda s: s.getPath().getName()):
        name = status.getPath().getName()
        if name.startswith((".", "_")):
            continue
        kind = src.kind_of(name)
        if kind is None:
            ignored.append(name + ("/" if status.isDirectory() else ""))
            continue
        if status.isDirectory():
            found.append(_part_folder(fs, status, kind))
            continue
        fmt = src.format_of(name)
        if fmt is None or fmt not in kind.formats:
            raise InputError(
                f"{status.getPath().toString()}: a {kind.name} file must be one of "
                f"{', '.join('.' + f for f in kind.formats)} (optionally .gz for text), got {name!r}"
            )
        found.append(LandingFile(status.getPath().toString(), name, int(status.getLen()), kind, fmt))
    return found, ignored


def file_checksum(spark: SparkSession, f: LandingFile) -> str:
    """MD5 of the file's bytes (of each part's name and MD5, for a folder of parts)."""
    if f.parts:
        import hashlib

        listing = "\n".join(f"{p.rsplit('/', 1)[-1]} {_md5(spark, p)}" for p in f.parts)
        return hashlib.md5(listing.encode("utf-8")).hexdigest()
    return _md5(spark, f.path)


def _md5(spark: SparkSession, path: str) -> str:
    """MD5 of one file's bytes, computed in the JVM (works for local, HDFS and S3 paths)."""
    hpath, fs = hadoop_fs(spark, path)
    stream = fs.open(hpath)
    try:
        return spark._jvm.org.apache.hadoop.io.MD5Hash.digest(stream).toString()
    finally:
        stream.close()


@dataclass
class FilePlan:
    """What this run does with one landing file, and its row figures once parsed."""

    file: LandingFile
    checksum: str
    action: str  # ingested (new path) | replaced (new checksum) | unchanged | rejected
    read: int = 0
    ok: int = 0

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def table(self) -> str:
        return self.file.kind.table

    def row(self) -> dict:
        """The file's entry in `pipeline_runs.files`."""
        done = self.action in ("ingested", "replaced")
        return {
            "source_file": self.path,
            "kind": self.file.kind.name,
            "format": self.file.fmt,
            "checksum": self.checksum,
            "action": self.action,
            "rows_read": self.read if done else None,
            "rows_ingested": self.ok if done else None,
            "rows_quarantined": self.read - self.ok if done else None,
        }


def plan_files(ctx: StageContext) -> tuple[str, list[FilePlan], list[str]]:
    """(landing folder, one plan per contract file, names of ignored files); checksums decide actions."""
    spark, wh, cid = ctx.spark, ctx.warehouse, ctx.campaign_id
    folder = resolve_landing_folder(spark, ctx.env.landing_root, cid)
    files, ignored = list_landing_files(spark, folder)
    manifest = wh.read("landing_files", cid).select("source_file", "checksum", "kind").collect()
    known = {r["source_file"]: r["checksum"] for r in manifest}
    if not files and not known:
        raise InputError(f"{folder}: no landing files for campaign {cid} (expected registrations*.csv and friends)")
    usable = [f for f in files if f.rejected is None]
    if not any(f.kind is src.REGISTRATIONS for f in usable) and not any(r["kind"] == "registrations" for r in manifest):
        raise InputError(f"{folder}: no registrations file for campaign {cid}")
    plans = [FilePlan(f, "", "rejected") for f in files if f.rejected]
    for f in usable:
        ctx.describe(f"checksum {f.name}")
        checksum = file_checksum(spark, f)
        previous = known.get(f.path)
        action = "unchanged" if previous == checksum else "replaced" if previous else "ingested"
        plans.append(FilePlan(f, checksum, action))
    return folder, plans, ignored


def parse_file(ctx: StageContext, plan: FilePlan) -> DataFrame:
    """One landing file as typed rows with `reasons` (empty when the row is good) and its lineage."""
    f = plan.file
    raw = read_landing_file(ctx.spark, f.path, f.kind, f.fmt, ctx.campaign.ingest.of(f.kind.name))
    if f.kind.entry_list:
        typed = raw.transform(parse_list_entries(f.kind))
    else:
        typed = raw.transform(parse_landing_rows(f.kind, ctx.campaign_id, ctx.campaign.market_ids))
    if not f.kind.has_campaign_column:
        typed = typed.withColumn("campaign_id", F.lit(ctx.campaign_id))
    return typed.withColumn("source_checksum", F.lit(plan.checksum))


def parse_tables(ctx: StageContext, todo: list[FilePlan]) -> dict[str, DataFrame]:
    """Per table, the parsed rows of its files with `_ok`; duplicate pool codes flagged.

    Every plan is built before anything is written, so header and schema problems stop the stage
    with nothing written.
    """
    by_table: dict[str, list[DataFrame]] = {}
    for plan in todo:
        by_table.setdefault(plan.table, []).append(parse_file(ctx, plan))
    parsed = {table: union_all(frames) for table, frames in by_table.items()}
    if "code_pool" in parsed:
        others = ctx.warehouse.read("code_pool", ctx.campaign_id).where(~F.col("source_file").isin(_paths(todo)))
        parsed["code_pool"] = flag_duplicate_codes(parsed["code_pool"], others)
    # A row as delivered (`raw`) is kept for quarantine only: good rows drop it before the cut, which
    # then holds a fraction of the bytes (and a columnar row is never turned into JSON text).
    return {
        t: ctx.cut(
            df.withColumn("_ok", F.size("reasons") == 0).withColumn("raw", F.when(~F.col("_ok"), F.col("raw"))),
            f"parse {t}",
        )
        for t, df in parsed.items()
    }


def count_rows(parsed: dict[str, DataFrame], todo: list[FilePlan]) -> None:
    """Fill each plan's rows read and rows parseable, for every table in one job."""
    if not parsed:
        return
    both = union_all([df.select("source_file", F.col("_ok").cast("long").alias("ok")) for df in parsed.values()])
    rows = both.groupBy("source_file").agg(F.count(F.lit(1)).alias("read"), F.sum("ok").alias("ok")).collect()
    figures = {r["source_file"]: (r["read"], r["ok"] or 0) for r in rows}
    for plan in todo:
        plan.read, plan.ok = figures.get(plan.path, (0, 0))


def quarantined_rows(ctx: StageContext, parsed: DataFrame) -> DataFrame:
    stamp = F.lit(ctx.started_at).cast("timestamp")
    return parsed.where(~F.col("_ok")).select(
        # Quarantined rows keep the run's campaign id even when the row named another campaign.
        F.lit(ctx.campaign_id).alias("campaign_id"),
        F.lit("ingest").alias("stage"),
        "source_file",
        F.col("source_line").alias("line"),
        "raw",
        F.array_join("reasons", "; ").alias("reason"),
        F.lit(ctx.run_id).alias("run_id"),
        "source_checksum",
        stamp.alias("quarantined_at"),
    )


def write_tables(ctx: StageContext, parsed: dict[str, DataFrame], todo: list[FilePlan]) -> None:
    """Good rows to their tables, bad rows to quarantine; rows an earlier version of a file left are replaced."""
    wh, cid = ctx.warehouse, ctx.campaign_id
    paths = {t: [p.path for p in todo if p.table == t] for t in parsed}
    leftovers = _tables_with_rows_of(wh, cid, paths, _paths(todo))
    stamp = F.lit(ctx.started_at).cast("timestamp")
    for table, df in parsed.items():
        good = df.where("_ok").drop("_ok", "reasons", "raw")
        good = good.withColumn("ingested_at", stamp).withColumn("run_id", F.lit(ctx.run_id))
        ctx.describe(f"write {table}")
        _write_files(wh, table, good, cid, paths[table], replace=table in leftovers)
    ctx.describe("write quarantine")
    bad = union_all([quarantined_rows(ctx, df) for df in parsed.values()])
    _write_files(wh, "quarantine", bad, cid, _paths(todo), "stage = 'ingest'", replace="quarantine" in leftovers)


def write_manifest(ctx: StageContext, todo: list[FilePlan]) -> None:
    rows = [
        {
            "campaign_id": ctx.campaign_id,
            "source_file": p.path,
            "kind": p.file.kind.name,
            "format": p.file.fmt,
            "checksum": p.checksum,
            "size_bytes": p.file.size,
            "rows_read": p.read,
            "rows_ingested": p.ok,
            "rows_quarantined": p.read - p.ok,
            "run_id": ctx.run_id,
            "ingested_at": ctx.started_at,
        }
        for p in todo
    ]
    if rows:
        ctx.warehouse.merge(
            "landing_files", catalog_rows(ctx.spark, "landing_files", rows), update_existing=True,
            campaign_id=ctx.campaign_id,
        )  # fmt: skip


def ingest(ctx: StageContext) -> StageReport:
    """Land the campaign's files in Delta tables; unparseable rows go to quarantine."""
    with ctx.step("list_and_checksum"):
        folder, plans, ignored = plan_files(ctx)
        todo = [p for p in plans if p.action in ("ingested", "replaced")]
    reasons: dict[str, int] = {}
    if todo:
        with ctx.step("parse"):
            parsed = parse_tables(ctx, todo)
            count_rows(parsed, todo)
        with ctx.step("write"):
            write_tables(ctx, parsed, todo)
        with ctx.step("reconcile"):
            reasons = _verify(ctx.warehouse, ctx.campaign_id, todo)
            write_manifest(ctx, todo)
    report = ingest_report(folder, plans, ignored, reasons)
    if todo and "code_pool" in parsed:
        formula_like = parsed["code_pool"].where(F.col("_ok") & F.col("code").rlike(FORMULA_START)).count()
        if formula_like:
            report.counts["codes_formula_like"] = formula_like
            report.summary.append(
                f"{formula_like:,} pool codes begin with =, +, -, @, a tab or a carriage return: the legacy CSVs write "
                "them with a leading ' (so a spreadsheet cannot run them); fans must type them as issued — check "
                "the vendor's file"
            )
    if any(p.table == "registrations" for p in todo):
        with ctx.step("expectations"):
            report.summary.append(f"expectations on registrations: {check_tables(ctx, CHECKS)[0]}")
    return report


def ingest_report(folder: str, plans: list[FilePlan], ignored: list[str], reasons: dict[str, int]) -> StageReport:
    """Files by action, rows read = ingested + quarantined per file, quarantine reasons."""
    todo = [p for p in plans if p.action in ("ingested", "replaced")]
    rejected = [p for p in plans if p.action == "rejected"]
    report = StageReport(files=[p.row() for p in plans])
    report.counts = {
        "files": len(plans),
        "files_new": sum(p.action == "ingested" for p in todo),
        "files_replaced": sum(p.action == "replaced" for p in todo),
        "files_unchanged": sum(p.action == "unchanged" for p in plans),
        "rows_read": sum(p.read for p in todo),
        "rows_ingested": sum(p.ok for p in todo),
        "rows_quarantined": sum(p.read - p.ok for p in todo),
        "files_ignored": len(ignored),
        "files_rejected": len(rejected),
    }
    for table in sorted({p.table for p in todo}):
        report.counts[f"{table}.ingested"] = sum(p.ok for p in todo if p.table == table)
    report.counts.update({f"quarantine:{reason}": n for reason, n in reasons.items()})
    report.summary = [f"landing folder {folder}"]
    for p in plans:
        figures = (
            "unchanged, skipped"
            if p.action == "unchanged"
            else f"REJECTED, not ingested: {p.file.rejected}"
            if p.action == "rejected"
            else f"{p.action}: {p.read:,} read = {p.ok:,} ingested + {p.read - p.ok:,} quarantined"
        )
        report.summary.append(f"{p.file.kind.name:<16} {p.file.name}: {figures}")
    report.summary += [f"quarantined {n:,} × {reason}" for reason, n in reasons.items()]
    if ignored:
        report.summary.append(f"ignored (not a landing file kind): {', '.join(ignored)}")
    return report


def _paths(plans: list[FilePlan]) -> list[str]:
    return [p.path for p in plans]


def _tables_with_rows_of(
    wh: Warehouse, cid: str, names_by_table: dict[str, list[str]], all_names: list[str]
) -> set[str]:
    """Tables that already hold rows of the files about to be written (a changed file, a crashed run)."""
    probes = [
        wh.read(table, cid).where(F.col("source_file").isin(names)).select(F.lit(table).alias("t")).limit(1)
        for table, names in names_by_table.items()
        if wh.exists(table)
    ]
    if wh.exists("quarantine") and all_names:
        probes.append(
            wh.read("quarantine", cid)
            .where((F.col("stage") == "ingest") & F.col("source_file").isin(all_names))
            .select(F.lit("quarantine").alias("t"))
            .limit(1)
        )
    return {r["t"] for r in union_all(probes).collect()} if probes else set()


def _write_files(
    wh: Warehouse,
    table: str,
    df: DataFrame,
    cid: str,
    names: list[str],
    condition: str | None = None,
    replace: bool = True,
) -> None:
    """Write the rows of these files; with `replace`, atomically instead of the rows they left before.

    Appending is much cheaper than a conditional overwrite, so it is used when the table holds
    no row of these files.
    """
    if replace:
        wh.replace(table, df, cid, _in("source_file", names) + (f" AND {condition}" if condition else ""))
    else:
        wh.append(table, df)


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


def _verify(wh: Warehouse, cid: str, todo: list[FilePlan]) -> dict[str, int]:
    """Read the written tables back: per file, ingested + quarantined must equal rows read.

    Returns the quarantined rows of these files per reason category (values stripped).
    """
    names = _paths(todo)
    landed = union_all(
        [
            wh.read(table, cid)
            .where(F.col("source_file").isin(names))
            .select("source_file", F.lit(None).cast("string").alias("reason"))
            for table in sorted({p.table for p in todo})
        ]
    )
    held = wh.read("quarantine", cid).where((F.col("stage") == "ingest") & F.col("source_file").isin(names))
    rows = (
        landed.unionByName(held.select("source_file", reason_category(F.col("reason")).alias("reason")))
        .groupBy("source_file", "reason")
        .count()
        .collect()
    )
    ingested: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for r in rows:
        if r["reason"] is None:
            ingested[r["source_file"]] = r["count"]
        else:
            quarantined[r["source_file"]] = quarantined.get(r["source_file"], 0) + r["count"]
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + r["count"]
    for p in todo:
        got_ok, got_q = ingested.get(p.path, 0), quarantined.get(p.path, 0)
        if got_ok + got_q != p.read or got_ok != p.ok:
            raise PipelineError(
                f"{p.path}: reconciliation failed: {p.read} rows read but {got_ok} ingested "
                f"+ {got_q} quarantined found in the tables"
            )
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
