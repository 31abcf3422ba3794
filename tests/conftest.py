"""One SparkSession for the whole test run: local[2], 2 shuffle partitions, UI off, Delta on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import TEST_JVM_OPTIONS, make_campaign

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CAMPAIGN_PIPELINE_JARS_DIR", str(ROOT / "jars"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def test_env(tmp_path_factory):
    from campaign_pipeline.config import Environment, SparkSettings

    base = tmp_path_factory.mktemp("env")
    return Environment(
        name="test",
        mode="local",
        warehouse_root=str(base / "warehouse"),
        landing_root=str(base / "landing"),
        lineage="local_checkpoint",  # tiny data: the cheapest cut
        spark=SparkSettings(
            master="local[2]",
            conf={
                "spark.sql.shuffle.partitions": 2,
                "spark.default.parallelism": 2,
                "spark.ui.enabled": False,
                "spark.databricks.delta.snapshotPartitions": 2,
                # Tiny test data: interpreted expressions beat compiling code for every query.
                "spark.sql.codegen.wholeStage": False,
                "spark.sql.codegen.factoryMode": "NO_CODEGEN",
                "spark.driver.memory": "2g",
                # Tiny test queries: adaptive re-planning adds a Spark job per shuffle and wins nothing.
                "spark.sql.adaptive.enabled": False,
                # Short-lived test JVMs: the C1 compiler only and a serial GC take about a third less
                # CPU than C2's background compiling, and two test workers share two cores.
                "spark.driver.extraJavaOptions": TEST_JVM_OPTIONS,
            },
        ),
    )


@pytest.fixture(scope="session")
def spark(test_env):
    from campaign_pipeline.session import build_session

    session = build_session(test_env, app_name="campaign-pipeline-tests")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def warehouse(spark, tmp_path):
    from campaign_pipeline.tables import Warehouse

    return Warehouse(spark, str(tmp_path / "warehouse"))


@pytest.fixture
def campaign():
    return make_campaign()
