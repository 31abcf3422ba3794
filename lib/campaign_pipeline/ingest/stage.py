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

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from campaign_pipeline.errors import InputError, PipelineError
from campaign_pipeline.ingest import sources as src
from campaign_pipeline.ingest.parse import parse_landing_rows, parse_list_entries
from campaign_pipeline.ingest.readers import read_landing_file
from campaign_pipeline.runner import StageContext, StageResult, stage
from campaign_pipeline.session import set_stage_description
from campaign_pipeline.tables import CATALOG, Warehouse, absolute_root, sql_literal


@dataclass(frozen=True)
class LandingFile:
    path: str
    name: str
    size: int
    kind: src.FileKind
    fmt: str


def _fs(spark: SparkSession, path: str):
    hpath = spark._jvm.org.apache.hadoop.fs.Path(path)
    return hpath, hpath.getFileSystem(spark._jsc.hadoopConfiguration())


def resolve_landing_folder(spark: SparkSession, landing_root: str, campaign_id: str) -> str:
    """The campaign's landing folder, or an InputError naming what was looked for."""
    root = absolute_root(landing_root)
    for candidate in (f"{root}/{campaign_id}", root):
        hpath, fs = _fs(spark, candidate)
        if fs.exists(hpath) and fs.getFileStatus(hpath).isDirectory():
            return fs.makeQualified(hpath).toString()
    raise InputError(
        f"landing folder not found: neither {root}/{campaign_id} nor {root} is a folder "
        f"(campaign {campaign_id}); pass --landing DIR or set landing_root in the environment config"
    )


def list_landing_files(spark: SparkSession, folder: str) -> tuple[list[LandingFile], list[str]]:
    """Contract files in `folder` (top level), and the names of other files that are ignored."""
    hpath, fs = _fs(spark, folder)
    found, ignored = [], []
    for status in sorted(fs.listStatus(hpath), key=lambda s: s.getPath().getName()):
        name = status.getPath().getName()
        if status.isDirectory() or name.startswith((".", "_")):
            continue
        kind = src.kind_of(name)
        if kind is None:
            ignored.append(name)
            continue
        fmt = src.format_of(name)
        if fmt is None or fmt not in kind.formats:
            raise InputError(
                f"{status.getPath().toString()}: a {kind.name} file must be one of "
                f"{', '.join('.' + f for f in kind.formats)} (optionally .gz for text), got {name!r}"
            )
        found.append(LandingFile(status.getPath().toString(), name, int(status.getLen()), kind, fmt))
    return found, ignored


def file_checksum(spark: SparkSession, path: str) -> str:
    """MD5 of the file's bytes, computed in the JVM (works for local, HDFS and S3 paths)."""
    hpath, fs = _fs(spark, path)
    stream = fs.open(hpath)
    try:
        return spark._jvm.org.apache.hadoop.io.MD5Hash.digest(stream).toString()
    finally:
        stream.close()


def _parsed(spark: SparkSession, ctx: StageContext, f: LandingFile, checksum: str) -> DataFrame:
    raw = read_landing_file(spark, f.path, f.kind, f.fmt)
    if f.kind.entry_list:
        typed = raw.transform(parse_list_entries(f.kind))
    else:
        typed = raw.transform(parse_landing_rows(f.kind, ctx.campaign_id, ctx.campaign.market_ids))
    if not f.kind.has_campaign_column:
        typed = typed.withColumn("campaign_id", F.lit(ctx.campaign_id))
    return typed.withColumn("source_checksum", F.lit(checksum))


def _reason_category(reason):
    """`registered_at: expected ..., got '2026-13-01'` → `registered_at: expected ...` (no values)."""
    return F.regexp_replace(F.regexp_replace(reason, r", got .*$", ""), r" in '.*'$", "")


