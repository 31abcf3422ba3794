"""Run the jobs on Amazon EMR: upload what `make dist` built, then add an EMR step or start an EMR
Serverless job run, and optionally follow it to the end (docs/operator/emr.md).

Artifacts live flat under the environment's `emr.artifacts_uri`: `pyspark_venv.tar.gz`,
`conf.tar.gz`, `jobs/*.py`, the wheel and `MANIFEST.json`. An artifact whose sha256 (kept in the
object's metadata) already matches is not uploaded again, so a submit after a config-only change
sends kilobytes, not the 200 MiB environment. The campaign and environment configs go to
`<artifacts_uri>/submitted/…/<name>-<sha256[:12]>.yaml`, content-addressed, so a running job's
config never changes under it; the job reads them from S3.

boto3 throughout; the client endpoint follows `AWS_ENDPOINT_URL` (a moto server in the tests).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from campaign_pipeline.errors import ConfigError, PipelineError
from campaign_pipeline.storage import split_s3

PYTHON = "./environment/bin/python"
ARCHIVES = ("pyspark_venv.tar.gz#environment", "conf.tar.gz#conf")
# Our UDF classes and Google's libphonenumber for the JVM (the phone parser), on spark.jars.
UDF_JARS = ("jars/campaign-pipeline-udfs.jar", "jars/libphonenumber.jar")
CLUSTER_LIVE = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
# terminal states: (succeeded, failed)
STEP_DONE = ({"COMPLETED"}, {"CANCELLED", "FAILED", "INTERRUPTED"})
JOB_RUN_DONE = ({"SUCCESS"}, {"FAILED", "CANCELLED"})


class SubmitError(PipelineError):
    """The job could not be submitted, or it ended in a state other than success (exit code 6)."""

    exit_code = 6


@dataclass(frozen=True)
class Submission:
    target: str  # steps | serverless
    id: str  # step id or job run id
    where: str  # cluster id or application id
    request: dict


def load_manifest(dist: str | Path) -> dict:
    path = Path(dist) / "MANIFEST.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; build the artifacts first with `make dist` (docs/operator/emr.md)")
    manifest = json.loads(path.read_text())
    missing = [f for f in manifest["files"] if not (Path(dist) / f).is_file()]
    if missing:
        raise ConfigError(f"{path}: lists files that are not there ({', '.join(missing[:3])}); run `make dist` again")
    return manifest


def spark_conf(artifacts_uri: str, target: str, secret_refs: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The spark-submit confs that run a job from the packed environment and conf/ archive, with
    the driver's environment given the secrets' references (`<NAME>_SECRET` → a Secrets Manager
    ARN or name, `secret_values.references`): the job reads each value itself, never the request."""
    base = artifacts_uri.rstrip("/")
    conf = [
        ("spark.archives", ",".join(f"{base}/{a}" for a in ARCHIVES)),
        ("spark.jars", ",".join(f"{base}/{j}" for j in UDF_JARS)),
    ]
    if target == "serverless":
        conf += [
            ("spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON", PYTHON),
            ("spark.emr-serverless.driverEnv.PYSPARK_PYTHON", PYTHON),
        ]
    else:  # EMR on EC2: YARN cluster mode, the driver runs in the application master's container
        conf += [("spark.submit.deployMode", "cluster"), ("spark.yarn.appMasterEnv.PYSPARK_PYTHON", PYTHON)]
    conf.append(("spark.executorEnv.PYSPARK_PYTHON", PYTHON))
    driver_env = "spark.emr-serverless.driverEnv" if target == "serverless" else "spark.yarn.appMasterEnv"
    conf += [(f"{driver_env}.{name}", ref) for name, ref in sorted((secret_refs or {}).items())]
    return conf


def secret_references(env, job: str, out: TextIO | None = None) -> dict[str, str]:
    """The references a job is given for its secrets (never their values); says which secret a
    job that needs it will have to find in the cluster's own environment."""
    from campaign_pipeline.secret_values import references, variable

    refs = references(env)
    needs = {"notify": ["sms_token"], "pipeline": ["sms_token", "code_key"]}.get(Path(job).stem, [])
    for name in needs:
        if f"{variable(env, name)}_SECRET" not in refs and out is not None:
            print(
                f"[submit] note: no Secrets Manager reference for {variable(env, name)} (secrets.{name}_secret); the "
                "job finds it only if the cluster's own environment sets it — submit never sends secret values",
                file=out,
            )
    return refs


