"""Table catalog guarantees and the version check."""

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from campaign_pipeline.catalog import CATALOG
from campaign_pipeline.errors import SchemaError, VersionError
from campaign_pipeline.session import check_versions

ROOT = Path(__file__).resolve().parents[2]


def _quarantine_row(spark, campaign_id="c1", line=1):
    return spark.createDataFrame(
        [
            (
                campaign_id,
                "ingest",
                "f.csv",
                line,
                "raw",
                "reason",
                "run-1",
                None,
                dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
            )
        ],
        CATALOG["quarantine"].schema,
    )


def test_writing_data_with_a_missing_or_extra_column_names_the_column(spark, warehouse):
    with pytest.raises(SchemaError) as missing:
        warehouse.append("quarantine", _quarantine_row(spark).drop("reason"))
    assert "column 'reason' (string) is missing" in str(missing.value)
    with pytest.raises(SchemaError) as extra:
        warehouse.append("quarantine", _quarantine_row(spark).withColumn("surprise", F.lit(1)))
    assert "column 'surprise' is not in the table catalog" in str(extra.value)
    assert not warehouse.exists("quarantine") or warehouse.read("quarantine").count() == 0


def test_an_existing_table_that_drifted_from_the_catalog_is_refused(spark, warehouse):
    drifted = _quarantine_row(spark).withColumn("line", F.col("line").cast("string"))
    drifted.write.format("delta").save(warehouse.path("quarantine"))
    with pytest.raises(SchemaError) as info:
        warehouse.read("quarantine")
    assert "column 'line' is string, expected bigint" in str(info.value)


def test_replace_touches_one_campaign_and_merge_never_doubles(spark, warehouse):
    warehouse.append("quarantine", _quarantine_row(spark, "c1").unionByName(_quarantine_row(spark, "c2")))
    warehouse.replace("quarantine", _quarantine_row(spark, "c1", line=7), "c1")
    assert sorted((r["campaign_id"], r["line"]) for r in warehouse.read("quarantine").collect()) == [
        ("c1", 7),
        ("c2", 1),
    ]
    warehouse.merge("quarantine", _quarantine_row(spark, "c2"))
    warehouse.merge("quarantine", _quarantine_row(spark, "c2"))
    assert warehouse.read("quarantine", "c2").count() == 1


def test_reading_a_table_never_written_gives_an_empty_frame_and_creates_nothing(warehouse):
    assert warehouse.read("registrants", "c1").count() == 0
    assert not warehouse.exists("registrants")


def test_mismatched_pyspark_and_delta_versions_fail_naming_both():
    check_versions("4.0.2", "4.0.1")
    with pytest.raises(VersionError) as info:
        check_versions("4.0.2", "3.3.2")
    assert "Delta Lake 3.3.2 does not work with Spark/pyspark 4.0.2" in str(info.value)
    with pytest.raises(VersionError):
        check_versions("4.0.2", None)


def _assignment(spark, code_type):
    from campaign_pipeline.frames import catalog_rows

    row = {"campaign_id": "c1", "market_id": "NYC-01", "global_user_id": "F1", "code": "C-1",
           "code_type": code_type, "assigned_at": dt.datetime(2027, 1, 1, tzinfo=dt.UTC), "run_id": "r"}  # fmt: skip
    return catalog_rows(spark, "code_assignments", [row])


def test_a_table_is_created_with_its_check_constraints_and_an_older_table_is_given_them(spark, warehouse, tmp_path):
    from campaign_pipeline.warehouse import Warehouse

    warehouse.append("code_assignments", _assignment(spark, "pool"))
    with pytest.raises(Exception, match="code_type_known"):  # Delta's CHECK constraint violation
        warehouse.append("code_assignments", _assignment(spark, "bogus"))
    assert warehouse.read("code_assignments").count() == 1
    # a table created without the constraints (as an older release did) is given them when opened
    older = Warehouse(spark, str(tmp_path / "older"))
    _assignment(spark, "pool").limit(0).write.format("delta").save(older.path("code_assignments"))
    older.ensure("code_assignments")
    table = f"delta.`{older.path('code_assignments')}`"
    properties = {r["key"] for r in spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}
    assert {"delta.constraints.code_type_known", "delta.constraints.code_unless_tm"} <= properties
    assert "delta.dataSkippingStatsColumns" in properties
    with pytest.raises(Exception, match="code_type_known"):
        older.append("code_assignments", _assignment(spark, "bogus"))


