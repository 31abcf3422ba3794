"""Two drivers commit to one Delta table on S3 at once and nothing is lost (`make test-s3`).

S3 has no put-if-absent, so with the single-driver log store two drivers that commit the same
version number both "succeed" and one commit silently overwrites the other. (S3A checks that the
commit file is absent just before it writes, so on a quiet local endpoint such a collision is rare:
this test asserts that nothing is lost *and* that every version was committed through DynamoDB's
conditional write, which is what rules the collision out.) The EMR environment
config therefore uses Delta's S3DynamoDBLogStore, which makes the commit of each version a
conditional DynamoDB write. Here the warehouse is on a moto server on 127.0.0.1 through S3A, the
log store's DynamoDB is a second moto server (TLS: Delta's client speaks https to the region's
endpoint, which an SDK endpoints override points at 127.0.0.1), and each writer is its own JVM.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import TEST_JVM_OPTIONS, free_port, moto_server

ROOT = Path(__file__).resolve().parents[2]
S3_JARS = Path(os.environ.get("CAMPAIGN_PIPELINE_S3_JARS_DIR", ROOT / "jars" / "s3"))
BUCKET, TABLE, REGION = "warehouse", "delta_log_test", "us-east-1"
COMMITS = 8


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    jars = sorted(str(p) for p in S3_JARS.glob("*.jar"))
    assert any("delta-storage-s3-dynamodb" in j for j in jars), f"{S3_JARS}: no S3 jars; run `make test-s3`"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    s3_server, s3_endpoint = moto_server()
    ddb_port = free_port()
    ddb = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(ddb_port), "--ssl"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, **creds),
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", ddb_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    # The AWS SDK v1 (Delta's DynamoDB client) reads endpoint overrides from this classpath resource.
    override = tmp_path_factory.mktemp("sdk-endpoints")
    target = override / "com" / "amazonaws" / "partitions" / "override" / "endpoints.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({"version": 3, "partitions": [{
        "partition": "aws", "partitionName": "AWS Standard", "dnsSuffix": "amazonaws.com",
        "regionRegex": "^us\\-\\w+\\-\\d+$",
        "defaults": {"hostname": "{service}.{region}.{dnsSuffix}", "protocols": ["https"], "signatureVersions": ["v4"]},
        "regions": {REGION: {"description": "US East (N. Virginia)"}},
        "services": {"dynamodb": {"endpoints": {REGION: {"hostname": f"127.0.0.1:{ddb_port}"}}}},
    }]}))  # fmt: skip
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, **_keys()).create_bucket(Bucket=BUCKET)
    yield {"s3": s3_endpoint, "ddb": f"https://127.0.0.1:{ddb_port}", "jars": jars, "override": str(override),
           "creds": creds}  # fmt: skip
    ddb.terminate()
    ddb.wait(timeout=30)
    s3_server.stop()


def _keys():
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _emr_log_store_conf() -> dict:
    """The log store settings of conf/environments/emr.yaml, so the test runs what EMR runs."""
    conf = yaml.safe_load((ROOT / "conf" / "environments" / "emr.yaml").read_text())["spark"]["conf"]
    return {k: v for k, v in conf.items() if "logStore" in k or "S3DynamoDBLogStore" in k}


def _env(aws, prefix: str) -> dict:
    conf = {
        "spark.sql.shuffle.partitions": 2,
        "spark.ui.enabled": False,
        "spark.databricks.delta.snapshotPartitions": 2,
        "spark.hadoop.fs.s3a.endpoint": aws["s3"],
        "spark.hadoop.fs.s3a.endpoint.region": REGION,
        "spark.hadoop.fs.s3a.path.style.access": True,
        "spark.hadoop.fs.s3a.connection.ssl.enabled": False,
        "spark.hadoop.fs.s3a.access.key": "testing",
        "spark.hadoop.fs.s3a.secret.key": "testing",
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.driver.extraClassPath": aws["override"],
        "spark.driver.extraJavaOptions": f"{TEST_JVM_OPTIONS} -Dcom.amazonaws.sdk.disableCertChecking=true",
    }
    for key, value in _emr_log_store_conf().items():
        conf[key.replace("logStore.s3.impl", "logStore.s3a.impl")] = value  # EMR's s3:// is EMRFS; here s3a://
    conf["spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName"] = TABLE
    return {"name": "s3-test", "mode": "local", "warehouse_root": f"s3a://{BUCKET}/{prefix}",
            "landing_root": f"s3a://{BUCKET}/landing", "spark": {"master": "local[2]", "conf": conf}}  # fmt: skip


def _writer(aws, prefix: str, name: str, commits: int):
    task = {"env": _env(aws, prefix), "jars": aws["jars"], "writer": name, "commits": commits}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("writer.py")), json.dumps(task)],
        env=dict(os.environ, **aws["creds"], CAMPAIGN_PIPELINE_DRIVER_MEMORY="1g"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc, what: str) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{what} failed:\n{err[-4000:]}"
    return out


def test_the_emr_environment_uses_the_dynamodb_log_store():
    conf = _emr_log_store_conf()
    assert conf["spark.delta.logStore.s3.impl"] == "io.delta.storage.S3DynamoDBLogStore"
    assert conf["spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName"]
    assert conf["spark.io.delta.storage.S3DynamoDBLogStore.ddb.region"]


def test_two_drivers_committing_to_one_table_on_s3_lose_nothing(aws):
    import boto3

    # the first driver creates the warehouse table; then two drivers commit to it at the same time
    _finish(_writer(aws, "wh", "creator", 1), "the creating writer")
    a, b = _writer(aws, "wh", "a", COMMITS), _writer(aws, "wh", "b", COMMITS)
    out_a, out_b = _finish(a, "writer a"), _finish(b, "writer b")
    assert out_a.count("committed") == COMMITS and out_b.count("committed") == COMMITS

    s3 = boto3.client("s3", endpoint_url=aws["s3"], region_name=REGION, **_keys())
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="wh/pipeline_runs/_delta_log/")
            for o in page.get("Contents", [])]  # fmt: skip
    versions = sorted(int(Path(k).stem) for k in keys if k.endswith(".json") and Path(k).stem.isdigit())
    # one table creation, one constraint/property commit or more from `ensure`, then 1 + 2 × COMMITS appends
    assert versions == list(range(len(versions))), "a gap or a repeat in the commit versions"

    # every row of both drivers is in the table: read it in a third driver
    script = (
        "import json,sys\nfrom campaign_pipeline.config import Environment\n"
        "from campaign_pipeline.session import build_session, local_jars\n"
        "t=json.loads(sys.argv[1]); env=Environment.model_validate(t['env'])\n"
        "s=build_session(env, extra_conf={'spark.jars': ','.join(local_jars()+t['jars'])})\n"
        "print(json.dumps(sorted(r[0] for r in s.read.format('delta').load(env.warehouse_root+'/pipeline_runs')"
        ".select('run_id').collect())))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps({"env": _env(aws, "wh"), "jars": aws["jars"]})],
        env=dict(os.environ, **aws["creds"], CAMPAIGN_PIPELINE_DRIVER_MEMORY="1g"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_ids = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = ["creator-000"] + [f"{w}-{i:03d}" for w in "ab" for i in range(COMMITS)]
    assert run_ids == sorted(expected)

    # the commits went through the DynamoDB log store: it holds an entry per version of the table
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # moto's self-signed certificate
    ddb = boto3.client("dynamodb", endpoint_url=aws["ddb"], region_name=REGION, verify=False, **_keys())
    items = ddb.scan(TableName=TABLE)["Items"]
    committed = sorted(int(i["fileName"]["S"].split(".")[0]) for i in items if "pipeline_runs" in i["tablePath"]["S"])
    assert committed == versions
