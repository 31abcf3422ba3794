"""conf/schedules.yaml applied to EventBridge Scheduler in a moto server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from helpers import moto_server
from hypothesis import given, settings
from hypothesis import strategies as st

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
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / f"{'summer-stadium-tour-' * 2}2027.yaml").write_text("campaign_id: x\n")
    long = tmp_path / "long.yaml"
    long.write_text(
        "schedules:\n  - name: weekly-maintenance-run\n    command: [maintain, --campaign, '{campaign}']\n"
        "    cron: '0 4 ? * SUN *'\n    per_campaign: true\n"
    )
    with pytest.raises(ConfigError, match="over EventBridge's 64 characters"):
        sch.load_schedules(long, campaigns)
    env = load_environment("local")
    with pytest.raises(ConfigError, match="schedules need emr.artifacts_uri"):
        sch.apply(env, [], "conf/environments/local.yaml", client=object())
    lines = sch.crontab(sch.load_schedules(ROOT / "conf" / "schedules.yaml", ROOT / "conf" / "campaigns"))
    assert (
        lines[0]
        == "*/5 * * * *  campaign-pipeline notify --due --campaigns-dir conf/campaigns --env emr   # notify-due"
    )


# ---------------------------------------------------------------- the schedules model and cron rules


def test_an_unknown_key_in_the_schedules_file_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "schedules.yaml"
    bad.write_text(
        "schedules:\n  - name: x\n    command: [notify, --due]\n    cron: '0/5 * * * ? *'\n    per_campain: true\n"
    )
    with pytest.raises(ConfigError, match=r"schedules\[0\]\.per_campain: unknown key"):
        sch.load_schedules(bad, tmp_path)
    bad.write_text("schedules:\n  - name: x\n    command: [explain, --fan, f]\n    cron: '0/5 * * * ? *'\n")
    with pytest.raises(ConfigError, match=r"schedules\[0\]\.command: 'explain' has no job"):
        sch.load_schedules(bad, tmp_path)


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("0 4 * * SUN *", "exactly one of day-of-month and day-of-week must be ?"),
        ("0 4 ? * ? *", "exactly one of day-of-month and day-of-week must be ?"),
        ("60 * * * ? *", "minutes: 60 is outside 0-59"),
        ("0 24 * * ? *", "hours: 24 is outside 0-23"),
        ("0 0 0 * ? *", "day-of-month: 0 is outside 1-31"),
        ("0 0 1 13 ? *", "month: 13 is outside 1-12"),
        ("0 0 1 FOO ? *", "month: 'FOO' is not a number 1-12 or JAN-DEC"),
        ("0 0 ? * 0 *", "day-of-week: 0 is outside 1-7"),
        ("0 0 ? * SUN/2 *", "day-of-week: 'SUN/2': EventBridge takes no step"),
        ("0 0 ? * 2#6 *", "the week after # must be 1-5"),
        ("0 0 1,L * ? *", "day-of-month: 'L' is not a number"),
        ("0 0 32W * ? *", "day-of-month: 32 is outside 1-31"),
        ("0 0 1 * ? 1969", "year: 1969 is outside 1970-2199"),
        ("? 0 1 * ? *", "? is only for day-of-month or day-of-week"),
        ("5-3 * * * ? *", "minutes: '5-3': a range must go upward"),
        ("*/0 * * * ? *", "the step must be 1-60"),
        ("*/5 * * * *", "expected EventBridge's six fields"),
    ],
)
def test_each_cron_field_is_checked_by_eventbridge_rules(cron, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        sch.check_cron(cron)


@pytest.mark.parametrize(
    "cron",
    ["0/5 * * * ? *", "0 4 ? * SUN *", "15 10 L * ? *", "0 9 LW * ? *", "0 9 15W * ? *", "0 9 ? * 6L *",
     "0 9 ? * MON#2 *", "0 9 ? * L *", "0 0 1 JAN-MAR,OCT ? 2027-2030", "5,35 8-18/2 ? * MON-FRI *"],
)  # fmt: skip
def test_eventbridge_special_fields_are_accepted(cron):
    sch.check_cron(cron)


def test_crontab_translates_each_field_and_says_what_it_cannot():
    assert sch.crontab_expression("30/5 * * * ? *") == "30-59/5 * * * *"  # not `3*/5`
    assert sch.crontab_expression("0/5 * * * ? *") == "*/5 * * * *"
    assert sch.crontab_expression("10 0/6 * * ? *") == "10 */6 * * *"
    assert sch.crontab_expression("0 4 ? * SUN *") == "0 4 * * 0"
    assert sch.crontab_expression("0 4 ? * MON-FRI *") == "0 4 * * 1-5"
    assert sch.crontab_expression("0 4 ? * 1,7 *") == "0 4 * * 0,6"
    assert sch.crontab_expression("0 4 1/10 JAN-MAR ? *") == "0 4 */10 1-3 *"
    assert sch.crontab_expression("0 4 3/10 FEB/5 ? *") == "0 4 3-31/10 2-12/5 *"
    for inexpressible in ("0 9 L * ? *", "0 9 ? * 2#1 *", "0 9 15W * ? *", "0 0 1 1 ? 2030"):
        assert sch.crontab_expression(inexpressible) is None
    lines = sch.crontab([sch.Schedule("last-day", ("report", "--campaign", "c.yaml"), "0 9 L * ? *")], env="prod")
    assert lines == [
        "# last-day: cron(0 9 L * ? *) has no crontab equivalent (L, W, # or a year); "
        "campaign-pipeline report --campaign c.yaml --env prod   # last-day"
    ]


def test_eventbridge_last_nearest_weekday_and_nth_weekday_fire_on_their_days():
    after = dt.datetime(2027, 1, 1)
    assert [d.date() for d in sch.next_fires("0 9 L * ? *", after, 2)] == [dt.date(2027, 1, 31), dt.date(2027, 2, 28)]
    # 2027-05-15 is a Saturday: the nearest weekday is Friday the 14th; 2027-08-01 a Sunday: Monday the 2nd
    assert sch.next_fires("0 9 15W 5 ? *", after, 1)[0].date() == dt.date(2027, 5, 14)
    assert sch.next_fires("0 9 1W 8 ? *", after, 1)[0].date() == dt.date(2027, 8, 2)
    assert sch.next_fires("0 9 LW 7 ? *", after, 1)[0].date() == dt.date(2027, 7, 30)  # the 31st is a Saturday
    assert sch.next_fires("0 9 ? 3 2#2 *", after, 1)[0].date() == dt.date(2027, 3, 8)  # second Monday
    assert sch.next_fires("0 9 ? 3 6L *", after, 1)[0].date() == dt.date(2027, 3, 26)  # last Friday
    assert sch.next_fires("0 0 1 1 ? 2030", after, 2) == [dt.datetime(2030, 1, 1)]  # the year is a field too


def _field(draw, low, high, names=None, step=True):
    """One cron field: *, a value, a range, a step or a list of those (names where the field has them)."""

    def value(v):
        return names[v - low] if names and draw(st.booleans()) else str(v)

    def item():
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        kind = draw(st.sampled_from(["value", "range"] + (["step", "range-step", "star-step"] if step else [])))
        n = draw(st.integers(1, max(1, (high - low) // 2)))
        return {"value": value(a), "range": f"{value(a)}-{value(b)}", "step": f"{a}/{n}",
                "range-step": f"{a}-{b}/{n}", "star-step": f"*/{n}"}[kind]  # fmt: skip

    if draw(st.integers(0, 5)) == 0:
        return "*"
    return ",".join(item() for _ in range(draw(st.integers(1, 3))))


@st.composite
def crontab_expressible(draw):
    """Valid EventBridge expressions crontab can say: day-of-month 1-28 (every month has it)."""
    months = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
    days = "SUN MON TUE WED THU FRI SAT".split()
    minute, hour = _field(draw, 0, 59), _field(draw, 0, 23)
    month = _field(draw, 1, 12, months)
    if draw(st.booleans()):
        dom, dow = _field(draw, 1, 28), "?"
    else:
        dom, dow = "?", _field(draw, 1, 7, days, step=False)
    return f"{minute} {hour} {dom} {month} {dow} *"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(cron=crontab_expressible(), start=st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2030, 12, 31)))
def test_crontab_fires_exactly_when_eventbridge_does(cron, start):
    """The next 50 fire times of a random valid expression, EventBridge's rules against croniter
    reading the translated crontab line."""
    from croniter import croniter

    sch.check_cron(cron)
    start = start.replace(second=0, microsecond=0)
    five = sch.crontab_expression(cron)
    ours = sch.next_fires(cron, start, 50)
    it = croniter(five, start)
    theirs = [it.get_next(dt.datetime) for _ in range(50)]
    assert ours == theirs, (cron, five)
