"""Benchmark: the notify stage sending one wave of SMS to the gateway simulator.

    python benchmarks/notify_bench.py [--messages 100000] [--latency 0.05] [--rate 200] [--in-flight 200]

Plans a wave of `--messages` SMS in a fresh warehouse (built with Spark, not on the driver),
starts the gateway simulator on 127.0.0.1 with `--latency` seconds per answer, runs the notify
stage with the given campaign-wide limits, and prints messages per second over the whole stage
(chunk commits included), the highest number of requests the gateway saw at once, and how many
messages it accepted more than once (must be 0). Paste the line into RESULTS.md.

The gateway runs in a process of its own, as a real one does: inside this process (the Spark
driver, with its commit thread) its handler threads would time arrivals behind the driver's GIL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _serve_gateway(conn, latency: float, token: str) -> None:
    """The gateway simulator in this child process: its URL, then its figures when asked."""
    from campaign_pipeline.demo.services import GatewaySimulator

    with GatewaySimulator(latency=latency, token=token) as gw:
        conn.send(gw.url)
        while conn.recv() == "figures":
            conn.send(
                {"starts": sorted(gw.starts), "accepted": dict(gw.accepted), "max_concurrent": gw.max_concurrent,
                 "busiest_second": gw.busiest_second()}
            )  # fmt: skip


class Gateway:
    """The gateway simulator in a process of its own (`_serve_gateway`), its figures read once sent."""

    def __init__(self, latency: float, token: str):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve_gateway, args=(child, latency, token), daemon=True)

    def __enter__(self) -> Gateway:
        self._process.start()
        self.url = self._conn.recv()
        return self

    def figures(self) -> dict:
        self._conn.send("figures")
        return self._conn.recv()

    def __exit__(self, *exc) -> None:
        self._conn.send("stop")
        self._process.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the environment's")
    args = parser.parse_args(argv)

    os.environ.setdefault("CAMPAIGN_PIPELINE_JARS_DIR", str(ROOT / "jars"))
    from pyspark.sql import functions as F

    from campaign_pipeline.catalog import spec
    from campaign_pipeline.config import load_campaign, load_environment
    from campaign_pipeline.frames import catalog_rows
    from campaign_pipeline.runner import run_pipeline
    from campaign_pipeline.session import build_session
    from campaign_pipeline.warehouse import Warehouse

    campaign = load_campaign(ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml")
    wave = min(campaign.waves, key=lambda w: w.notify_at)
    work = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    env = load_environment("local").with_roots(str(work / "landing"), str(work / "wh"))
    spark = build_session(env, app_name="campaign-pipeline notify bench")
    spark.sparkContext.setLogLevel("ERROR")
    wh = Warehouse(spark, env.warehouse_root)
    cid = campaign.campaign_id
    n = args.messages
    t = spec("wave_messages")
    messages = spark.range(n).select(
        F.lit(cid).alias("campaign_id"),
        F.lit(wave.wave_id).alias("wave_id"),
        F.format_string("bench-%08d", "id").alias("message_id"),
        F.format_string("F%08d", "id").alias("global_user_id"),
        F.format_string("M%08d", "id").alias("member_id"),
        F.lit("NYC-01").alias("market_id"),
        F.lit("sms").alias("channel"),
        F.format_string("+1212%07d", "id").alias("recipient"),
        F.format_string("CODE%08d", "id").alias("code"),
        F.lit("pool").alias("code_type"),
        F.lit("en_US").alias("locale"),
        F.lit(None).cast("string").alias("subject"),
        F.format_string("Your presale code CODE%08d", "id").alias("text"),
        F.lit("https://presale.example.com").alias("link"),
        F.lit(1).alias("sms_segments"),
        F.lit("GSM-7").alias("sms_encoding"),
        F.lit("A").alias("first_name"),
        F.lit("B").alias("last_name"),
        F.lit(None).cast("string").alias("email"),
        F.format_string("+1212%07d", "id").alias("mobile_number"),
        F.lit(False).alias("do_not_text"),
        F.lit(wave.notify_at).cast("timestamp").alias("notify_at"),
        F.lit("bench").alias("run_id"),
    )
    wh.append("wave_messages", spark.createDataFrame(messages.rdd, t.schema))
    row = {"campaign_id": cid, "wave_id": wave.wave_id, "notify_at": wave.notify_at, "status": "scheduled",
           "attempts": 0, "total": n, "sms": n, "email": 0, "sent": 0, "failed": 0, "skipped": 0,
           "planned_at": wave.notify_at, "run_id": "bench"}  # fmt: skip
    wh.append("waves", catalog_rows(spark, "waves", [row]))
    wh.ensure("pipeline_runs")  # as plan_waves' run would have left it: notify never creates it in use
    settings = {"max_in_flight": args.in_flight, "rate_per_second": args.rate}
    if args.chunk_size:
        settings["chunk_size"] = args.chunk_size
    token = "bench-" + os.urandom(6).hex()  # the simulator requires it, as a real gateway would
    os.environ[env.secrets.sms_token_env] = token
    with Gateway(args.latency, token) as gw:
        env = env.model_copy(update={"sms_gateway_url": gw.url, "notify": env.notify.model_copy(update=settings)})
        t0 = time.perf_counter()
        report = run_pipeline(spark, campaign, env, stages=["notify"], now=wave.notify_at + dt.timedelta(minutes=1),
                              out=io.StringIO()).rows[0][1]  # fmt: skip
        seconds = time.perf_counter() - t0
        seen = gw.figures()
        twice = sum(1 for v in seen["accepted"].values() if v > 1)
        sent = wh.read("notification_log", cid).where(F.col("status") == "sent").count()
        print(
            f"notify: {n:,} SMS, gateway latency {args.latency * 1000:.0f} ms, limits {args.rate:g}/s and "
            f"{args.in_flight} in flight, chunk {env.notify.chunk_size:,}: {seconds:.1f} s, {sent / seconds:.1f} "
            f"messages/s, at most {seen['max_concurrent']} in flight at the gateway, {twice} accepted twice, "
            f"{sent:,} sent"
        )
        print("  " + report.steps_line())
        starts = seen["starts"]
        pause = max(0.1, 3 / args.rate)  # a gap of three intervals or more is not the pace
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b - a > pause]
        busy = (starts[-1] - starts[0] - sum(gaps)) if len(starts) > 1 else 0.0
        if busy > 0:
            print(
                f"  gateway: first to last request {starts[-1] - starts[0]:.1f} s, {len(gaps)} pauses over "
                f"{pause:.2g} s ({sum(gaps):.1f} s, between chunks), {(len(starts) - 1 - len(gaps)) / busy:.1f} "
                f"starts/s between them, busiest second {seen['busiest_second']}"
            )
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0 if twice == 0 and sent == n else 1


if __name__ == "__main__":
    sys.exit(main())