def test_local_sessions_use_the_forkless_file_system_and_it_behaves_as_hadoops(spark, tmp_path):
    """Local sessions read and write through campaign_pipeline.hadoop.ForklessLocalFileSystem (no
    chmod/readlink process per file): same permissions, statuses, renames and links as Hadoop's own."""
    import os

    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop_fs = jvm.org.apache.hadoop.fs
    ours = hadoop_fs.FileSystem.get(jvm.java.net.URI("file:///"), conf)
    assert ours.getClass().getName() == "campaign_pipeline.hadoop.ForklessLocalFileSystem"
    stock = hadoop_fs.LocalFileSystem()
    stock.initialize(jvm.java.net.URI("file:///"), conf)
    context = hadoop_fs.FileContext.getFileContext(jvm.java.net.URI("file:///"), conf)
    assert context.getDefaultFileSystem().getClass().getName() == "campaign_pipeline.hadoop.ForklessLocalFs"

    def mode(path) -> int:
        return os.stat(path).st_mode & 0o777

    for name, fs in (("ours", ours), ("stock", stock)):
        base = tmp_path / name
        assert fs.mkdirs(hadoop_fs.Path(str(base / "a" / "b")))
        out = fs.create(hadoop_fs.Path(str(base / "a" / "b" / "part-0")))
        out.write(b"x" * 10)
        out.close()
        private = hadoop_fs.Path(str(base / "secret"))
        fs.create(private).close()
        fs.setPermission(private, hadoop_fs.permission.FsPermission(0o640))
    for rel in ("a", "a/b", "a/b/part-0", "secret"):
        assert mode(tmp_path / "ours" / rel) == mode(tmp_path / "stock" / rel), rel
    assert mode(tmp_path / "ours" / "secret") == 0o640

    # FileContext renames (Delta's commits) and link statuses
    src, dst = (
        hadoop_fs.Path(str(tmp_path / "ours" / "a" / "b" / "part-0")),
        hadoop_fs.Path(str(tmp_path / "ours" / "moved")),
    )
    rename = getattr(hadoop_fs, "Options$Rename")
    options = spark.sparkContext._gateway.new_array(rename, 1)
    options[0] = rename.NONE
    context.rename(src, dst, options)
    assert (tmp_path / "ours" / "moved").read_bytes() == b"x" * 10 and not (
        tmp_path / "ours" / "a" / "b" / "part-0"
    ).exists()
    status = ours.getFileLinkStatus(dst)
    assert not status.isSymlink() and status.getLen() == 10
    os.symlink(tmp_path / "ours" / "moved", tmp_path / "ours" / "link")
    link = ours.getFileLinkStatus(hadoop_fs.Path(str(tmp_path / "ours" / "link")))
    assert link.isSymlink() and link.getSymlink().toUri().getPath() == str(tmp_path / "ours" / "moved")
    with pytest.raises(Exception, match="FileNotFoundException"):
        ours.getFileLinkStatus(hadoop_fs.Path(str(tmp_path / "ours" / "nothing")))


def test_the_forkless_file_system_jar_joins_a_driver_class_path_the_environment_sets(test_env):
    from campaign_pipeline.jars import location
    from campaign_pipeline.session import LOCALFS_JAR, session_conf

    settings = test_env.spark.model_copy(
        update={"conf": {**test_env.spark.conf, "spark.driver.extraClassPath": "/opt/x.jar"}}
    )
    conf = session_conf(test_env.model_copy(update={"spark": settings}))
    assert conf["spark.driver.extraClassPath"] == f"{location() / LOCALFS_JAR}:/opt/x.jar"  # shipped in the package
    assert conf["spark.hadoop.fs.file.impl"] == "campaign_pipeline.hadoop.ForklessLocalFileSystem"
    assert session_conf(test_env)["spark.driver.extraClassPath"] == str(location() / LOCALFS_JAR)
    cluster = session_conf(test_env.model_copy(update={"mode": "cluster", "spark": settings}))
    assert "spark.hadoop.fs.file.impl" not in cluster and cluster["spark.driver.extraClassPath"] == "/opt/x.jar"


