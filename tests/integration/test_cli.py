"""The command line through a subprocess: exit codes and one clear message, never a bare stack trace."""

from helpers import EXAMPLE_CAMPAIGN as CAMPAIGN
from helpers import cli, run_campaign


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


def test_maintain_refuses_a_retention_below_delta_safety_check_before_spark_starts(tmp_path):
    proc = cli("maintain", "--campaign", str(CAMPAIGN), "--retain-hours", "24", "--warehouse", str(tmp_path / "wh"),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --retain-hours 24: at least 168 (7 days, Delta's retention safety check)"
    assert not (tmp_path / "wh").exists()
