"""One SparkSession for the whole test run: local[2], 2 shuffle partitions, UI off, Delta on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import TEST_SPARK_CONF, make_campaign

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CAMPAIGN_PIPELINE_JARS_DIR", str(ROOT / "jars"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

# The files that cost the most (seconds of a 2-worker `make test`, 2026-12-03), heaviest first.
# pytest-xdist hands each worker whole files in collection order (`make test` turns off its own
# reordering, by number of tests): started first, these run side by side and the many light files
# fill in at the end, so both workers finish together (the last file started had been the
# standalone-cluster test, 95 s, and one worker idled for 65 s).
HEAVY_FIRST = [
    "test_wheel.py",  # a fresh venv from the wheel and the demo in it: mostly a subprocess's time
    "test_notify_concurrency.py",  # ~250 s: overlapping notify processes, a re-plan while sending
    "test_hand_written_campaign.py",  # ~250 s: the CLI's ingest + screen, then every later stage
    "test_synthetic_campaign.py",  # ~160 s
    "test_codes_waves_stages.py",  # ~125 s
    "test_distributed.py",  # ~95 s: a standalone master, worker, driver and executor
    "test_notify.py",  # ~85 s
    "test_hostile_input.py",  # ~80 s
    "test_screening_rules.py",  # ~75 s
    "test_selection.py",  # ~65 s
    "test_runs_over_time.py",  # ~55 s
    "test_ingest_landing.py",  # ~50 s
    "test_maintain.py",  # ~130 s: an archive killed after each table, rows appended while it moves
]


def pytest_collection_modifyitems(config, items):
    """The heaviest files first (`HEAVY_FIRST`), then the others in their collected order."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FIRST)))


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
            conf={**TEST_SPARK_CONF, "spark.driver.memory": "2g"},
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
    from campaign_pipeline.warehouse import Warehouse

    return Warehouse(spark, str(tmp_path / "warehouse"))


@pytest.fixture
def campaign():
    return make_campaign()