def check_no_secret_values(env, request: dict) -> None:
    """Refuse to send a request that carries a secret's value (only references may travel)."""
    import os

    from campaign_pipeline.secret_values import SECRETS, variable

    text = json.dumps(request)
    for name in SECRETS:
        value = os.environ.get(variable(env, name))
        if value and len(value) >= 6 and value in text:
            raise ConfigError(
                f"secrets.{name}_env: the job request would carry the value of {variable(env, name)}; pass a Secrets "
                f"Manager reference instead (secrets.{name}_secret)"
            )


def serverless_job_run(
    emr, name: str, job: str, arguments: list[str], secret_refs: dict[str, str] | None = None
) -> dict:
    """An EMR Serverless StartJobRun request (the schedules send the same one)."""
    params = " ".join(f"--conf {k}={v}" for k, v in spark_conf(emr.artifacts_uri, "serverless", secret_refs))
    request = {
        "ApplicationId": emr.application_id,
        "ExecutionRoleArn": emr.execution_role_arn,
        "Name": name,
        "JobDriver": {
            "SparkSubmit": {
                "EntryPoint": f"{emr.artifacts_uri.rstrip('/')}/{job}",
                "EntryPointArguments": list(arguments),
                "SparkSubmitParameters": params,
            }
        },
    }
    if emr.log_uri:
        request["ConfigurationOverrides"] = {
            "MonitoringConfiguration": {"S3MonitoringConfiguration": {"LogUri": emr.log_uri}}
        }
    return request


def _boto3_names(request: dict) -> dict:
    """The EventBridge target's request (PascalCase keys) with the keys boto3's emr-serverless
    client takes (camelCase): one request, sent by the schedules and by submit."""
    if isinstance(request, dict):
        return {k[:1].lower() + k[1:]: _boto3_names(v) for k, v in request.items()}
    return request


