"""Ingest on a real Spark standalone cluster (master + one worker on 127.0.0.1), run from what
`make dist` builds, gives the same tables as local mode: the packed virtual environment carries the
package and its dependencies to the driver and the executors, and no state is driver-only."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest
from helpers import TEST_JVM_OPTIONS, free_port

from campaign_pipeline.config import load_campaign
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.session import local_jars
from campaign_pipeline.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).parent
CAMPAIGN = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"


def _wait(predicate, what: str, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {seconds:.0f} s")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("cluster-logs")
    port, ui, worker_ui = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(logs),
        SPARK_WORKER_DIR=str(logs / "work"),
        PYSPARK_PYTHON=sys.executable,
        SPARK_DAEMON_JAVA_OPTS=TEST_JVM_OPTIONS,
    )
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        env=env,
        stdout=open(logs / "master.log", "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"spark://127.0.0.1:{port}"
    worker = None
    try:
        _wait(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, "Spark master")
        worker = subprocess.Popen(
            [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--cores",
                "2",
                "--memory",
                "2g",
                "--webui-port",
                str(worker_ui),
                url,
            ],
            env=env,
            stdout=open(logs / "worker.log", "w"),
            stderr=subprocess.STDOUT,
        )

        def worker_alive():
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
                return json.load(r).get("aliveworkers", 0) >= 1

        _wait(worker_alive, "Spark worker registration")
        yield {"url": url, "env": env, "logs": logs}
    finally:
        for proc in (worker, master):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


DIST = ROOT / "dist"


def _unpack(archive: Path, into: Path) -> Path:
    # tar, not Python's tarfile: the packed environment (600 MB unpacked) takes 5 s instead of 10,
    # and the submit waits for it.
    into.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(into)], check=True)
    return into


def _table(wh: Warehouse, name: str, cid: str):
    drop = [c for c in ("run_id", "ingested_at", "quarantined_at") if c in wh.read(name).columns]
    return sorted(tuple(r) for r in wh.read(name, cid).drop(*drop).collect())


@pytest.mark.distributed
def test_ingest_on_a_standalone_cluster_matches_local_mode(spark, test_env, standalone_cluster, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(ROOT / "tests" / "data" / "landing", landing)
    env_file = tmp_path / "cluster.yaml"
    env_file.write_text(
        "name: standalone\nmode: cluster\n"
        f"warehouse_root: {tmp_path / 'wh-cluster'}\nlanding_root: {landing}\n"
        "spark:\n  conf:\n    spark.sql.shuffle.partitions: 4\n    spark.executor.memory: 1g\n"
        "    spark.databricks.delta.snapshotPartitions: 2\n    spark.sql.codegen.wholeStage: false\n"
        "    spark.sql.codegen.factoryMode: NO_CODEGEN\n"
    )
    manifest = DIST / "MANIFEST.json"
    assert manifest.is_file(), "dist/ is missing: `make test` builds it first (make dist)"
    # What a cluster node does with spark.archives: unpack the environment and conf/ beside the job.
    run_dir = tmp_path / "driver"
    python = _unpack(DIST / "pyspark_venv.tar.gz", run_dir / "environment") / "bin" / "python"
    _unpack(DIST / "conf.tar.gz", run_dir / "conf")
    cmd = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master",
        standalone_cluster["url"],
        "--jars",
        ",".join(local_jars()),
        "--archives",
        f"{DIST / 'pyspark_venv.tar.gz'}#environment",
        "--conf",
        "spark.pyspark.python=./environment/bin/python",
        "--conf",
        f"spark.pyspark.driver.python={python}",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        f"spark.driver.extraJavaOptions={TEST_JVM_OPTIONS}",
        "--conf",
        f"spark.executor.extraJavaOptions={TEST_JVM_OPTIONS}",
        str(DIST / "jobs" / "ingest.py"),
        "--campaign",
        "conf/campaigns/spring-tour-2027.yaml",
        "--env",
        str(env_file),
    ]
    submit_env = {k: v for k, v in standalone_cluster["env"].items() if not k.startswith("PYSPARK_")}
    # The cluster run and the local run of the same ingest go side by side: the submit mostly waits
    # (JVM and executor start, unpacking the environment), and this test is the suite's longest.
    out, err = tmp_path / "submit.out", tmp_path / "submit.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=run_dir, env=submit_env, stdout=stdout, stderr=stderr, text=True)
        try:
            local_env = test_env.with_roots(str(landing), str(tmp_path / "wh-local"))
            run_pipeline(spark, load_campaign(CAMPAIGN), local_env, stages=["ingest"], out=open(os.devnull, "w"))
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err.read_text()[-3000:]
    assert "[ingest]" in out.read_text()

    cluster_wh, local_wh = Warehouse(spark, str(tmp_path / "wh-cluster")), Warehouse(spark, str(tmp_path / "wh-local"))
    for name in (
        "registrations",
        "fan_activity",
        "external_scores",
        "fanlist_ranks",
        "code_pool",
        "screening_lists",
        "quarantine",
    ):
        assert _table(cluster_wh, name, "spring-tour-2027") == _table(local_wh, name, "spring-tour-2027"), name
    # The executors really ran tasks, in the packed environment the archive unpacked beside them.
    work = standalone_cluster["logs"] / "work"
    assert any(work.rglob("stderr")), "no executor was launched on the worker"
    assert any(work.glob("app-*/*/environment/bin/python")), "the executor did not unpack the environment"
    # The driver imported the package from the packed environment, not from this checkout.
    probe = subprocess.run(
        [str(python), "-c", "import campaign_pipeline; print(campaign_pipeline.__file__)"],
        capture_output=True,
        text=True,
        env=submit_env,
        check=True,
    )
    assert str(run_dir / "environment") in probe.stdout and str(ROOT / "lib") not in probe.stdout