def test_without_a_jars_folder_the_session_asks_spark_for_the_pinned_maven_coordinates(test_env, tmp_path, monkeypatch):
    from campaign_pipeline import versions
    from campaign_pipeline.jars import UDF_JAR, location
    from campaign_pipeline.session import session_conf

    monkeypatch.setenv("CAMPAIGN_PIPELINE_JARS_DIR", str(tmp_path / "empty"))
    conf = session_conf(test_env)
    assert conf["spark.jars.packages"].split(",") == [c for _, c in versions.MAVEN_JARS]
    assert f"io.delta:delta-spark_{versions.SCALA}:{versions.DELTA}" in conf["spark.jars.packages"]
    assert str(location() / UDF_JAR) in conf["spark.jars"].split(",")  # our own jars come from the package
    # a folder holding some of them: only the others are fetched, and an older build of our jar is not used
    (tmp_path / "some").mkdir()
    for name in (f"delta-spark_{versions.SCALA}-{versions.DELTA}.jar", f"delta-storage-{versions.DELTA}.jar", UDF_JAR):
        (tmp_path / "some" / name).write_bytes(b"")
    monkeypatch.setenv("CAMPAIGN_PIPELINE_JARS_DIR", str(tmp_path / "some"))
    conf = session_conf(test_env)
    assert conf["spark.jars.packages"].split(",") == [c for _, c in versions.MAVEN_JARS[2:]]
    jars = conf["spark.jars"].split(",")
    assert str(tmp_path / "some" / UDF_JAR) not in jars and str(location() / UDF_JAR) in jars