@stage("ingest", order=10, description="land a campaign's files in Delta tables")
def ingest(ctx: StageContext) -> StageResult:
    """Land the campaign's files in Delta tables; unparseable rows go to quarantine."""
    spark, wh, cid = ctx.spark, ctx.warehouse, ctx.campaign_id
    folder = resolve_landing_folder(spark, ctx.env.landing_root, cid)
    files, ignored = list_landing_files(spark, folder)

    manifest_rows = wh.read("landing_files", cid).select("source_file", "checksum", "kind").collect()
    known = {r["source_file"]: r["checksum"] for r in manifest_rows}
    if not files and not known:
        raise InputError(
            f"{folder}: no landing files for campaign {cid} (expected registrations*.csv and friends, SPEC §4)"
        )
    if not any(f.kind is src.REGISTRATIONS for f in files) and not any(
        r["kind"] == "registrations" for r in manifest_rows
    ):
        raise InputError(f"{folder}: no registrations file for campaign {cid}")

    result = StageResult()
    todo: list[tuple[LandingFile, str, str]] = []
    for f in files:
        set_stage_description(spark, "ingest", f"checksum {f.name}")
        checksum = file_checksum(spark, f.path)
        previous = known.get(f.path)
        if previous == checksum:
            result.files.append(_file_row(f, checksum, "unchanged", None))
            continue
        todo.append((f, checksum, "replaced" if previous else "ingested"))

    # Build every plan first: header and schema problems surface here, before any write.
    by_table: dict[str, list[DataFrame]] = {}
    for f, checksum, _ in todo:
        by_table.setdefault(f.kind.table, []).append(_parsed(spark, ctx, f, checksum))

    parsed_by_table = {
        table: _union(frames).withColumn("_ok", F.size("reasons") == 0) for table, frames in by_table.items()
    }
    if "code_pool" in parsed_by_table:
        from campaign_pipeline.codes.pool import flag_duplicate_codes

        earlier = wh.read("code_pool", cid).where(~F.col("source_file").isin(all_names_of(todo)))
        flagged = flag_duplicate_codes(parsed_by_table["code_pool"].drop("_ok"), earlier)
        parsed_by_table["code_pool"] = flagged.withColumn("_ok", F.size("reasons") == 0)
    for df in parsed_by_table.values():
        df.persist(StorageLevel.MEMORY_AND_DISK)
    counts = _counts_per_file(spark, parsed_by_table)
    names_by_table = {t: [f.path for f, _, _ in todo if f.kind.table == t] for t in parsed_by_table}
    all_names = [f.path for f, _, _ in todo]
    leftovers = _tables_with_rows_of(wh, cid, names_by_table, all_names)

    stamp = F.lit(ctx.started_at).cast("timestamp")
    quarantined: list[DataFrame] = []
    for table, parsed in parsed_by_table.items():
        good = (
            parsed.where("_ok")
            .drop("_ok", "reasons", "raw")
            .withColumn("ingested_at", stamp)
            .withColumn("run_id", F.lit(ctx.run_id))
        )
        set_stage_description(spark, "ingest", f"write {table}")
        _write_files(wh, table, good, cid, names_by_table[table], replace=table in leftovers)
        quarantined.append(
            parsed.where(~F.col("_ok")).select(
                # Quarantined rows keep the run's campaign id even when the row named another campaign.
                F.lit(cid).alias("campaign_id"),
                F.lit("ingest").alias("stage"),
                "source_file",
                F.col("source_line").alias("line"),
                "raw",
                F.array_join("reasons", "; ").alias("reason"),
                F.lit(ctx.run_id).alias("run_id"),
                "source_checksum",
                stamp.alias("quarantined_at"),
            )
        )

    reasons: dict[str, int] = {}
    if todo:
        set_stage_description(spark, "ingest", "write quarantine")
        _write_files(
            wh, "quarantine", _union(quarantined), cid, all_names, "stage = 'ingest'", replace="quarantine" in leftovers
        )
        set_stage_description(spark, "ingest", "reconcile")
        reasons = _verify(wh, cid, todo, counts)

    manifest = []
    for f, checksum, action in todo:
        c = counts.get(f.path, {"read": 0, "ok": 0})
        result.files.append(_file_row(f, checksum, action, c))
        manifest.append(
            (
                cid,
                f.path,
                f.kind.name,
                f.fmt,
                checksum,
                f.size,
                c["read"],
                c["ok"],
                c["read"] - c["ok"],
                ctx.run_id,
                ctx.started_at,
            )
        )
    if manifest:
        wh.merge(
            "landing_files", spark.createDataFrame(manifest, CATALOG["landing_files"].schema), update_existing=True
        )
    for df in parsed_by_table.values():
        df.unpersist()

    new = [f for f in result.files if f["action"] != "unchanged"]
    result.counts = {
        "files": len(files),
        "files_new": sum(1 for f in new if f["action"] == "ingested"),
        "files_replaced": sum(1 for f in new if f["action"] == "replaced"),
        "files_unchanged": len(files) - len(new),
        "rows_read": sum(f["rows_read"] or 0 for f in new),
        "rows_ingested": sum(f["rows_ingested"] or 0 for f in new),
        "rows_quarantined": sum(f["rows_quarantined"] or 0 for f in new),
        "files_ignored": len(ignored),
    }
    for table in sorted({f.kind.table for f, _, _ in todo}):
        result.counts[f"{table}.ingested"] = sum(
            counts.get(f.path, {}).get("ok", 0) for f, _, _ in todo if f.kind.table == table
        )
    for reason, n in reasons.items():
        result.counts[f"quarantine:{reason}"] = n
    result.summary = [f"landing folder {folder}"]
    for f in result.files:
        figures = (
            "unchanged, skipped"
            if f["action"] == "unchanged"
            else f"{f['action']}: {f['rows_read']:,} read = {f['rows_ingested']:,} ingested + {f['rows_quarantined']:,} quarantined"
        )
        result.summary.append(f"{f['kind']:<16} {f['source_file'].rsplit('/', 1)[-1]}: {figures}")
    for reason, n in reasons.items():
        result.summary.append(f"quarantined {n:,} × {reason}")
    if ignored:
        result.summary.append(f"ignored (not a landing file kind): {', '.join(ignored)}")
    return result


