"""The command line through a subprocess: exit codes and one clear message, never a bare stack trace."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import TEST_JVM_OPTIONS
from pyspark.sql import functions as F

from campaign_pipeline.runner import stage_runs
from campaign_pipeline.tables import Warehouse

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"


def env_file(tmp_path: Path) -> Path:
    """A local environment sized for tiny test data (2 cores, no code generation)."""
    path = tmp_path / "env-test.yaml"
    path.write_text(
        "name: test\nmode: local\nlineage: local_checkpoint\nwarehouse_root: ./warehouse\nlanding_root: ./landing\n"
        "spark:\n  master: local[2]\n  conf:\n    spark.sql.shuffle.partitions: 2\n    spark.ui.enabled: false\n"
        "    spark.databricks.delta.snapshotPartitions: 2\n    spark.sql.codegen.wholeStage: false\n"
        "    spark.sql.codegen.factoryMode: NO_CODEGEN\n"
        f"    spark.driver.extraJavaOptions: {TEST_JVM_OPTIONS}\n"
    )
    return path


def cli(*args, cwd):
    env = dict(os.environ, CAMPAIGN_PIPELINE_JARS_DIR=str(ROOT / "jars"), CAMPAIGN_PIPELINE_DRIVER_MEMORY="1g")
    return subprocess.run(
        [sys.executable, "-m", "campaign_pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_campaign(tmp_path: Path, landing: Path, *extra: str):
    """`campaign-pipeline run` on the example campaign with a test environment and given landing root."""
    return cli(
        "run", "--campaign", str(CAMPAIGN), "--env", str(env_file(tmp_path)),
        "--landing", str(landing), "--warehouse", str(tmp_path / "wh"), *extra, cwd=tmp_path,
    )  # fmt: skip


def test_bad_config_exits_2_with_file_key_and_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAMPAIGN.read_text().replace("capacity: 900,", "capacity: -5,"))
    proc = cli("run", "--campaign", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: markets[2].capacity: must be > 0, got -5"
    assert not (tmp_path / "warehouse").exists()


def test_missing_landing_folder_exits_3_with_a_clear_message_before_spark_starts(tmp_path):
    proc = run_campaign(tmp_path, tmp_path / "nope")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: landing folder not found: neither {tmp_path / 'nope'}/spring-tour-2027 nor {tmp_path / 'nope'} "
        "is a folder (campaign spring-tour-2027); pass --landing DIR or set landing_root in the environment config"
    ]
    assert not (tmp_path / "wh").exists()  # no JVM, no Delta table: the check runs before Spark


def test_run_ingests_and_screens_hand_written_landing_files_and_prints_progress(spark, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(ROOT / "tests" / "data" / "landing", landing)
    # the later stages run on these files in test_hand_written_campaign; here the command line is what counts
    proc = run_campaign(tmp_path, landing, "--stages", "ingest,screen")
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[ingest]")]
    assert len(progress) == 1 and "rows read 36" in progress[0]
    assert "quarantined 1 × wrong field count: expected 17" in proc.stdout
    assert any(line.startswith("[screen] registrants 6 · eligible 3") for line in proc.stdout.splitlines())
    wh = Warehouse(spark, str(tmp_path / "wh"))
    assert wh.read("registrations", "spring-tour-2027").count() == 6
    assert wh.read("registrants", "spring-tour-2027").count() == 6
    succeeded = stage_runs(wh, "spring-tour-2027").where(F.col("status") == "succeeded")
    assert sorted(r["stage"] for r in succeeded.collect()) == ["ingest", "screen"]

    story = cli(
        "explain", "--campaign", str(CAMPAIGN), "--env", str(env_file(tmp_path)),
        "--warehouse", str(tmp_path / "wh"), "--fan", "F0002", cwd=tmp_path,
    )  # fmt: skip
    assert story.returncode == 0, story.stderr
    assert "screening: INELIGIBLE · tags DUPLICATE_ACCOUNT" in story.stdout
    assert "verdict: not selected yet" in story.stdout and "a***@gmail.com" in story.stdout
    assert "annlee" not in story.stdout and "5550101" not in story.stdout.replace("******0101", "")


def test_maintain_refuses_a_retention_below_delta_safety_check_before_spark_starts(tmp_path):
    proc = cli("maintain", "--campaign", str(CAMPAIGN), "--retain-hours", "24", "--warehouse", str(tmp_path / "wh"),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --retain-hours 24: at least 168 (7 days, Delta's retention safety check)"
    assert not (tmp_path / "wh").exists()
