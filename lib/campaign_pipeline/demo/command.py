"""`campaign-pipeline demo`: synthesise a campaign, run every stage into a local warehouse, send its
first wave to local services (`services.py`) and write the report."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from campaign_pipeline.cli import Verb, local_root, spark_session
from campaign_pipeline.config import load_campaign, load_environment


def _arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--registrants", type=int, default=200_000)
    demo.add_argument("--markets", type=int, default=12)
    demo.add_argument(
        "--warehouse", default=None, help="warehouse root (default: the local environment's, ./warehouse)"
    )
    demo.add_argument(
        "--all-waves",
        action="store_true",
        help="send every wave (default: the first wave, as of just after it is due; the others stay planned)",
    )


def _run(args) -> int:
    from campaign_pipeline.catalog import CATALOG
    from campaign_pipeline.pipeline import PIPELINE
    from campaign_pipeline.runner import run_pipeline
    from campaign_pipeline.synth import SynthSpec, generate
    from campaign_pipeline.warehouse import Warehouse

    env = load_environment(args.env).with_roots(warehouse=args.warehouse)
    # The generated landing files beside the warehouse's own folders (`_reports`, `_checkpoints`):
    # two demos into two warehouses never share them (one shared temp folder did).
    work = (local_root(env.warehouse_root) or Path(tempfile.mkdtemp(prefix="campaign-pipeline-demo-"))) / "_demo"
    env = env.with_roots(landing=str(work / "landing"))
    spark = spark_session(env, "campaign-pipeline demo")
    t0 = time.perf_counter()
    out = generate(spark, SynthSpec(registrants=args.registrants, markets=args.markets), str(work / "landing"))
    synth_seconds = time.perf_counter() - t0
    print(f"synth: {args.registrants:,} registrants → {out.landing} · {synth_seconds:.1f} s")
    campaign = load_campaign(out.campaign_yaml)
    wh = Warehouse(spark, env.warehouse_root)
    # The demo starts its own campaign afresh; other campaigns in the warehouse are untouched. The
    # tables are independent: their deletes run side by side (each is mostly Delta's log work).
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="demo-reset") as reset:
        earlier = sum(reset.map(lambda name: wh.delete(name, f"campaign_id = '{campaign.campaign_id}'"), CATALOG))
    if earlier:  # a re-run: say what the pause was (~10 s, mostly Delta's log work)
        cleared = f"{earlier} tables · {time.perf_counter() - t0:.1f} s"
        print(f"removed campaign {campaign.campaign_id}'s earlier rows, if any, from {cleared}")
    from campaign_pipeline.waves.membership import day_before_first_wave

    now = day_before_first_wave(campaign)
    print(f"decision time: {now:%Y-%m-%d %H:%M %Z} (the day before the first wave)")
    # Every stage but the report now; the report comes last, after the demo has sent its waves.
    stages = [s.name for s in PIPELINE if s.name != "report"]
    report = run_pipeline(spark, campaign, env, stages=stages, from_start=True, now=now)
    print("\nsummary")
    print(f"  {'stage':<14}{'rows':>14}{'seconds':>10}")
    print(f"  {'synth':<14}{args.registrants:>14,}{synth_seconds:>10.1f}")
    for name, result, seconds in report.rows:
        print(f"  {name:<14}{result.rows():>14,}{seconds:>10.1f}")
    print(f"\ntables for campaign {campaign.campaign_id} under {Path(env.warehouse_root).resolve()}:")
    from pyspark.sql import functions as F

    from campaign_pipeline.frames import union_all

    per_table = [  # every table's count in one Spark job
        wh.read(name, campaign.campaign_id).agg(F.count(F.lit(1)).alias("n")).select(F.lit(name).alias("t"), "n")
        for name in CATALOG
        if wh.exists(name)
    ]
    counts = {r["t"]: r["n"] for r in union_all(per_table).collect()} if per_table else {}
    for name in CATALOG:
        if counts.get(name):
            print(f"  {name:<18}{counts[name]:>12,} rows  {wh.path(name)}")
    if wh.exists("registrants"):
        from campaign_pipeline.synth.scorecard import screening_quality

        quality = screening_quality(wh.read("registrants", campaign.campaign_id), spark.read.parquet(out.truth))
        print("\nscreening against the synthetic ground truth:")
        labels = {
            "ring_ineligible": "planted ring accounts ineligible",
            "clean_genuine_eligible": "clean genuine accounts eligible",
            "multi_account_persons_keep_one": "multi-account persons keeping exactly one account",
            "blocked_ineligible": "blocked / disposable / international ineligible",
            "allowlisted_eligible": "allow-listed accounts kept",
            "phone_e164_match": "valid planted phones normalised to the true E.164",
            "stealth_ineligible": "stealth-ring accounts ineligible (stealth recall)",
        }
        for key, label in labels.items():
            value = quality.get(key)
            print(f"  {label:<52} {'n/a' if value is None else f'{value:.2%}'}")
        found = {k[6:]: v for k, v in quality.items() if k.startswith("found:") and v is not None}
        print("  planted tags found: " + ", ".join(f"{tag} {v:.2%}" for tag, v in found.items()))
        decoys = {k[15:]: v for k, v in quality.items() if k.startswith("decoy_eligible:") and v is not None}
        if decoys:
            print("  decoys kept eligible: " + ", ".join(f"{kind} {v:.2%}" for kind, v in decoys.items()))
    print(f"\nrun id {report.run_id}; campaign config {out.campaign_yaml}")
    last = _demo_notify(spark, campaign, env, all_waves=args.all_waves) or now
    import io

    reported = run_pipeline(spark, campaign, env, stages=["report"], now=last, out=io.StringIO())
    print(f"\ncampaign report ({reported.rows[0][2]:.1f} s): {reported.rows[0][1].summary[0].removeprefix('report: ')}")
    return 0


def _demo_notify(spark, campaign, env, all_waves: bool = False) -> dt.datetime | None:
    """The demo's last step: send the first wave (every wave with `all_waves`) as of just after it
    is due, to a gateway simulator and a local SQS (a moto server) started in a process of their
    own, then print what was delivered. Later waves stay planned, as they would until their notify
    time."""
    import importlib.util
    import io

    from campaign_pipeline.demo.services import LocalServices
    from campaign_pipeline.runner import run_pipeline

    if importlib.util.find_spec("moto") is None:
        print("\nnotify: skipped (the local SQS needs moto: make install sets it up)")
        return None
    token_variable = env.secrets.sms_token_env
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", token_variable)
    saved = {k: os.environ.get(k) for k in names}
    token = "demo-" + os.urandom(8).hex()  # the local gateway's own token, as a real one would have
    try:
        with LocalServices(token=token) as services:
            endpoint = services.sqs_endpoint
            os.environ.update(
                {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                 token_variable: token}
            )  # fmt: skip
            local = env.model_copy(
                update={
                    "sms_gateway_url": services.gateway_url,
                    "email_queue_url": services.queue_url,
                    "aws_region": "us-east-1",
                    # a local simulator, not a real gateway: the demo may send faster than production
                    "notify": env.notify.model_copy(update={"rate_per_second": 5000, "max_in_flight": 100}),
                }
            )
            due = sorted({w.notify_at for w in campaign.waves})
            now = (due[-1] if all_waves else due[0]) + dt.timedelta(minutes=1)
            print(
                f"\nnotify as of {now:%Y-%m-%d %H:%M %Z}: gateway simulator {services.gateway_url},"
                f" local SQS {endpoint}"
            )
            t0 = time.perf_counter()
            result = run_pipeline(spark, campaign, local, stages=["notify"], now=now, out=io.StringIO()).rows[0][1]
            seconds = time.perf_counter() - t0
            received, distinct = services.mail_counts()
        c = result.counts
        print(
            f"  SMS: {c.get('sms:sent', 0):,} sent, {c.get('sms:failed', 0):,} failed · "
            f"email: {c.get('email:sent', 0):,} queued, {c.get('email:failed', 0):,} failed · {seconds:.1f} s"
        )
        again = received - distinct
        print(
            f"  local mail worker: {distinct:,} emails taken off the queue"
            + (f" ({again:,} delivered twice, as SQS may)" if again else "")
        )
        for line in result.summary:
            print(f"  {line}")
        if any(w.notify_at > now for w in campaign.waves):  # the summary above names them
            print(
                "  later waves stay planned until they are due: `campaign-pipeline demo --all-waves` sends"
                " every wave; in production a scheduled `notify --due` sends each"
            )
        return now
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


DEMO = Verb("demo", "synthesise a campaign and run every stage into ./warehouse", _arguments, _run)
