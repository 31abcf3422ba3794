"""One SparkSession factory for local runs, notebooks, tests and spark-submit.

Local mode: `local[*]`, Delta extension and catalog, shuffle partitions sized to the cores, AQE on,
UTC session time zone. The package's own jars (`campaign_pipeline.jars`) ship inside it; Delta,
spark-avro and libphonenumber come from the `jars/` folder `make install` fills (or
`$CAMPAIGN_PIPELINE_JARS_DIR`) when it holds them, else Spark fetches them by their Maven
coordinates (`spark.jars.packages`, pinned in `versions.py`) on the first start.
Cluster mode (spark-submit on EMR or a standalone master): takes what spark-submit gives and adds
only the Delta confs; Delta is bundled on EMR so nothing is downloaded.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from importlib import metadata
from pathlib import Path

from campaign_pipeline import jars as own_jars
from campaign_pipeline import versions
from campaign_pipeline.catalog import UNIQUE_VALUED
from campaign_pipeline.config import Environment
from campaign_pipeline.errors import VersionError

DELTA_CONFS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Parquet row groups of 8 MiB (not 128): with the fan-id clustered tables (see catalog.py), a
    # one-fan lookup decodes one small row group instead of a million rows (explain: 1.2 s → 0.25 s
    # per table at 2M registrants). OPTIMIZE honours it too. Scans are as fast at this size.
    "spark.hadoop.parquet.block.size": str(8 * 1024 * 1024),
    # No dictionary for the columns whose values are all distinct (see tables.UNIQUE_VALUED).
    **{f"spark.hadoop.parquet.enable.dictionary#{column}": "false" for column in UNIQUE_VALUED},
    # PySpark records the Python call site of every Column function for DataFrame error messages:
    # about six extra Python→JVM round trips per `F.col`, `withColumn`, `where`… (a third of all
    # round trips of a stage on small data). Stages build their plans from hundreds of such calls,
    # and our own errors name the file, row or key. An environment's spark.conf can turn it on.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
    # Stages cut lineage with reliable checkpoints (`lineage: checkpoint`), written as serialized
    # rows: uncompressed, 2M registrations take 2.2 GB, compressed (lz4) 0.8 GB, written as fast.
    "spark.checkpoint.compress": "true",
    # Spark keeps the classes it generates for a query's code in a cache of 100 entries by default.
    # A 200k demo generates ~1,350 distinct pieces of code (each stage's plans, checks and Delta's
    # own queries) and, with 100 entries, compiled ~2,300: the same code over again once the cache
    # had moved on, each time a new class that the JIT compiles again when it runs hot.
    "spark.sql.codegen.cache.maxEntries": "4096",
    # No top-k per group before the shuffle for `row_number() … = 1` filters. Spark would sort every
    # input partition first to keep each group's best rows, but our groups (a fan's registrations,
    # his activity rows, an address's messages) are mostly single rows: that sort keeps them all and
    # the sort after the shuffle follows anyway. Allocation turns it on for its own rounds, where a
    # market keeps a few hundred of a million offers (`selection.allocate`).
    "spark.sql.optimizer.windowGroupLimitThreshold": "-1",
}

# Our local file system below (jvm/, built by `make install`, shipped in the package).
LOCALFS_JAR = own_jars.LOCALFS_JAR

# Local mode: Hadoop's local file system, minus a `chmod` process for every file and folder it
# creates and a `readlink` process for both sides of every rename (pyspark ships no native Hadoop
# library). A tiny campaign's stages forked about 1,250 processes of ~5 ms each; a Delta commit
# alone forks several. Symbolic links and hosts with the native library keep Hadoop's own path.
FORKLESS_LOCAL_FS = {
    "spark.hadoop.fs.file.impl": "campaign_pipeline.hadoop.ForklessLocalFileSystem",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "campaign_pipeline.hadoop.ForklessLocalFs",
}

# Local mode: the JVM Spark starts runs the parallel (throughput) collector. A local session is
# one JVM for the driver and every task on a few cores; G1, the default, started a concurrent
# marking cycle for nearly every page Spark's memory manager allocates (each one a "humongous"
# object to G1): ~60 cycles and ~20 s of a core in a 200k demo on 2 cores. An environment that
# sets `spark.driver.extraJavaOptions` keeps its options, and its collector if it names one.
LOCAL_JVM_OPTIONS = "-XX:+UseParallelGC"

# Delta Lake releases and the Spark line each one is built for.
DELTA_FOR_SPARK = {"4.0": "4.0", "4.1": "4.1", "3.3": "3.5", "3.2": "3.5"}


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def check_versions(spark_version: str, delta_version: str | None) -> None:
    """Fail with both versions named when pyspark and Delta Lake cannot work together."""
    if delta_version is None:
        raise VersionError(
            f"Delta Lake is not available to Spark {spark_version}: run `make install` (local), let "
            "Spark fetch it (remove an empty $CAMPAIGN_PIPELINE_JARS_DIR) or use an EMR release that bundles Delta"
        )
    wanted = DELTA_FOR_SPARK.get(_minor(delta_version))
    if wanted != _minor(spark_version):
        raise VersionError(
            f"Delta Lake {delta_version} does not work with Spark/pyspark {spark_version}: "
            f"Delta {_minor(delta_version)}.x needs Spark {wanted or 'unknown'}.x; "
            "install matching versions (this project pins pyspark 4.0.x with delta-spark 4.0.x)"
        )


def jars_dir() -> Path:
    """Where Delta, spark-avro and libphonenumber jars are looked for: `$CAMPAIGN_PIPELINE_JARS_DIR`,
    else the source checkout's `jars/` (absent for an installed wheel: see `maven_packages`)."""
    explicit = os.environ.get("CAMPAIGN_PIPELINE_JARS_DIR")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2] / "jars"


