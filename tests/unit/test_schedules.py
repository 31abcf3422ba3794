"""conf/schedules.yaml applied to EventBridge Scheduler in a moto server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import moto_server

from campaign_pipeline.config import load_environment
from campaign_pipeline.errors import ConfigError
from campaign_pipeline.ops.deploy import schedules as sch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws(monkeypatch):
    server, endpoint = moto_server()
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    yield
    server.stop()


def _schedules(client, group):
    out = {}
    for s in client.list_schedules(GroupName=group)["Schedules"]:
        got = client.get_schedule(Name=s["Name"], GroupName=group)
        out[s["Name"]] = (got["ScheduleExpression"], json.loads(got["Target"]["Input"]))
    return out


def test_the_declared_schedules_are_applied_once_updated_and_pruned(aws, tmp_path):
    import boto3

    env = load_environment("emr")
    declared = sch.load_schedules(ROOT / "conf" / "schedules.yaml", ROOT / "conf" / "campaigns")
    names = [s.name for s in declared]
    assert names == ["notify-due", "report-spring-tour-2027", "maintain-spring-tour-2027"]

    changed = sch.apply(env, declared, "conf/environments/emr.yaml")
    assert changed["created"] == names
    client = boto3.client("scheduler", region_name="us-east-1")
    held = _schedules(client, env.emr.schedule_group)
    expression, run = held["notify-due"]
    assert expression == "cron(0/5 * * * ? *)"
    driver = run["JobDriver"]["SparkSubmit"]
    assert driver["EntryPoint"] == f"{env.emr.artifacts_uri}/jobs/notify.py"
    assert driver["EntryPointArguments"] == [
        "--due",
        "--campaigns-dir",
        "conf/campaigns",
        "--env",
        "conf/environments/emr.yaml",
    ]
    assert "pyspark_venv.tar.gz#environment" in driver["SparkSubmitParameters"]
    assert run["ApplicationId"] == env.emr.application_id
    assert held["report-spring-tour-2027"][1]["JobDriver"]["SparkSubmit"]["EntryPointArguments"][:2] == [
        "--campaign", "conf/campaigns/spring-tour-2027.yaml"
    ]  # fmt: skip

    assert sch.apply(env, declared, "conf/environments/emr.yaml")["unchanged"] == names  # idempotent

    # with the SMS token in Secrets Manager, each job run's driver is given its reference, never its value
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:campaign-pipeline/sms-AbCdEf"
    with_ref = env.model_copy(update={"secrets": env.secrets.model_copy(update={"sms_token_secret": arn})})
    assert sch.apply(with_ref, declared, "conf/environments/emr.yaml")["updated"] == names
    params = _schedules(client, env.emr.schedule_group)["notify-due"][1]["JobDriver"]["SparkSubmit"]
    assert f"--conf spark.emr-serverless.driverEnv.SMS_API_TOKEN_SECRET={arn}" in params["SparkSubmitParameters"]
    assert sch.apply(env, declared, "conf/environments/emr.yaml")["updated"] == names  # back as it was

    faster = sch.Schedule("notify-due", declared[0].command, "0/2 * * * ? *", declared[0].description)
    changed = sch.apply(env, [faster, declared[1]], "conf/environments/emr.yaml")
    assert (changed["updated"], changed["unchanged"], changed["deleted"]) == (
        ["notify-due"], ["report-spring-tour-2027"], ["maintain-spring-tour-2027"]
    )  # fmt: skip
    assert sorted(_schedules(client, env.emr.schedule_group)) == ["notify-due", "report-spring-tour-2027"]


def test_bad_declarations_and_missing_settings_name_the_key(tmp_path):
    bad = tmp_path / "schedules.yaml"
    bad.write_text("schedules:\n  - name: x\n    command: [notify, --due]\n    cron: '*/5 * * * *'\n")
    with pytest.raises(ConfigError, match=r"schedules\[0\].cron: expected EventBridge's six fields"):
        sch.load_schedules(bad, tmp_path)
    env = load_environment("local")
    with pytest.raises(ConfigError, match="schedules need emr.artifacts_uri"):
        sch.apply(env, [], "conf/environments/local.yaml", client=object())
    lines = sch.crontab(sch.load_schedules(ROOT / "conf" / "schedules.yaml", ROOT / "conf" / "campaigns"))
    assert (
        lines[0]
        == "*/5 * * * *  campaign-pipeline notify --due --campaigns-dir conf/campaigns --env emr   # notify-due"
    )
