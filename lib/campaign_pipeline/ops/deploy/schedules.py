"""Schedules: declared in `conf/schedules.yaml`, applied to EventBridge Scheduler by boto3.

Each declared schedule (one per campaign config when `per_campaign`) becomes an EventBridge
Scheduler schedule in the environment's `emr.schedule_group`, whose target is EMR Serverless
`StartJobRun` (the universal `aws-sdk` target) with the job's entry point under
`emr.artifacts_uri/jobs/`, its arguments, and `spark.archives` for the packed virtual environment
and the conf/ archive. `apply` is declarative: schedules of the group that are no longer declared
are deleted, existing ones updated, new ones created; applying twice changes nothing.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from campaign_pipeline.config import read_yaml, validation_message
from campaign_pipeline.errors import ConfigError

TARGET_ARN = "arn:aws:scheduler:::aws-sdk:emrserverless:startJobRun"
JOB_FILES = {"notify": "notify", "report": "report", "maintain": "maintain", "run": "pipeline"}

# --------------------------------------------------------------------------- EventBridge cron

MONTHS = {name: i + 1 for i, name in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
# EventBridge numbers the days of the week 1-7 from Sunday (crontab: 0-6 from Sunday)
WEEKDAYS = {name: i + 1 for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


@dataclass(frozen=True)
class CronField:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    step: bool = True  # `/` allowed


FIELDS = (
    CronField("minutes", 0, 59),
    CronField("hours", 0, 23),
    CronField("day-of-month", 1, 31),
    CronField("month", 1, 12, MONTHS),
    CronField("day-of-week", 1, 7, WEEKDAYS, step=False),
    CronField("year", 1970, 2199),
)
_ITEM = re.compile(r"^(?P<start>\*|[A-Za-z0-9]+)(?:-(?P<end>[A-Za-z0-9]+))?(?:/(?P<step>\d+))?$")


def _value(field: CronField, text: str) -> int:
    upper = text.upper()
    if field.names and upper in field.names:
        return field.names[upper]
    if not text.isdigit():
        names = f" or {'-'.join([next(iter(field.names)), list(field.names)[-1]])}" if field.names else ""
        raise ValueError(f"{field.name}: {text!r} is not a number {field.low}-{field.high}{names}")
    value = int(text)
    if not field.low <= value <= field.high:
        raise ValueError(f"{field.name}: {value} is outside {field.low}-{field.high}")
    return value


def _special(field: CronField, text: str) -> bool:
    """`L`, `LW`, `nW` (day of month) and `L`, `nL`, `n#k` (day of week): checked, never in a list."""
    if field.name == "day-of-month":
        if text in ("L", "LW"):
            return True
        if m := re.fullmatch(r"(\d+)W", text):
            _value(field, m.group(1))
            return True
    if field.name == "day-of-week":
        if text == "L":
            return True
        if m := re.fullmatch(r"([A-Za-z0-9]+)L", text):
            _value(field, m.group(1))
            return True
        if m := re.fullmatch(r"([A-Za-z0-9]+)#(\d+)", text):
            _value(field, m.group(1))
            if not 1 <= int(m.group(2)) <= 5:
                raise ValueError(f"{field.name}: {text!r}: the week after # must be 1-5")
            return True
    return False


def _items(field: CronField, text: str) -> list[tuple[int, int, int]]:
    """The field as (start, end, step) items; raises ValueError naming the field."""
    if text == "?":
        if field.name not in ("day-of-month", "day-of-week"):
            raise ValueError(f"{field.name}: ? is only for day-of-month or day-of-week")
        return []
    if _special(field, text):
        return []
    out = []
    for item in text.split(","):
        m = _ITEM.match(item)
        if not m or (m.group("start") == "*" and m.group("end")):
            specials = {"day-of-month": ", L, LW, nW", "day-of-week": ", L, nL, n#k"}.get(field.name, "")
            raise ValueError(
                f"{field.name}: {item!r} is not a value, a range a-b, * or a step x/n"
                + (f" (or, alone: ?{specials})" if specials else "")
            )
        if m.group("step") and not field.step:
            raise ValueError(f"{field.name}: {item!r}: EventBridge takes no step (/) in this field")
        star = m.group("start") == "*"
        start = field.low if star else _value(field, m.group("start"))
        end = _value(field, m.group("end")) if m.group("end") else (field.high if star or m.group("step") else start)
        if end < start:
            raise ValueError(f"{field.name}: {item!r}: a range must go upward")
        step = int(m.group("step")) if m.group("step") else 1
        if step < 1 or step > field.high - field.low + 1:
            raise ValueError(f"{field.name}: {item!r}: the step must be 1-{field.high - field.low + 1}")
        out.append((start, end, step))
    return out


def check_cron(expression: str) -> None:
    """Raise ValueError (naming the field) unless `expression` is a valid EventBridge cron expression:
    six fields (minutes hours day-of-month month day-of-week year), exactly one of day-of-month and
    day-of-week `?`."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"expected EventBridge's six fields (minutes hours day-of-month month day-of-week year), "
            f"e.g. '0/5 * * * ? *'; got {len(fields)} in {expression!r}"
        )
    for field, text in zip(FIELDS, fields, strict=True):
        _items(field, text)
    if (fields[2] == "?") == (fields[4] == "?"):
        raise ValueError(
            "exactly one of day-of-month and day-of-week must be ?, e.g. '0 4 ? * SUN *' or '0 4 1 * ? *'; "
            f"got {fields[2]!r} and {fields[4]!r}"
        )


