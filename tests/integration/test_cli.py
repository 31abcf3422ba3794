"""The command line through a subprocess: exit codes and one clear message, never a bare stack trace."""

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import EXAMPLE_CAMPAIGN as CAMPAIGN
from helpers import ROOT, cli, env_file, run_campaign

MARKETS = ("NYC-01", "LAX-02", "CHI-03", "TOR-04", "MTL-05")


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


# ---------------------------------------------------------------- global flags and exit codes


def test_debug_env_and_json_are_taken_before_or_after_the_verb(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAMPAIGN.read_text().replace("capacity: 900,", "capacity: -5,"))
    for args in (["run", "--campaign", str(bad), "--debug"], ["--debug", "run", "--campaign", str(bad)]):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 1 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr, args
    env = env_file(tmp_path)
    before = cli("--env", str(env), "--json", "validate", "--campaign", str(CAMPAIGN), cwd=tmp_path)
    after = cli("validate", "--campaign", str(CAMPAIGN), "--env", str(env), "--json", cwd=tmp_path)
    assert json.loads(before.stdout)["environment_file"] == json.loads(after.stdout)["environment_file"] == str(env)


def test_a_spark_job_entry_point_takes_debug_after_its_arguments(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAMPAIGN.read_text().replace("capacity: 900,", "capacity: -5,"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "pipeline.py"), "--campaign", str(bad), "--debug"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "markets[2].capacity" in proc.stderr


def test_usage_errors_exit_64_apart_from_bad_config_and_json_where_it_has_no_answer(tmp_path):
    assert cli("frobnicate", cwd=tmp_path).returncode == 64
    missing = cli("validate", cwd=tmp_path)
    assert missing.returncode == 64 and "--campaign" in missing.stderr
    no_json = cli("maintain", "--campaign", str(CAMPAIGN), "--json", cwd=tmp_path)
    assert no_json.returncode == 64 and "--json: maintain has no JSON answer" in no_json.stderr
    assert json.loads(no_json.stdout) == {"error": no_json.stderr.strip().removeprefix("error: "), "exit_code": 64}


def test_env_defaults_to_the_same_environment_for_every_verb(tmp_path, monkeypatch):
    from campaign_pipeline import cli as cli_module

    parser = cli_module.build_parser()
    verbs = [["run", "--campaign", "c"], ["submit", "--campaign", "c"], ["schedule", "show"], ["validate",
             "--campaign", "c"], ["runs", "--campaign", "c"], ["explain", "--campaign", "c", "--fan", "f"]]  # fmt: skip
    assert {cli_module._finish(parser.parse_args(v)).env for v in verbs} == {"local"}
    monkeypatch.setenv("CAMPAIGN_PIPELINE_ENV", "emr")
    assert {cli_module._finish(parser.parse_args(v)).env for v in verbs} == {"emr"}
    assert cli_module._finish(parser.parse_args(["--env", "x", "run", "--campaign", "c"])).env == "x"


# ---------------------------------------------------------------- validate, without Spark


def _validate(tmp_path, *args):
    """`validate` in a subprocess that records whether pyspark was imported, and how long it took."""
    code = (
        "import sys, time; t = time.perf_counter(); from campaign_pipeline.console import main\n"
        "try:\n    code = main(sys.argv[1:])\nfinally:\n"
        "    print(f'#seconds {time.perf_counter() - t:.2f} pyspark {\"pyspark\" in sys.modules}', file=sys.stderr)\n"
        "sys.exit(code)"
    )
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "validate", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    return proc, time.perf_counter() - started


def test_validate_passes_the_example_campaign_with_its_landing_folder_without_spark_in_under_3_seconds(tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(ROOT / "tests" / "data" / "landing", landing)
    pool = landing / "spring-tour-2027" / "code_pool.csv"
    # headers in any case, as ingest reads them
    pool.write_text(" CODE,Market_ID\n" + "".join(f"C{m}{i:05d},{m}\n" for m in MARKETS for i in range(1500)))
    registrations = next(p for p in sorted((landing / "spring-tour-2027").glob("registrations*.csv")))
    header, rest = registrations.read_text(encoding="utf-8").split("\n", 1)
    registrations.write_text(header.upper() + "\n" + rest, encoding="utf-8")
    proc, seconds = _validate(tmp_path, "--campaign", str(CAMPAIGN), "--env", str(env_file(tmp_path)),
                              "--landing", str(landing))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "#seconds" in proc.stderr and "pyspark False" in proc.stderr
    assert seconds < 3, seconds
    assert proc.stdout.strip().splitlines()[-1].startswith("ok: ")
    assert "2 registrations" in proc.stdout and "ignored: README_ops.txt" in proc.stdout


def test_validate_names_every_problem_with_its_key_and_exits_2(tmp_path):
    landing = tmp_path / "landing" / "spring-tour-2027"
    landing.mkdir(parents=True)
    (landing / "registrations.csv").write_text("campaign_id,global_user_id,email\nspring-tour-2027,F1,a@b.co\n")
    (landing / "code_pool.xlsx").write_text("not a contract format")
    (landing / "code_pool.csv").write_text("code,market_id\nC1,NYC-01\n")
    text = CAMPAIGN.read_text()
    text = text.replace("capacity: 900,", "capacity: -5,").replace(
        "allow_intl_phones: false", "allow_intl_phone: false"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc, _ = _validate(tmp_path, "--campaign", str(bad), "--landing", str(tmp_path / "landing"), "--json")
    assert proc.returncode == 2, proc.stderr
    problems = {(p["file"].rsplit("/", 1)[-1], p["key"]) for p in json.loads(proc.stdout)["problems"]}
    assert {("bad.yaml", "markets[2].capacity"), ("bad.yaml", "options.allow_intl_phone")} <= problems, problems
    # a valid campaign with a short code pool, a missing column and a file of no contract format
    good_text = CAMPAIGN.read_text().replace("source: model ", "source: external")
    good = tmp_path / "good.yaml"
    good.write_text(good_text)
    proc, _ = _validate(tmp_path, "--campaign", str(good), "--landing", str(tmp_path / "landing"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stdout.splitlines()
    problems = [line for line in lines if not line.startswith(("· ", "ok:")) and "problem(s)" not in line]
    assert lines[-1] == f"{len(problems)} problem(s)"
    assert f"{landing}/registrations.csv: columns: a registrations file without required column(s) " \
        "market_preferences, registered_at" in problems  # fmt: skip
    assert f"{landing}/code_pool.xlsx: landing: a code_pool file must be one of .csv, .tsv, .json, .parquet, .avro " \
        "(optionally .gz for text), got 'code_pool.xlsx'" in problems  # fmt: skip
    assert f"{good}: markets[0].capacity: 1,500 for NYC-01, but the code pool holds 1 codes for it (codes.per_market)" \
        in problems  # fmt: skip
    assert any(p.startswith(f"{good}: scoring.source: external scores need a scored* file") for p in problems)


def test_validate_renders_every_template_for_every_market_and_measures_it(tmp_path):
    import yaml

    text = CAMPAIGN.read_text()
    long_sms = "{{ artist }} " + "x" * 1300 + " {{ code }}"
    bad = tmp_path / "templates.yaml"

    data = yaml.safe_load(text)
    data["messages"]["templates"]["en_US"]["sms"] = long_sms
    data["messages"]["templates"]["fr_CA"] = {**data["messages"]["templates"]["en_US"], "sms": "{{ market.upper() }}"}
    data["messages"]["templates"]["fr_CA"]["email_body"] = "{{ first_name[11] }}"
    bad.write_text(yaml.safe_dump(data))
    proc, _ = _validate(tmp_path, "--campaign", str(bad), "--landing", str(tmp_path))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 2
    assert any(
        line.startswith(f"{bad}: messages.templates.en_US.sms: 9 GSM-7 segments for market NYC-01") for line in lines
    )
    assert any(
        line.startswith(f"{bad}: messages.templates.fr_CA.email_body: fails for market NYC-01") for line in lines
    )


# ---------------------------------------------------------------- config schema


def test_config_schema_is_generated_from_the_models_and_the_committed_copies_match(tmp_path):
    import jsonschema
    import yaml

    proc = cli("config", "schema", "--out", str(tmp_path / "schemas"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = sorted(Path(p).name for p in json.loads(proc.stdout)["written"])
    assert written == ["campaign.schema.json", "environment.schema.json", "schedules.schema.json"]
    for name in written:
        assert (tmp_path / "schemas" / name).read_text() == (ROOT / "conf" / "schemas" / name).read_text(), (
            f"conf/schemas/{name} is out of date: run `campaign-pipeline config schema`"
        )
    schema = json.loads((tmp_path / "schemas" / "campaign.schema.json").read_text())
    example = yaml.safe_load(CAMPAIGN.read_text())
    jsonschema.validate(json.loads(json.dumps(example, default=str)), schema)
    example["options"]["allow_intl_phone"] = True
    with pytest.raises(jsonschema.ValidationError, match="allow_intl_phone"):
        jsonschema.validate(json.loads(json.dumps(example, default=str)), schema)
    for config, name in [(CAMPAIGN, "campaign"), (ROOT / "conf/environments/emr.yaml", "environment"),
                         (ROOT / "conf/schedules.yaml", "schedules")]:  # fmt: skip
        first = config.read_text().splitlines()[0]
        target = (config.parent / first.split("$schema=")[1]).resolve()
        assert (
            first.startswith("# yaml-language-server: $schema=")
            and target == ROOT / "conf/schemas" / f"{name}.schema.json"
        )


def test_schedule_show_json_has_each_schedule_with_its_crontab_line_and_next_fire(tmp_path):
    proc = cli("schedule", "show", "--json", "--schedules", str(ROOT / "conf/schedules.yaml"), "--campaigns-dir",
               str(ROOT / "conf/campaigns"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shown = {s["name"]: s for s in json.loads(proc.stdout)}
    assert shown["notify-due"]["crontab"] == "*/5 * * * *" and shown["notify-due"]["job"] == "jobs/notify.py"
    assert shown["maintain-spring-tour-2027"]["crontab"] == "0 4 * * 0"
    assert dt.datetime.fromisoformat(shown["maintain-spring-tour-2027"]["next_fire_utc"]).weekday() == 6  # a Sunday


# ---------------------------------------------------------------- runs, without Spark


def test_runs_lists_stage_runs_newest_first_with_the_command_that_resumes_a_failed_run(spark, tmp_path):
    from campaign_pipeline.frames import catalog_rows
    from campaign_pipeline.warehouse import Warehouse

    wh = Warehouse(spark, str(tmp_path / "wh"))
    t0 = dt.datetime(2027, 3, 1, 9, tzinfo=dt.UTC)

    def row(run, stage, minute, status, seconds=None, counts=None, error=None):
        start = t0 + dt.timedelta(minutes=minute)
        end = None if status == "running" else start + dt.timedelta(seconds=seconds or 0)
        return {"run_id": run, "campaign_id": "spring-tour-2027", "stage": stage, "started_at": start,
                "finished_at": end, "status": status, "seconds": seconds, "counts": counts or {}, "files": [],
                "error": error}  # fmt: skip

    rows = [
        row("r1", "ingest", 0, "running"), row("r1", "ingest", 0, "succeeded", 30, {"rows_read": 36, "ms:read": 5}),
        row("r1", "screen", 1, "running"), row("r1", "screen", 1, "succeeded", 60, {"registrants": 6}),
        row("r2", "ingest", 60, "running"), row("r2", "ingest", 60, "succeeded", 20, {"rows_read": 0}),
        row("r2", "screen", 61, "running"), row("r2", "screen", 61, "failed", 5,
                                                        error="InputError: no registrations\nrow of +14155550123 jane.doe@example.com"),
    ]  # fmt: skip
    wh.append("pipeline_runs", catalog_rows(spark, "pipeline_runs", rows))
    proc = cli("runs", "--campaign", str(CAMPAIGN), "--warehouse", str(tmp_path / "wh"), "--json", "--last", "5",
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert [(r["run_id"], r["status"]) for r in runs] == [("r2", "failed"), ("r1", "succeeded")]
    assert runs[0]["resume"] == f"campaign-pipeline run --campaign {CAMPAIGN} --env local"
    assert runs[1]["resume"] is None and runs[1]["seconds"] == 120.0
    assert runs[1]["stages"][0]["counts"] == {"rows_read": 36}  # step timings left out
    # shown masked, even as a row recorded before the runner stored errors masked holds it
    assert runs[0]["stages"][1]["error"] == "InputError: no registrations row of +1******0123 j***@example.com"
    text = cli("runs", "--campaign", str(CAMPAIGN), "--warehouse", str(tmp_path / "wh"), "--last", "1", cwd=tmp_path)
    assert "r2  FAILED" in text.stdout and "r1" not in text.stdout
    assert "error: InputError: no registrations" in text.stdout and "resume: campaign-pipeline run" in text.stdout
    assert "4155550123" not in text.stdout + proc.stdout and "jane.doe" not in text.stdout + proc.stdout
    typo = cli("runs", "--campaign", str(CAMPAIGN), "--warehouse", str(tmp_path / "whh"), cwd=tmp_path)
    assert typo.returncode == 3 and f"warehouse {tmp_path / 'whh'}: no such folder" in typo.stderr, typo.stderr
