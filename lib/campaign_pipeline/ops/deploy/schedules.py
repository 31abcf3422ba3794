"""Schedules: declared in `conf/schedules.yaml`, applied to EventBridge Scheduler by boto3.

Each declared schedule (one per campaign config when `per_campaign`) becomes an EventBridge
Scheduler schedule in the environment's `emr.schedule_group`, whose target is EMR Serverless
`StartJobRun` (the universal `aws-sdk` target) with the job's entry point under
`emr.artifacts_uri/jobs/`, its arguments, and `spark.archives` for the packed virtual environment
and the conf/ archive. `apply` is declarative: schedules of the group that are no longer declared
are deleted, existing ones updated, new ones created; applying twice changes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from campaign_pipeline.errors import ConfigError

TARGET_ARN = "arn:aws:scheduler:::aws-sdk:emrserverless:startJobRun"
JOB_FILES = {"notify": "notify", "report": "report", "maintain": "maintain", "run": "pipeline"}
_CRON = re.compile(r"^\S+( \S+){5}$")


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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the schedules ({exc})") from None
    out: list[Schedule] = []
    campaigns = sorted(Path(campaigns_dir).glob("*.yaml"))
    for i, item in enumerate(data.get("schedules") or []):
        where = f"{path}: schedules[{i}]"
        for key in ("name", "command", "cron"):
            if not item.get(key):
                raise ConfigError(f"{where}: missing {key}")
        if not _CRON.match(str(item["cron"])):
            raise ConfigError(
                f"{where}.cron: expected EventBridge's six fields, e.g. '0/5 * * * ? *'; got {item['cron']!r}"
            )
        command = [str(c) for c in item["command"]]
        if item.get("per_campaign"):
            for c in campaigns:
                # the job runs where the conf/ archive is unpacked: conf/campaigns/<file>
                cmd = tuple(x.replace("{campaign}", f"conf/campaigns/{c.name}") for x in command)
                out.append(Schedule(f"{item['name']}-{c.stem}", cmd, item["cron"], item.get("description", "")))
        else:
            out.append(Schedule(item["name"], tuple(command), item["cron"], item.get("description", "")))
    names = [s.name for s in out]
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


def crontab(schedules: list[Schedule]) -> list[str]:
    """The same schedules as crontab lines (five fields; EventBridge's `?` becomes `*`, the year goes)."""
    lines = []
    for s in schedules:
        minute, hour, dom, month, dow, _year = s.cron.split()
        five = " ".join(x.replace("?", "*") for x in (minute, hour, dom, month, dow)).replace("0/", "*/")
        lines.append(f"{five}  campaign-pipeline {' '.join(s.command)} --env emr   # {s.name}")
    return lines