def _expand(field: CronField, text: str) -> set[int]:
    return {v for start, end, step in _items(field, text) for v in range(start, end + 1, step)}


def _day_matches(dom: str, dow: str, day: dt.date) -> bool:
    last = calendar.monthrange(day.year, day.month)[1]
    weekday = (day.weekday() + 1) % 7 + 1  # Monday=0 → 2; Sunday=6 → 1
    if dom != "?":
        if dom == "L":
            return day.day == last
        if dom == "LW" or dom.endswith("W"):
            target = last if dom == "LW" else min(int(dom[:-1]), last)
            nearest = dt.date(day.year, day.month, target)
            if nearest.weekday() == 5:  # Saturday: the Friday before, unless that is in the month before
                nearest = nearest - dt.timedelta(days=1) if target > 1 else nearest + dt.timedelta(days=2)
            elif nearest.weekday() == 6:  # Sunday: the Monday after, unless that is in the next month
                nearest = nearest + dt.timedelta(days=1) if target < last else nearest - dt.timedelta(days=2)
            return day == nearest
        return day.day in _expand(FIELDS[2], dom)
    field = FIELDS[4]
    if dow == "L":
        return weekday == 7
    if dow.endswith("L"):
        return weekday == _value(field, dow[:-1]) and day.day + 7 > last
    if "#" in dow:
        wanted, nth = dow.split("#")
        return weekday == _value(field, wanted) and (day.day - 1) // 7 + 1 == int(nth)
    return weekday in _expand(field, dow)


def next_fires(expression: str, after: dt.datetime, count: int, years: int = 60) -> list[dt.datetime]:
    """The next `count` times (UTC, naive) strictly after `after` at which EventBridge fires the
    expression, looked for within `years` years."""
    check_cron(expression)
    minute, hour, dom, month, dow, year = expression.split()
    minutes, hours = sorted(_expand(FIELDS[0], minute)), sorted(_expand(FIELDS[1], hour))
    months, years_ok = _expand(FIELDS[3], month), _expand(FIELDS[5], year)
    out: list[dt.datetime] = []
    day = after.date()
    end = day + dt.timedelta(days=366 * years)
    while day <= end and len(out) < count:
        if day.year in years_ok and day.month in months and _day_matches(dom, dow, day):
            for h in hours:
                for m in minutes:
                    at = dt.datetime(day.year, day.month, day.day, h, m)
                    if at > after:
                        out.append(at)
                        if len(out) == count:
                            return out
        day += dt.timedelta(days=1)
    return out