def test_the_makefile_and_maven_build_with_the_versions_of_versions_py():
    import re
    import subprocess

    from campaign_pipeline import versions

    dry = subprocess.run(["make", "-n", "-B", "jvm"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f"-Dspark.version={versions.SPARK} -Dscala.binary={versions.SCALA}" in dry
    assert f"-Dhadoop.version={versions.HADOOP} -Dlibphonenumber.version={versions.LIBPHONENUMBER}" in dry
    makefile = (ROOT / "Makefile").read_text()
    assert not re.search(r"^(SPARK_VERSION|DELTA_VERSION|LIBPHONENUMBER)\s*\?=\s*\d", makefile, re.M)
    fetch = subprocess.run(["make", "-n", "-B", f"jars/delta-spark_{versions.SCALA}-{versions.DELTA}.jar"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"-Dartifact=io.delta:delta-spark_{versions.SCALA}:{versions.DELTA} " in fetch


def test_files_keep_statistics_of_the_columns_rows_are_picked_by_and_write_ids_without_a_dictionary(spark, warehouse):
    """Delta's per-file min/max statistics cover the fan id and the merge keys (what a one-fan lookup,
    Z-ordering and merges use), not every column; Parquet writes the all-distinct ids plainly and
    keeps its dictionary for repetitive columns."""
    import json
    from pathlib import Path
    from urllib.parse import unquote

    import pyarrow.parquet as pq

    # one fan in 50 markets: its id repeats, which a dictionary would encode, but ids are written plainly
    rows = [{**_assignment(spark, "pool").first().asDict(), "market_id": f"M{i}", "code": f"C-{i}"} for i in range(50)]
    from campaign_pipeline.frames import catalog_rows

    warehouse.append("code_assignments", catalog_rows(spark, "code_assignments", rows))
    table = Path(warehouse.path("code_assignments"))
    adds = [
        json.loads(line)["add"]
        for log in sorted((table / "_delta_log").glob("*.json"))
        for line in log.read_text().splitlines()
        if '"add"' in line
    ]
    assert adds
    for add in adds:
        stats = json.loads(add["stats"])
        assert stats["numRecords"] > 0 and set(stats["minValues"]) == {"global_user_id", "market_id"}, stats
        assert stats["minValues"]["global_user_id"] == stats["maxValues"]["global_user_id"] == "F1"
        chunks = pq.ParquetFile(table / unquote(add["path"])).metadata.row_group(0)
        encodings = {chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)}
        assert not any("DICTIONARY" in e for e in encodings["global_user_id"] + encodings["code"]), encodings
        assert any("DICTIONARY" in e for e in encodings["code_type"]), encodings


def test_local_sessions_run_the_parallel_collector_unless_the_environment_chooses_one(test_env):
    from campaign_pipeline.session import LOCAL_JVM_OPTIONS, session_conf

    def options(java_options: str | None, mode: str = "local") -> str | None:
        conf = {k: v for k, v in test_env.spark.conf.items() if k != "spark.driver.extraJavaOptions"}
        if java_options is not None:
            conf["spark.driver.extraJavaOptions"] = java_options
        env = test_env.model_copy(update={"mode": mode, "spark": test_env.spark.model_copy(update={"conf": conf})})
        return session_conf(env).get("spark.driver.extraJavaOptions")

    assert LOCAL_JVM_OPTIONS == "-XX:+UseParallelGC"
    assert options(None) == LOCAL_JVM_OPTIONS
    assert options("-Dfoo=1 -XX:MaxMetaspaceSize=512m") == f"{LOCAL_JVM_OPTIONS} -Dfoo=1 -XX:MaxMetaspaceSize=512m"
    assert options("-XX:+UseSerialGC -Dfoo=1") == "-XX:+UseSerialGC -Dfoo=1"  # theirs, alone
    assert options("-XX:+UseG1GC") == "-XX:+UseG1GC"
    assert options(None, mode="cluster") is None  # a cluster's JVMs are the cluster's business
    assert options("-Dfoo=1", mode="cluster") == "-Dfoo=1"


def test_a_query_s_generated_code_is_compiled_once_per_session_even_after_hundreds_of_others(spark):
    """Sessions keep the classes Spark generates for 4,096 distinct pieces of code (Spark's default
    keeps 100: a stage's later queries pushed its earlier ones out, and their code was compiled
    again, a new class for the JIT each time)."""
    jvm = spark.sparkContext._jvm
    compiled = jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
    previous = {k: spark.conf.get(k) for k in ("spark.sql.codegen.wholeStage", "spark.sql.codegen.factoryMode")}
    spark.conf.set("spark.sql.codegen.wholeStage", "true")  # the tests' session interprets otherwise
    spark.conf.set("spark.sql.codegen.factoryMode", "FALLBACK")

    def plan(i: int) -> None:  # planning to RDDs compiles the code (no job): a constant of its own each
        spark.range(2).selectExpr(f"id * {i + 7} + {i} AS x")._jdf.queryExecution().toRdd()

    try:
        before = compiled.getCount()
        for i in range(150):
            plan(i)
        first_pass = compiled.getCount() - before
        again = compiled.getCount()
        for i in range(10):
            plan(i)
        assert first_pass >= 150 and compiled.getCount() == again
    finally:
        for key, value in previous.items():
            spark.conf.set(key, value)


def test_great_expectations_imports_on_its_own_thread_while_the_command_line_starts_spark():
    """The checks' ~2 s import overlaps the JVM's start: the command line starts it in the background
    before the session, and the checks wait for it rather than importing it a second time."""
    import subprocess
    import sys

    probe = """
import sys, threading
from campaign_pipeline.quality import expectations
assert "great_expectations" not in sys.modules
expectations.import_in_background()
importing = [t for t in threading.enumerate() if t.name == "great-expectations-import"]
expectations.import_in_background()  # once per process
assert len([t for t in threading.enumerate() if t.name == "great-expectations-import"]) <= 1
gx = expectations.great_expectations()
assert importing and not importing[0].is_alive() and gx is sys.modules["great_expectations"]
print("ok", hasattr(gx, "expectations"))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["ok", "True"], out.stderr[-2000:]