def all_names_of(todo: list) -> list[str]:
    return [f.path for f, _, _ in todo]


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for more in frames[1:]:
        out = out.unionByName(more)
    return out


def _counts_per_file(spark: SparkSession, parsed_by_table: dict[str, DataFrame]) -> dict[str, dict[str, int]]:
    """Rows read and rows parseable per file, for every table in one job."""
    if not parsed_by_table:
        return {}
    both = _union([df.select("source_file", F.col("_ok").cast("long").alias("ok")) for df in parsed_by_table.values()])
    rows = both.groupBy("source_file").agg(F.count(F.lit(1)).alias("read"), F.sum("ok").alias("ok")).collect()
    return {r["source_file"]: {"read": r["read"], "ok": r["ok"] or 0} for r in rows}


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
    return {r["t"] for r in _union(probes).collect()} if probes else set()


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


def _file_row(f: LandingFile, checksum: str, action: str, c: dict | None) -> dict:
    return {
        "source_file": f.path,
        "kind": f.kind.name,
        "format": f.fmt,
        "checksum": checksum,
        "action": action,
        "rows_read": c["read"] if c else None,
        "rows_ingested": c["ok"] if c else None,
        "rows_quarantined": c["read"] - c["ok"] if c else None,
    }


def _verify(wh: Warehouse, cid: str, todo: list, counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Read the written tables back: per file, ingested + quarantined must equal rows read.

    Returns the quarantined rows of these files per reason category (values stripped).
    """
    names = [f.path for f, _, _ in todo]
    landed = None
    for table in sorted({f.kind.table for f, _, _ in todo}):
        part = (
            wh.read(table, cid)
            .where(F.col("source_file").isin(names))
            .select("source_file", F.lit(None).cast("string").alias("reason"))
        )
        landed = part if landed is None else landed.unionByName(part)
    held = wh.read("quarantine", cid).where((F.col("stage") == "ingest") & F.col("source_file").isin(names))
    rows = (
        landed.unionByName(held.select("source_file", _reason_category(F.col("reason")).alias("reason")))
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
    for name in names:
        c = counts.get(name, {"read": 0, "ok": 0})
        got_ok, got_q = ingested.get(name, 0), quarantined.get(name, 0)
        if got_ok + got_q != c["read"] or got_ok != c["ok"]:
            raise PipelineError(
                f"{name}: reconciliation failed: {c['read']} rows read but {got_ok} ingested "
                f"+ {got_q} quarantined found in the tables"
            )
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