def _crontab_field(field: CronField, text: str, shift: int = 0) -> str:
    """One EventBridge field in crontab's words: numbers for names, `a-high/n` for `a/n`, `?` → `*`,
    and day-of-week numbers shifted by `shift` (EventBridge SUN=1 → crontab SUN=0)."""
    if text in ("?", "*"):
        return "*"
    parts = []
    for item, (start, end, step) in zip(text.split(","), _items(field, text), strict=True):
        if item.startswith("*"):
            parts.append("*" if step == 1 else f"*/{step}")
            continue
        if step > 1 and (start, end) == (field.low, field.high):
            parts.append(f"*/{step}")  # `0/5` in minutes: every fifth minute from 0, as `*/5` says
            continue
        if start == end or start + step > end:  # one value, whatever the step (`0-0` is not read alike)
            parts.append(str(start + shift))
            continue
        span = f"{start + shift}-{end + shift}"
        parts.append(span if step == 1 else f"{span}/{step}")
    return ",".join(parts)


def crontab_expression(expression: str) -> str | None:
    """The five crontab fields that fire exactly when EventBridge fires `expression` (UTC), or None
    when crontab cannot say it (`L`, `W`, `#`, or a year other than `*`)."""
    check_cron(expression)
    minute, hour, dom, month, dow, year = expression.split()
    if year != "*" or any(_special(f, t) for f, t in ((FIELDS[2], dom), (FIELDS[4], dow))):
        return None
    return " ".join(
        [
            _crontab_field(FIELDS[0], minute),
            _crontab_field(FIELDS[1], hour),
            _crontab_field(FIELDS[2], dom),
            _crontab_field(FIELDS[3], month),
            _crontab_field(FIELDS[4], dow, shift=-1),
        ]
    )


# --------------------------------------------------------------------------- the schedules file


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleEntry(_Model):
    """One declared schedule (`per_campaign`: one per campaign config, `{campaign}` in the command
    replaced by its path)."""

    name: str = Field(pattern=r"^[0-9A-Za-z_.\-]{1,40}$", description="EventBridge schedule name (with -<campaign>)")
    description: str = Field("", max_length=512)
    command: list[str] = Field(
        min_length=1, description="campaign-pipeline arguments: notify, report, maintain or run first"
    )
    cron: str = Field(description="EventBridge cron: minutes hours day-of-month month day-of-week year, in UTC")
    per_campaign: bool = False

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        check_cron(value)
        return value

    @field_validator("command")
    @classmethod
    def _verb(cls, value: list[str]) -> list[str]:
        if value[0] not in JOB_FILES:
            raise ValueError(f"{value[0]!r} has no job: the command starts with one of {', '.join(JOB_FILES)}")
        return value

    @model_validator(mode="after")
    def _campaign_placeholder(self) -> ScheduleEntry:
        if self.per_campaign and not any("{campaign}" in c for c in self.command):
            raise ValueError("per_campaign: the command must name {campaign} (e.g. [report, --campaign, '{campaign}'])")
        return self


