"""Small builders shared by the tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CAMPAIGN = ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"

# JVM options for every test JVM (driver, standalone master/worker, executors): C1 only and a
# serial GC. Short runs on tiny data spend most JVM CPU compiling; this takes about a third less.
# With C1 alone the JVM reserves only 48 MB for compiled code, which a test worker fills within
# its first half minute (every query's generated classes are compiled too): the JVM then says
# "CodeCache is full. Compiler has been disabled" and runs every later query interpreted. The
# tiered default size (240 MB) keeps the compiler on: the whole suite took 7 min 20 s, not 8 min 25 s.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:ReservedCodeCacheSize=240m"
# The classes a test JVM loads, mapped from the archive `make test` builds (tools/jvm_archive.py)
# rather than loaded and linked anew: about a third less CPU for each short-lived JVM. A JVM whose
# classpath or JDK does not match it ignores it (logging off: nothing on stderr either way).
TEST_JVM_ARCHIVE = ROOT / "build" / "test-jvm.jsa"
if TEST_JVM_ARCHIVE.is_file():
    TEST_JVM_OPTIONS += f" -XX:SharedArchiveFile={TEST_JVM_ARCHIVE} -Xlog:cds=off -Xlog:cds+dynamic=off"


# The Spark settings of every test session: the workers' own (conftest's `test_env`) and those of
# the environment file the command-line tests run with (`env_file`), so that a command line run in
# a worker (`run_campaign_here`) leaves that worker's session as it was.
TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": 2,
    "spark.default.parallelism": 2,
    "spark.ui.enabled": False,
    # Delta rebuilds a table's state (a shuffle into this many partitions) for every snapshot it
    # reads or commits: on the tests' few-file tables one task does it, and the suite spends about a
    # fifth less CPU than with two.
    "spark.databricks.delta.snapshotPartitions": 1,
    # Tiny test data: interpreted expressions beat compiling code for every query.
    "spark.sql.codegen.wholeStage": False,
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    # Tiny test queries: adaptive re-planning adds a Spark job per shuffle and wins nothing.
    "spark.sql.adaptive.enabled": False,
    # Short-lived test JVMs: the C1 compiler only and a serial GC take about a third less
    # CPU than C2's background compiling, and two test workers share two cores.
    "spark.driver.extraJavaOptions": TEST_JVM_OPTIONS,
}


def env_file(tmp_path: Path) -> Path:
    """A local environment sized for tiny test data: `TEST_SPARK_CONF` (JSON, which YAML reads)."""
    path = tmp_path / "env-test.yaml"
    environment = {
        "name": "test", "mode": "local", "lineage": "local_checkpoint",
        "warehouse_root": "./warehouse", "landing_root": "./landing",
        "spark": {"master": "local[2]", "conf": TEST_SPARK_CONF},
    }  # fmt: skip
    path.write_text(json.dumps(environment, indent=2))
    return path


def cli(*args, cwd):
    """`campaign-pipeline ARGS` in a subprocess (its own JVM when it needs Spark)."""
    env = dict(os.environ, CAMPAIGN_PIPELINE_JARS_DIR=str(ROOT / "jars"), CAMPAIGN_PIPELINE_DRIVER_MEMORY="1g")
    return subprocess.run(
        [sys.executable, "-m", "campaign_pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run_args(tmp_path: Path, landing: Path, *extra: str) -> list[str]:
    """`run` on the example campaign with a test environment, the given landing root and the
    warehouse `tmp_path / "wh"`."""
    return ["run", "--campaign", str(EXAMPLE_CAMPAIGN), "--env", str(env_file(tmp_path)),
            "--landing", str(landing), "--warehouse", str(tmp_path / "wh"), *extra]  # fmt: skip


def run_campaign(tmp_path: Path, landing: Path, *extra: str):
    """`campaign-pipeline run` (`_run_args`) in a process of its own."""
    return cli(*_run_args(tmp_path, landing, *extra), cwd=tmp_path)


def run_campaign_here(tmp_path: Path, landing: Path, *extra: str) -> subprocess.CompletedProcess:
    """`run_campaign` through the command line's own `main`, in this process: on the test session
    (the CLI's session is `getOrCreate`), without a second JVM to start and warm up. The notify and
    distributed tests run the command line in a process of its own."""
    import contextlib
    import io

    from campaign_pipeline.cli import main

    args = _run_args(tmp_path, landing, *extra)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(tmp_path), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return subprocess.CompletedProcess(["campaign-pipeline", *args], code, out.getvalue(), err.getvalue())


def make_campaign(campaign_id: str = "tour-test", markets=("NYC-01", "LAX-02", "CHI-03"), **overrides):
    from campaign_pipeline.config import Campaign

    data = {
        "campaign_id": campaign_id,
        "name": "Test Tour",
        "artist": "Test Artist",
        "seed": 7,
        "markets": [
            {"market_id": m, "name": m, "capacity": 10, "event_date": dt.date(2027, 4, 1 + i)}
            for i, m in enumerate(markets)
        ],
    }
    data.update(overrides)
    return Campaign.model_validate(data)


CID = "spring-tour-2027"
T0 = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)


def wave_inputs(spark, planned=None, logged=()):
    """One fan, F1, selected for NYC-01 and coded in wave-1: wave planning's inputs, with the messages
    planned before (`planned`) and the message ids that have a notification_log row (`logged`)."""
    from campaign_pipeline.catalog import CATALOG
    from campaign_pipeline.frames import literal_frame
    from campaign_pipeline.waves.stage import WaveInputs

    registrants = literal_frame(
        spark,
        [(CID, "F1", "M-F1", "ann@example.com", "ann@example.com", "+12125550101", "US", "mobile", True, False,
          "Ann", "Lee", "en_US", "US", ["NYC-01"], T0, "F1", 1, None, None, None, [], True, [], "seed")],
        CATALOG["registrants"].schema,
    )  # fmt: skip
    assignments = literal_frame(
        spark,
        [(CID, "NYC-01", "F1", "M-F1", "NYC0001", "pool", "wave-1", T0, T0, T0, "seed")],
        CATALOG["code_assignments"].schema,
    )
    empty = spark.createDataFrame([], CATALOG["wave_messages"].schema)
    log = sent_log(spark, logged).select("campaign_id", "message_id")

    return WaveInputs(assignments, registrants, planned if planned is not None else empty, log)


def sent_log(spark, message_ids):
    """notification_log rows: each of `message_ids` sent once."""
    from campaign_pipeline.frames import catalog_rows

    rows = [{"campaign_id": CID, "message_id": m, "status": "sent", "attempts": 1, "provider_id": "p-1", "sent_at": T0}
            for m in message_ids]  # fmt: skip
    return catalog_rows(spark, "notification_log", rows)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server():
    """A moto server (S3, SQS, ...) on a free 127.0.0.1 port: (server, endpoint URL); stop() it after."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


class SlackReceiver:
    """A local incoming-webhook endpoint: keeps the `text` of every message posted to it."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        texts = self.texts = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                texts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def notebook_kernel():
    """A Jupyter kernel whose folder is notebooks/, for `run_notebook(kernel=...)`: the notebooks of
    one test file run in it one after the other, as a data scientist runs them in one Jupyter
    session, so they share one Spark JVM instead of starting one each (each notebook still
    starts from an empty namespace). The caller shuts it down (`kernel.shutdown_kernel(now=True)`)."""
    import os

    from jupyter_client.manager import KernelManager

    kernel = KernelManager(kernel_name="python3")
    # the kernel's own JVM, beside the tests' one
    kernel.start_kernel(cwd=str(ROOT / "notebooks"), env={**os.environ, "CAMPAIGN_PIPELINE_DRIVER_MEMORY": "1g"})
    return kernel


def run_notebook(path, work: Path, outputs: tuple[str, ...], kernel=None, **parameters) -> dict:
    """Execute a notebook as Jupyter does: papermill, a kernel of its own whose folder is
    notebooks/, `parameters` injected after the `parameters`-tagged cell. Every given parameter must
    be one that cell declares, so a renamed parameter fails here. Returns the notebook's variables
    named in `outputs` (pickled by one probe cell appended to a copy of the notebook). With `kernel`
    (`notebook_kernel()`), the notebook runs in that kernel after its namespace is emptied."""
    import ast
    import os
    import pickle

    import nbformat
    import papermill

    notebook = nbformat.read(str(path), as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path}: expected one cell tagged parameters, found {len(tagged)}"
    declared = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    unknown = set(parameters) - declared
    assert not unknown, f"{path}: no parameter {sorted(unknown)} (declared: {sorted(declared)})"
    work.mkdir(parents=True, exist_ok=True)
    dump = work / f"{Path(path).stem}.outputs.pickle"
    probe = f"import pickle\nwith open({str(dump)!r}, 'wb') as _f:\n    pickle.dump({{k: globals()[k] for k in {list(outputs)!r}}}, _f)"
    notebook.cells.append(nbformat.v4.new_code_cell(probe))
    source, executed = work / Path(path).name, work / f"{Path(path).stem}.executed.ipynb"
    nbformat.write(notebook, str(source))
    if kernel is not None:
        from nbclient import NotebookClient
        from papermill.parameterize import parameterize_notebook

        for cell in notebook.cells:  # what papermill's own run sets up before it parameterizes
            cell.metadata.setdefault("tags", [])
        notebook.metadata.setdefault("papermill", {})
        run = parameterize_notebook(notebook, parameters)
        run.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))  # nothing from the notebook before
        client = NotebookClient(run, km=kernel, timeout=600, resources={"metadata": {"path": str(ROOT / "notebooks")}})
        try:
            client.execute()
        finally:
            nbformat.write(run, str(executed))
    else:
        saved = os.environ.get("CAMPAIGN_PIPELINE_DRIVER_MEMORY")
        os.environ["CAMPAIGN_PIPELINE_DRIVER_MEMORY"] = "1g"  # the kernel's own JVM, beside the tests' one
        try:
            papermill.execute_notebook(
                str(source), str(executed), parameters=parameters, cwd=str(ROOT / "notebooks"),
                kernel_name="python3", progress_bar=False, log_output=False, execution_timeout=600,
            )  # fmt: skip
        finally:
            if saved is None:
                os.environ.pop("CAMPAIGN_PIPELINE_DRIVER_MEMORY", None)
            else:
                os.environ["CAMPAIGN_PIPELINE_DRIVER_MEMORY"] = saved
    with open(dump, "rb") as f:
        return pickle.load(f)


def small_coded_campaign(wh, cid: str, fans: int, wave: str, market: str = "NYC-01", first_names=None):
    """Registrants F000… with US mobile numbers and emails, each coded for `market` in `wave`
    (what assign_codes records): plan_waves' inputs (`first_names`: number → first name, for a few
    fans named otherwise than `Fan<n>`). Returns `add(fan_numbers, wave)`, which codes
    more fans later (as a later assign_codes would)."""
    from campaign_pipeline.frames import catalog_rows

    def add(numbers, wave_id: str) -> None:
        registrants, codes = [], []
        for i in numbers:
            fan = f"F{i:03d}"
            registrants.append({
                "campaign_id": cid, "global_user_id": fan, "member_id": f"M{i}", "email": f"fan{i}@example.com",
                "email_canonical": f"fan{i}@example.com", "phone_e164": f"+1212555{i:04d}", "phone_country": "US",
                "phone_type": "mobile", "phone_confirmed": True, "do_not_text": False, "first_name": (first_names or {}).get(i, f"Fan{i}"),
                "last_name": "Test", "locale": "en_US", "country": "US", "market_preferences": [market],
                "registered_at": T0, "identity_cluster_id": fan, "cluster_size": 1, "tags": [], "eligible": True,
                "ineligible_reasons": [], "run_id": "r",
            })  # fmt: skip
            codes.append({
                "campaign_id": cid, "market_id": market, "global_user_id": fan, "member_id": f"M{i}",
                "code": f"CODE{i:06d}", "code_type": "pool", "wave_id": wave_id, "valid_from": T0,
                "valid_until": T0 + dt.timedelta(days=365), "assigned_at": T0, "run_id": "r",
            })  # fmt: skip
        wh.append("registrants", catalog_rows(wh.spark, "registrants", registrants))
        wh.append("code_assignments", catalog_rows(wh.spark, "code_assignments", codes))

    add(range(fans), wave)
    return add


def notify_env(test_env, warehouse_root, gateway, queue_url: str, **notify):
    """`test_env` sending to the gateway simulator and a local queue, with quick retries (`notify`
    overrides any setting)."""
    settings = {"max_in_flight": 8, "rate_per_second": 400, "max_attempts": 3, "timeout_seconds": 2,
                "backoff_seconds": 0.05, "backoff_max_seconds": 1, "chunk_size": 100, **notify}  # fmt: skip
    return test_env.model_copy(
        update={
            "warehouse_root": str(warehouse_root),
            "sms_gateway_url": gateway.url,
            "email_queue_url": queue_url,
            "aws_region": "us-east-1",
            "notify": test_env.notify.model_copy(update=settings),
        }
    )


def planned_wave(wh, cid: str, wave: str, sms: int, email: int = 0, no_recipient: int = 0, notify_at=None,
                 message_id=None) -> list[str]:  # fmt: skip
    """A planned wave as plan_waves leaves it (`wave_messages` rows and its `waves` row): `sms` SMS,
    then `email` emails, then `no_recipient` SMS with a blank number; message ids `message_id(i)`
    (default `<cid>-<wave>-<i>`). Returns the message ids in that order."""
    from campaign_pipeline.frames import catalog_rows

    notify_at = notify_at or dt.datetime(2027, 3, 1, 15, tzinfo=dt.UTC)
    message_id = message_id or (lambda i: f"{cid}-{wave}-{i:04d}")
    rows = []
    for i in range(sms + email + no_recipient):
        channel = "email" if sms <= i < sms + email else "sms"
        recipient = f"fan{i}@example.com" if channel == "email" else (f"+1212555{i:04d}" if i < sms else " ")
        rows.append({
            "campaign_id": cid, "wave_id": wave, "message_id": message_id(i), "global_user_id": f"F{i}",
            "member_id": f"M{i}", "market_id": "NYC-01", "channel": channel, "recipient": recipient,
            "code": f"CODE{i:06d}", "code_type": "pool", "locale": "en_US", "subject": "Your code",
            "text": f"Your code CODE{i:06d}", "link": "https://x", "first_name": "A", "last_name": "B",
            "email": recipient if channel == "email" else None, "mobile_number": recipient if channel == "sms" else None,
            "do_not_text": False, "notify_at": notify_at, "run_id": "plan",
        })  # fmt: skip
    wh.append("wave_messages", catalog_rows(wh.spark, "wave_messages", rows))
    row = {"campaign_id": cid, "wave_id": wave, "notify_at": notify_at, "status": "scheduled", "attempts": 0,
           "total": len(rows), "sms": sms + no_recipient, "email": email, "sent": 0, "failed": 0, "skipped": 0,
           "planned_at": notify_at, "run_id": "plan"}  # fmt: skip
    wh.append("waves", catalog_rows(wh.spark, "waves", [row]))
    return [r["message_id"] for r in rows]