def local_jars() -> list[str]:
    """The jars for `spark.jars`: the package's own, then every jar of `jars_dir()` (a jar of the
    same name as one of ours is an older build of it, and left out)."""
    own = sorted(str(p) for p in own_jars.location().glob("*.jar"))
    names = {Path(p).name for p in own}
    folder = [p for p in sorted(glob.glob(str(jars_dir() / "*.jar"))) if Path(p).name not in names]
    return own + folder


def maven_packages(jars: list[str]) -> list[str]:
    """Maven coordinates (`versions.MAVEN_JARS`) of what a local session needs and `jars` lacks."""
    names = [Path(j).name for j in jars]
    return [coordinate for prefix, coordinate in versions.MAVEN_JARS if not any(n.startswith(prefix) for n in names)]


def _jar_delta_version(jars: list[str]) -> str | None:
    for jar in jars:
        name = Path(jar).name
        if name.startswith("delta-spark_"):
            return name.rsplit("-", 1)[-1].removesuffix(".jar")
    return None


def build_session(env: Environment, app_name: str = "campaign-pipeline", extra_conf: dict | None = None):
    """Create (or return the active) SparkSession configured for `env`."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    for key, value in session_conf(env, extra_conf).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    check_versions(spark.version, _jvm_delta_version(spark))
    return spark


def session_conf(env: Environment, extra_conf: dict | None = None) -> dict[str, str]:
    """The Spark configuration `build_session` starts `env`'s session with (`extra_conf` wins)."""
    import pyspark

    conf: dict[str, str] = {}
    localfs: list[str] = []
    if env.mode == "local":
        jars = local_jars()
        packages = maven_packages(jars)
        fetched_delta = versions.DELTA if any(c.startswith("io.delta:delta-spark_") for c in packages) else None
        check_versions(pyspark.__version__, _jar_delta_version(jars) or fetched_delta or _pip_delta_version())
        cores = os.cpu_count() or 2
        # Bind to loopback: a laptop's other interfaces are of no use to local Spark.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers run the interpreter that runs the driver (the venv with pandas, phonenumbers).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if "PYSPARK_GATEWAY_PORT" not in os.environ:
            # Not under spark-submit: we choose the master. Under spark-submit, its --master wins.
            conf["spark.master"] = env.spark.master or "local[*]"
        conf.update(
            {
                "spark.jars": ",".join(jars),
                # Spark resolves these from Maven Central (a local ~/.m2 first) into its Ivy cache.
                **({"spark.jars.packages": ",".join(packages)} if packages else {}),
                "spark.sql.shuffle.partitions": str(max(2, cores * 2)),
                "spark.sql.adaptive.enabled": "true",
                "spark.sql.session.timeZone": "UTC",
                "spark.sql.warehouse.dir": str(Path(env.warehouse_root).resolve() / "_spark_catalog")
                if "://" not in env.warehouse_root
                else env.warehouse_root.rstrip("/") + "/_spark_catalog",
                # Spark's live stage bar on a terminal; off in logs and files.
                "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),
                "spark.driver.memory": os.environ.get("CAMPAIGN_PIPELINE_DRIVER_MEMORY", "4g"),
                "spark.databricks.delta.schema.autoMerge.enabled": "false",
                # Delta replays its log with 50 tasks by default: far too many for one machine.
                "spark.databricks.delta.snapshotPartitions": str(max(2, cores)),
            }
        )
        conf["spark.driver.extraJavaOptions"] = LOCAL_JVM_OPTIONS
        localfs = [jar for jar in jars if Path(jar).name == LOCALFS_JAR]
        conf.update(FORKLESS_LOCAL_FS if localfs else {})
    else:
        conf["spark.sql.session.timeZone"] = "UTC"
    conf.update(DELTA_CONFS)
    conf.update({k: str(v) for k, v in env.spark.conf.items()})
    own_options = env.spark.conf.get("spark.driver.extraJavaOptions")
    if env.mode == "local" and own_options is not None and not re.search(r"-XX:[+-]Use\w+GC\b", str(own_options)):
        # The environment's own JVM options, with our collector unless they choose one themselves.
        conf["spark.driver.extraJavaOptions"] = f"{LOCAL_JVM_OPTIONS} {own_options}".strip()
    if localfs:
        # spark-submit reads files through the file system before it loads `spark.jars`, so the
        # jar goes on the driver's own class path too, beside any the environment sets.
        conf["spark.driver.extraClassPath"] = os.pathsep.join(
            [localfs[0], *filter(None, [conf.get("spark.driver.extraClassPath")])]
        )
    conf.update({k: str(v) for k, v in (extra_conf or {}).items()})
    return conf


def _pip_delta_version() -> str | None:
    try:
        return metadata.version("delta-spark")
    except metadata.PackageNotFoundError:
        return None


def _jvm_delta_version(spark) -> str | None:
    """The Delta jar's own version, read from its manifest inside the JVM."""
    try:
        # Spark's class loader sees jars added with spark.jars; the system one does not.
        cls = spark._jvm.org.apache.spark.util.Utils.classForName("io.delta.tables.DeltaTable", True, False)
    except Exception:  # noqa: BLE001 - py4j raises a generic error when the class is missing
        return None
    return cls.getPackage().getImplementationVersion() or _pip_delta_version()