class SchedulesFile(_Model):
    """`conf/schedules.yaml`."""

    schedules: list[ScheduleEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class Schedule:
    name: str
    command: tuple[str, ...]
    cron: str
    description: str = ""

    @property
    def job(self) -> str:
        verb = self.command[0]
        if verb not in JOB_FILES:
            raise ConfigError(f"schedules: {self.name}: command {verb!r} has no job (one of {', '.join(JOB_FILES)})")
        return f"jobs/{JOB_FILES[verb]}.py"


def load_schedules(path: str | Path, campaigns_dir: str | Path) -> list[Schedule]:
    """The declared schedules, expanded per campaign; every problem names the schedule and key."""
    path = Path(path)
    data = read_yaml(path, "schedules")
    try:
        declared = SchedulesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(str(path), exc)) from None
    out: list[Schedule] = []
    campaigns = sorted(Path(campaigns_dir).glob("*.yaml"))
    for item in declared.schedules:
        if item.per_campaign:
            for c in campaigns:
                # the job runs where the conf/ archive is unpacked: conf/campaigns/<file>
                cmd = tuple(x.replace("{campaign}", f"conf/campaigns/{c.name}") for x in item.command)
                out.append(Schedule(f"{item.name}-{c.stem}", cmd, item.cron, item.description))
        else:
            out.append(Schedule(item.name, tuple(item.command), item.cron, item.description))
    names = [s.name for s in out]
    too_long = [n for n in names if len(n) > 64]  # EventBridge's limit: found here, not half-way through apply
    if too_long:
        raise ConfigError(f"{path}: schedule name(s) over EventBridge's 64 characters (name-<campaign>): {too_long}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: schedule names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return out


def job_run(env, schedule: Schedule, env_file: str) -> dict:
    """The EMR Serverless StartJobRun request of a schedule (the same one `submit` sends)."""
    from campaign_pipeline.ops.deploy.submit import check_no_secret_values, secret_references, serverless_job_run

    request = serverless_job_run(
        env.emr, schedule.name, schedule.job, [*schedule.command[1:], "--env", env_file],
        secret_references(env, schedule.job),
    )  # fmt: skip
    check_no_secret_values(env, request)
    return request


def _require(env) -> None:
    emr = env.emr
    missing = [k for k in ("application_id", "execution_role_arn", "scheduler_role_arn") if emr and not getattr(emr, k)]
    if emr is None or missing:
        keys = ", ".join(f"emr.{k}" for k in (missing or ["artifacts_uri", "application_id"]))
        raise ConfigError(f"environment {env.name}: schedules need {keys} in the environment config")


def apply(env, schedules: list[Schedule], env_file: str, client=None) -> dict[str, list[str]]:
    """Make the environment's schedule group hold exactly `schedules`; returns what changed."""
    import boto3

    _require(env)
    client = client or boto3.client("scheduler", region_name=env.aws_region)
    group = env.emr.schedule_group
    try:
        client.get_schedule_group(Name=group)
    except client.exceptions.ResourceNotFoundException:
        client.create_schedule_group(Name=group)
    existing = set()
    for page in client.get_paginator("list_schedules").paginate(GroupName=group):
        existing |= {s["Name"] for s in page["Schedules"]}
    changed: dict[str, list[str]] = {"created": [], "updated": [], "deleted": [], "unchanged": []}
    for s in schedules:
        request = {
            "Name": s.name,
            "GroupName": group,
            "ScheduleExpression": f"cron({s.cron})",
            "ScheduleExpressionTimezone": "UTC",
            "Description": s.description[:512],
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Target": {
                "Arn": TARGET_ARN,
                "RoleArn": env.emr.scheduler_role_arn,
                "Input": json.dumps(job_run(env, s, env_file), sort_keys=True),
            },
        }
        if s.name not in existing:
            client.create_schedule(**request)
            changed["created"].append(s.name)
            continue
        now = client.get_schedule(Name=s.name, GroupName=group)
        same = (
            now.get("ScheduleExpression") == request["ScheduleExpression"]
            and now.get("Target", {}).get("Input") == request["Target"]["Input"]
            and now.get("Target", {}).get("RoleArn") == request["Target"]["RoleArn"]
            and now.get("State") == "ENABLED"
        )
        if same:
            changed["unchanged"].append(s.name)
        else:
            client.update_schedule(**request)
            changed["updated"].append(s.name)
    for name in sorted(existing - {s.name for s in schedules}):
        client.delete_schedule(Name=name, GroupName=group)
        changed["deleted"].append(name)
    return changed


def crontab(schedules: list[Schedule], env: str = "emr") -> list[str]:
    """The same schedules as crontab lines (UTC), each field translated; a schedule crontab cannot
    express (`L`, `W`, `#`, a year) is a comment line that says so."""
    lines = []
    for s in schedules:
        five = crontab_expression(s.cron)
        line = f"campaign-pipeline {' '.join(s.command)} --env {env}   # {s.name}"
        if five is None:
            lines.append(f"# {s.name}: cron({s.cron}) has no crontab equivalent (L, W, # or a year); {line}")
        else:
            lines.append(f"{five}  {line}")
    return lines


def show(schedules: list[Schedule], env: str, after: dt.datetime) -> list[dict]:
    """`schedule show --json`: each schedule with its job, crontab line and next fire time."""
    out = []
    for s in schedules:
        fires = next_fires(s.cron, after.astimezone(dt.UTC).replace(tzinfo=None), 1)
        out.append(
            {
                "name": s.name,
                "cron": s.cron,
                "crontab": crontab_expression(s.cron),
                "command": list(s.command),
                "job": s.job,
                "env": env,
                "description": s.description,
                "next_fire_utc": fires[0].isoformat() + "Z" if fires else None,
            }
        )
    return out
