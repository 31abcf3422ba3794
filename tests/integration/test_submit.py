"""`campaign-pipeline submit` end to end against a moto server on 127.0.0.1 (S3, EMR, EMR Serverless),
through the command line as an operator types it, with the artifacts `make dist` built.

moto 5 keeps an EMR step RUNNING (or PENDING behind another) forever and creates an EMR Serverless
job run already in SUCCESS; it cannot fail a job. So --wait is exercised to success on Serverless
and to failure by terminating the cluster under a waiting step; the reason a FAILED step gives is
checked in tests/unit/test_submit_follow.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import moto_server

from campaign_pipeline.config import load_campaign, load_environment

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
CAMPAIGN = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"
CLI = [sys.executable, "-m", "campaign_pipeline.cli"]
BUCKET = "pipeline-artifacts"


@pytest.fixture(scope="module")
def aws():
    server, endpoint = moto_server()
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def _env_file(tmp_path: Path, name: str, prefix: str = "shared", **emr) -> Path:
    data = yaml.safe_load((ROOT / "conf" / "environments" / "emr.yaml").read_text())
    data["name"] = name
    data["emr"] = {"artifacts_uri": f"s3://{BUCKET}/{prefix}", **emr}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _submit(aws, *args: str, wait: bool = True, **popen):
    cmd = [*CLI, "submit", "--campaign", str(CAMPAIGN), "--dist", str(DIST), *args]
    env = dict(os.environ, **aws)
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _cluster(name: str) -> str:
    import boto3

    return boto3.client("emr").run_job_flow(
        Name=name,
        ReleaseLabel="emr-spark-8.0.0",
        Instances={"MasterInstanceType": "m6g.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]


def _object(uri: str) -> bytes:
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_submit_uploads_the_artifacts_once_and_adds_a_spark_submit_step_that_reads_its_configs(aws, tmp_path):
    import boto3

    assert (DIST / "MANIFEST.json").is_file(), "dist/ is missing: `make test` builds it first (make dist)"
    manifest = json.loads((DIST / "MANIFEST.json").read_text())
    cluster = _cluster("campaign-pipeline")
    env_file = _env_file(tmp_path, "emr-steps", prefix="emr-steps", cluster_name="campaign-pipeline")

    first = _submit(aws, "--env", str(env_file), "--stages", "ingest,screen")
    assert first.returncode == 0, first.stderr
    assert "uploaded pyspark_venv.tar.gz" in first.stdout

    # every artifact is in S3 with the sha256 the manifest gives (the big ones by metadata and size)
    s3 = boto3.client("s3")
    for name, info in manifest["files"].items():
        head = s3.head_object(Bucket=BUCKET, Key=f"emr-steps/{name}")
        assert head["Metadata"]["sha256"] == info["sha256"] and head["ContentLength"] == info["bytes"], name
    assert (
        hashlib.sha256(_object(f"s3://{BUCKET}/emr-steps/jobs/pipeline.py")).hexdigest()
        == (manifest["files"]["jobs/pipeline.py"]["sha256"])
    )

    steps = boto3.client("emr").list_steps(ClusterId=cluster)["Steps"]
    assert len(steps) == 1
    args = steps[0]["Config"]["Args"]
    assert args[0] == "spark-submit"
    confs = dict(a.split("=", 1) for a in args[1 : args.index(f"s3://{BUCKET}/emr-steps/jobs/pipeline.py")] if "=" in a)
    assert confs["spark.archives"] == (
        f"s3://{BUCKET}/emr-steps/pyspark_venv.tar.gz#environment,s3://{BUCKET}/emr-steps/conf.tar.gz#conf"
    )
    assert confs["spark.jars"] == (
        f"s3://{BUCKET}/emr-steps/jars/campaign-pipeline-udfs.jar,s3://{BUCKET}/emr-steps/jars/libphonenumber.jar"
    )
    assert {"jars/campaign-pipeline-udfs.jar", "jars/libphonenumber.jar"} <= set(manifest["files"])
    assert confs["spark.submit.deployMode"] == "cluster"
    assert confs["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    job_args = args[args.index(f"s3://{BUCKET}/emr-steps/jobs/pipeline.py") + 1 :]
    assert job_args[job_args.index("--stages") + 1] == "ingest,screen"

    # what the job does first on the cluster: read its configs from S3, identical to the local ones
    campaign_uri, env_uri = job_args[job_args.index("--campaign") + 1], job_args[job_args.index("--env") + 1]
    assert _object(campaign_uri) == CAMPAIGN.read_bytes()
    assert load_campaign(campaign_uri) == load_campaign(CAMPAIGN)
    assert load_environment(env_uri) == load_environment(str(env_file))

    # a second submit sends no artifact again and adds a second step; --json answers with its ids
    second = _submit(aws, "--json", "--env", str(env_file))
    assert second.returncode == 0, second.stderr
    assert "uploaded" not in second.stderr and "artifacts unchanged" in second.stderr  # progress on stderr
    listed = boto3.client("emr").list_steps(ClusterId=cluster)["Steps"]
    assert len(listed) == 2
    answer = json.loads(second.stdout)
    first_step = first.stdout.split("steps ")[-1].split()[0]
    assert {s["Id"] for s in listed} == {first_step, answer.pop("step_id")}
    assert answer == {"command": "run", "campaign_id": "spring-tour-2027", "target": "steps", "cluster_id": cluster}


def test_submit_wait_follows_a_serverless_job_run_to_success(aws, tmp_path):
    import boto3

    client = boto3.client("emr-serverless")
    # moto takes only emr-N.N.0 labels; the application's release does not reach the job run request
    app = client.create_application(name="campaign-pipeline", releaseLabel="emr-8.0.0", type="SPARK")
    env_file = _env_file(
        tmp_path, "emr-serverless", application_id=app["applicationId"],
        execution_role_arn="arn:aws:iam::123456789012:role/campaign-pipeline-job",
        log_uri=f"s3://{BUCKET}/logs",
    )  # fmt: skip
    done = _submit(aws, "--env", str(env_file), "--target", "serverless", "--wait", "--poll-seconds", "0.2")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split("serverless ")[1].split()[0]
    assert f"job run {run_id} of {app['applicationId']}: SUCCESS" in done.stdout

    run = client.get_job_run(applicationId=app["applicationId"], jobRunId=run_id)["jobRun"]
    driver = run["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"s3://{BUCKET}/shared/jobs/pipeline.py"
    assert (
        "--conf spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON=./environment/bin/python"
        in (driver["sparkSubmitParameters"])
    )
    assert f"s3://{BUCKET}/shared/conf.tar.gz#conf" in driver["sparkSubmitParameters"]
    assert driver["entryPointArguments"][:1] == ["--campaign"]
    assert load_campaign(driver["entryPointArguments"][1]).campaign_id == "spring-tour-2027"


def test_submit_wait_exits_non_zero_with_the_reason_when_the_cluster_goes_away(aws, tmp_path):
    import boto3

    cluster = _cluster("campaign-pipeline-doomed")
    env_file = _env_file(tmp_path, "emr-doomed", cluster_id=cluster)
    proc = _submit(aws, "--env", str(env_file), "--command", "report", "--wait", "--poll-seconds", "0.2", wait=False)
    emr = boto3.client("emr")
    deadline = time.monotonic() + 120
    while not emr.list_steps(ClusterId=cluster)["Steps"] and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # the step is being followed: RUNNING
    emr.terminate_job_flows(JobFlowIds=[cluster])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert ": RUNNING" in out
    assert f"ended CLUSTER_TERMINATED: cluster {cluster} terminated" in err
    step = emr.list_steps(ClusterId=cluster)["Steps"][0]
    assert f"s3://{BUCKET}/shared/jobs/report.py" in step["Config"]["Args"]


def test_submit_says_what_to_do_before_touching_aws(aws, tmp_path):
    env_file = _env_file(tmp_path, "emr-nodist", cluster_id="j-NOPE")
    missing = _submit(aws, "--env", str(env_file), "--dist", str(tmp_path / "nodist"))
    assert missing.returncode == 2 and "make dist" in missing.stderr and "Traceback" not in missing.stderr
    bad_stage = _submit(aws, "--env", str(env_file), "--stages", "ingest,sreen")
    assert bad_stage.returncode == 2 and "--stages: unknown stage(s) sreen" in bad_stage.stderr
    no_app = _submit(aws, "--env", str(_env_file(tmp_path, "emr-noapp")), "--target", "serverless")
    assert no_app.returncode == 2 and "emr.application_id" in no_app.stderr


def test_submit_passes_secrets_by_reference_never_by_value_and_the_job_reads_them(aws, tmp_path, monkeypatch):
    """The operator's shell holds the SMS token: the job request carries only the Secrets Manager
    reference (`SMS_API_TOKEN_SECRET` in the driver's environment); the job, whose environment has
    no token, reads the value from Secrets Manager (a moto server here)."""
    import boto3

    from campaign_pipeline import secret_values

    token = "sms-token-" + os.urandom(6).hex()
    arn = boto3.client("secretsmanager").create_secret(Name="campaign-pipeline/sms", SecretString=token)["ARN"]
    client = boto3.client("emr-serverless")
    app = client.create_application(name="campaign-pipeline-secrets", releaseLabel="emr-8.0.0", type="SPARK")
    env_file = _env_file(
        tmp_path, "emr-secrets", application_id=app["applicationId"],
        execution_role_arn="arn:aws:iam::123456789012:role/campaign-pipeline-job",
    )  # fmt: skip
    data = yaml.safe_load(env_file.read_text())
    data["secrets"]["sms_token_secret"] = arn
    env_file.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [*CLI, "submit", "--campaign", str(CAMPAIGN), "--dist", str(DIST), "--env", str(env_file), "--target",
         "serverless", "--command", "notify"],
        env=dict(os.environ, **aws, SMS_API_TOKEN=token), capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no Secrets Manager reference for CAMPAIGN_CODE_KEY" not in done.stdout  # notify needs only the token
    run_id = done.stdout.split("serverless ")[1].split()[0]
    run = client.get_job_run(applicationId=app["applicationId"], jobRunId=run_id)["jobRun"]
    assert token not in json.dumps(run, default=str)
    params = run["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"]
    assert f"--conf spark.emr-serverless.driverEnv.SMS_API_TOKEN_SECRET={arn}" in params

    # on the cluster: no token in the environment, only the reference the request gave the driver
    monkeypatch.delenv("SMS_API_TOKEN", raising=False)
    monkeypatch.setenv("SMS_API_TOKEN_SECRET", arn)
    monkeypatch.setattr(secret_values, "_cache", {})
    env = load_environment(str(_env_file(tmp_path, "emr-job")))  # the job's env file need not name it
    assert secret_values.secret(env, "sms_token") == token

    # a request that would carry a value is refused before anything is sent
    from campaign_pipeline.errors import ConfigError
    from campaign_pipeline.ops.deploy.submit import check_no_secret_values

    monkeypatch.setenv("SMS_API_TOKEN", token)
    with pytest.raises(ConfigError, match="would carry the value of SMS_API_TOKEN"):
        check_no_secret_values(env, {"args": [f"--token={token}"]})
