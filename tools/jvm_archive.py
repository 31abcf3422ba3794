"""Build the class-data archive the test JVMs start from (`make test` runs this once per machine).

    python tools/jvm_archive.py --out build/test-jvm.jsa

A test run starts dozens of short-lived Spark JVMs (each command-line run, notify process, notebook
kernel, the wheel's demo, besides the two workers' sessions); on tiny data most of their CPU goes to
loading and linking the same twenty thousand classes. Java's dynamic class-data sharing archives
the classes a JVM loaded when it exits (`-XX:ArchiveClassesAtExit`); a JVM started with
`-XX:SharedArchiveFile` maps them instead (`tests/helpers.py` adds it to `TEST_JVM_OPTIONS` when the
archive exists). This script runs one test-configured session through the kinds of work the
pipeline does — CSV and JSON reads, Delta writes, MERGE, UPDATE, DELETE, joins, windows, pandas
UDFs, Arrow both ways, a checkpoint — and lets its JVM exit so that it writes the archive.

An archive that no longer matches (another JDK, changed jars) is ignored by the JVM, which then
loads its classes as usual; `make` rebuilds it when the jars change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 600


def workload(work: Path) -> None:
    """One session doing a bit of everything (runs in a child process whose JVM writes the archive)."""
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ.setdefault("CAMPAIGN_PIPELINE_JARS_DIR", str(ROOT / "jars"))
    import pandas as pd
    from helpers import TEST_SPARK_CONF
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from campaign_pipeline.config import Environment, SparkSettings
    from campaign_pipeline.session import build_session

    archive = os.environ["JVM_ARCHIVE_OUT"]
    conf = dict(TEST_SPARK_CONF)
    options = [
        o
        for o in conf["spark.driver.extraJavaOptions"].split()
        if not o.startswith(("-XX:SharedArchiveFile", "-Xlog:cds"))
    ]
    options += [f"-XX:ArchiveClassesAtExit={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    conf["spark.driver.extraJavaOptions"] = " ".join(options)  # the test options, not the archive they use
    env = Environment(
        name="test", mode="local", warehouse_root=str(work / "wh"), landing_root=str(work / "landing"),
        lineage="local_checkpoint", spark=SparkSettings(master="local[2]", conf=conf),
    )  # fmt: skip
    spark = build_session(env, app_name="campaign-pipeline jvm archive")
    spark.sparkContext.setLogLevel("ERROR")
    (work / "landing").mkdir(parents=True)
    (work / "landing" / "r.csv").write_text("id,email,at\n1,a@x.com,2027-01-01T10:00:00Z\n2,b@y.com,oops\n")
    (work / "landing" / "r.jsonl").write_text('{"id": 3, "email": "c@z.com", "tags": ["a"], "ok": true}\n')
    csv = spark.read.option("header", True).csv(str(work / "landing" / "r.csv"))
    csv = csv.select(F.expr("try_cast(id as int)").alias("id"), "email", F.try_to_timestamp("at").alias("at"))
    js = spark.read.json(str(work / "landing" / "r.jsonl")).select(F.col("id").cast("int"), "email")
    rows = csv.select("id", "email").unionByName(js).withColumn("h", F.xxhash64("email"))
    table = str(work / "wh" / "t")
    rows.write.format("delta").partitionBy("id").save(table)
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, table)
    change = spark.createDataFrame(pd.DataFrame({"id": [1, 4], "email": ["a2@x.com", "d@w.com"], "h": [1, 2]}))
    target.alias("t").merge(change.alias("s"), "t.id = s.id").whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    target.update("id = 4", {"email": "'e@w.com'"})
    target.delete("id = 2")
    back = spark.read.format("delta").load(table)
    ranked = back.withColumn("r", F.row_number().over(Window.partitionBy("h").orderBy("id", "email")))
    joined = ranked.join(F.broadcast(change.select("id")), "id", "left").join(back.select("id", "h"), ["id", "h"])

    def tag(batches):
        for b in batches:
            yield b.assign(email=b["email"].str.upper())

    out = joined.mapInPandas(tag, joined.schema).groupBy("id").agg(F.count("*").alias("n"), F.max("email"))
    out.localCheckpoint(eager=True).toArrow()
    spark.sql(f"DESCRIBE HISTORY delta.`{table}`").collect()
    jvm, gateway = spark.sparkContext._jvm, spark.sparkContext._gateway
    spark.stop()
    # The JVM writes the archive as it exits: end it now and wait, rather than leave it to exit
    # (and write) after this process is gone.
    try:
        jvm.java.lang.System.exit(0)
    except Exception:  # noqa: BLE001 - the call never returns: the JVM is gone
        pass
    gateway.proc.wait(timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--workload", help=argparse.SUPPRESS)  # the child process's work folder
    args = parser.parse_args(argv)
    if args.workload:
        workload(Path(args.workload))
        return 0
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    if any(c.isspace() for c in str(out)):  # Spark splits its JVM options on whitespace
        print(f"jvm_archive: {out} has a space in its path: the tests run without an archive", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="jvm-archive-") as work:
        log = Path(work) / "workload.log"
        with open(log, "w") as output:
            # A session of its own: on a timeout the JVM the workload started goes too.
            proc = subprocess.Popen(
                [sys.executable, __file__, "--out", str(out), "--workload", str(Path(work) / "run")],
                env=dict(os.environ, JVM_ARCHIVE_OUT=str(partial)), stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                code = proc.wait(timeout=TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = f"no exit after {TIMEOUT_SECONDS} s"
        tail = log.read_text(errors="replace")[-1500:]
    if code != 0 or not partial.is_file():
        # Only a speed-up: the tests run without it (and say so here), they do not fail for it.
        print(f"jvm_archive: no archive written ({code}): {tail}", file=sys.stderr)
        partial.unlink(missing_ok=True)
        return 0
    shutil.move(str(partial), str(out))
    print(f"jvm_archive: {out} ({out.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