def emr_step(emr, name: str, job: str, arguments: list[str], secret_refs: dict[str, str] | None = None) -> dict:
    """An EMR step: command-runner.jar running spark-submit in cluster mode."""
    args = ["spark-submit"]
    for k, v in spark_conf(emr.artifacts_uri, "steps", secret_refs):
        args += ["--conf", f"{k}={v}"]
    args += [f"{emr.artifacts_uri.rstrip('/')}/{job}", *arguments]
    return {"Name": name, "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_artifacts(s3, dist: str | Path, manifest: dict, artifacts_uri: str, out: TextIO) -> list[str]:
    """Upload what changed (by sha256), MANIFEST.json last; returns the uploaded file names."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(artifacts_uri)
    uploaded = []
    items = [(name, info["sha256"]) for name, info in sorted(manifest["files"].items())]
    manifest_bytes = (Path(dist) / "MANIFEST.json").read_bytes()
    items.append(("MANIFEST.json", _sha256_bytes(manifest_bytes)))
    for name, sha in items:
        key = f"{prefix}/{name}" if prefix else name
        try:
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
                if head.get("Metadata", {}).get("sha256") == sha:
                    continue
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
            s3.upload_file(str(Path(dist) / name), bucket, key, ExtraArgs={"Metadata": {"sha256": sha}})
        except (BotoCoreError, ClientError) as exc:
            raise SubmitError(f"submit: cannot upload s3://{bucket}/{key}: {exc}") from None
        uploaded.append(name)
        print(f"[submit] uploaded {name} → s3://{bucket}/{key}", file=out)
    if not uploaded:
        print(f"[submit] artifacts unchanged at {artifacts_uri} (version {manifest['version']})", file=out)
    return uploaded


def upload_config(s3, path: str | Path, artifacts_uri: str, kind: str, name: str) -> str:
    """A config file at a content-addressed key; returns its s3:// URI."""
    from botocore.exceptions import BotoCoreError, ClientError

    data = Path(path).read_bytes()
    bucket, prefix = split_s3(artifacts_uri)
    key = f"{prefix}/submitted/{kind}/{name}-{_sha256_bytes(data)[:12]}.yaml".lstrip("/")
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/yaml")
    except (BotoCoreError, ClientError) as exc:
        raise SubmitError(f"submit: cannot upload {path} to s3://{bucket}/{key}: {exc}") from None
    return f"s3://{bucket}/{key}"


def find_cluster(emr_client, emr) -> str:
    """The live cluster the environment names (`emr.cluster_id`, else the one `emr.cluster_name`)."""
    if emr.cluster_id:
        return emr.cluster_id
    if not emr.cluster_name:
        raise ConfigError("emr.cluster_id / emr.cluster_name: set one in the environment config to submit EMR steps")
    found = []
    for page in emr_client.get_paginator("list_clusters").paginate(ClusterStates=CLUSTER_LIVE):
        found += [c["Id"] for c in page["Clusters"] if c["Name"] == emr.cluster_name]
    if len(found) != 1:
        what = "no live cluster" if not found else f"{len(found)} live clusters ({', '.join(found)})"
        raise SubmitError(f"emr.cluster_name: {what} named {emr.cluster_name!r}; set emr.cluster_id to choose one")
    return found[0]


def require(emr, target: str) -> None:
    """The environment keys a target needs, checked before anything is uploaded."""
    if target == "serverless":
        for key in ("application_id", "execution_role_arn"):
            if not getattr(emr, key):
                raise ConfigError(f"emr.{key}: needed to submit to EMR Serverless; set it in the environment config")
    elif not (emr.cluster_id or emr.cluster_name):
        raise ConfigError("emr.cluster_id / emr.cluster_name: set one in the environment config to submit EMR steps")


def submit(
    env, job: str, name: str, arguments: list[str], target: str, clients: dict, out: TextIO | None = None
) -> Submission:
    emr = env.emr
    require(emr, target)
    refs = secret_references(env, job, out)
    if target == "serverless":
        request = serverless_job_run(emr, name, job, arguments, refs)
        check_no_secret_values(env, request)
        client = clients["emr-serverless"]
        response = client.start_job_run(clientToken=str(uuid.uuid4()), **_boto3_names(request))
        return Submission("serverless", response["jobRunId"], emr.application_id, request)
    cluster = find_cluster(clients["emr"], emr)
    step = emr_step(emr, name, job, arguments, refs)
    check_no_secret_values(env, step)
    response = clients["emr"].add_job_flow_steps(JobFlowId=cluster, Steps=[step])
    return Submission("steps", response["StepIds"][0], cluster, step)


def _state(sub: Submission, clients: dict) -> tuple[str, str | None]:
    """(state, failure reason) of a submission, as the service reports it now."""
    if sub.target == "serverless":
        run = clients["emr-serverless"].get_job_run(applicationId=sub.where, jobRunId=sub.id)["jobRun"]
        return run["state"], run.get("stateDetails") or None
    step = clients["emr"].describe_step(ClusterId=sub.where, StepId=sub.id)["Step"]["Status"]
    state = step["State"]
    if state in STEP_DONE[1]:
        details = step.get("FailureDetails") or {}
        reason = "; ".join(x for x in (details.get("Reason"), details.get("Message"), details.get("LogFile")) if x)
        return state, reason or (step.get("StateChangeReason") or {}).get("Message")
    cluster = clients["emr"].describe_cluster(ClusterId=sub.where)["Cluster"]["Status"]
    if cluster["State"] in ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"):
        reason = (cluster.get("StateChangeReason") or {}).get("Message") or cluster["State"]
        return f"CLUSTER_{cluster['State']}", f"cluster {sub.where} {cluster['State'].lower()}: {reason}"
    return state, None


def follow(
    sub: Submission,
    clients: dict,
    out: TextIO,
    poll_seconds: float = 30,
    timeout_seconds: float = 24 * 3600,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll until the step or job run ends; print every state change. Success returns the state;
    anything else raises SubmitError with the service's failure reason."""
    ok, bad = STEP_DONE if sub.target == "steps" else JOB_RUN_DONE
    what = f"step {sub.id} on {sub.where}" if sub.target == "steps" else f"job run {sub.id} of {sub.where}"
    start, last = clock(), None
    while True:
        state, reason = _state(sub, clients)
        if state != last:
            print(f"[submit] {what}: {state} ({clock() - start:.0f} s)", file=out, flush=True)
            last = state
        if state in ok:
            return state
        if state in bad or state.startswith("CLUSTER_"):
            raise SubmitError(f"{what} ended {state}: {reason or 'no reason given by EMR'}")
        if clock() - start > timeout_seconds:
            raise SubmitError(f"{what} still {state} after {timeout_seconds:.0f} s (--wait gave up; the job goes on)")
        sleep(poll_seconds)
