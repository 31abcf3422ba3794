"""Scale benchmarks (`make bench`): synth a campaign, then time each stage over several runs.

    python benchmarks/run.py [--registrants 2000000] [--repeats 3] [--stages ingest,screen]

Each repeat runs the stages into a fresh warehouse (re-running a stage on unchanged inputs is a
no-op, which would measure nothing). The default is the whole pipeline (`campaign_pipeline.pipeline.PIPELINE`). Prints seconds per run, the median, and rows/s; paste the table into
benchmarks/RESULTS.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from campaign_pipeline.pipeline import PIPELINE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrants", type=int, default=int(os.environ.get("BENCH_REGISTRANTS", 2_000_000)))
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", default=",".join(s.name for s in PIPELINE), help="default: the whole pipeline")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "campaign-pipeline-bench"))
    args = parser.parse_args(argv)

    from campaign_pipeline.config import load_campaign, load_environment
    from campaign_pipeline.runner import run_pipeline
    from campaign_pipeline.session import build_session
    from campaign_pipeline.synth import SynthSpec, generate
    from campaign_pipeline.waves.membership import day_before_first_wave

    work = Path(args.work)
    env = load_environment("local").with_roots(str(work / "landing"), str(work / "warehouse"))
    spark = build_session(env, app_name="campaign-pipeline bench")
    spark.sparkContext.setLogLevel("ERROR")

    t0 = time.perf_counter()
    out = generate(
        spark, SynthSpec(campaign_id="bench", registrants=args.registrants, markets=args.markets), str(work / "landing")
    )
    synth_seconds = time.perf_counter() - t0
    print(f"synth {args.registrants:,} registrants, {args.markets} markets: {synth_seconds:.1f} s")
    campaign = load_campaign(out.campaign_yaml)
    stages = [s.strip() for s in args.stages.split(",")]

    timings: dict[str, list[float]] = {s: [] for s in stages}  # plus "<stage>: <step>" entries
    rows: dict[str, int] = {}
    for i in range(args.repeats):
        shutil.rmtree(work / "warehouse", ignore_errors=True)
        report = run_pipeline(
            spark, campaign, env, stages=stages, from_start=True, out=open(os.devnull, "w"),
            now=day_before_first_wave(campaign),
        )  # fmt: skip
        for name, result, seconds in report.rows:
            timings[name].append(seconds)
            rows[name] = result.rows(default=args.registrants)
            if name not in ("ingest", "screen"):
                print(f"  [{name}] " + "\n  ".join(result.summary[:16]))
            for step, seconds in result.steps.items():
                timings.setdefault(f"{name}: {step}", []).append(seconds)
                rows[f"{name}: {step}"] = rows[name]
        total = sum(s for _, _, s in report.rows)
        print(f"repeat {i + 1}: " + ", ".join(f"{n} {s:.1f} s" for n, _, s in report.rows) + f"; total {total:.1f} s")

    print("\n| stage | rows | runs (s) | median (s) | rows/s |\n|---|---:|---|---:|---:|")
    for name, values in timings.items():
        med = statistics.median(values)
        print(
            f"| {name} | {rows[name]:,} | {', '.join(f'{v:.1f}' for v in values)} | {med:.1f} | {rows[name] / med:,.0f} |"
        )
    if "screen" in stages:
        from campaign_pipeline.screening.quality import screening_quality
        from campaign_pipeline.tables import Warehouse

        registrants = Warehouse(spark, env.warehouse_root).read("registrants", campaign.campaign_id)
        quality = screening_quality(registrants, spark.read.parquet(out.truth))
        print("\nscreening quality against the ground truth: " + ", ".join(f"{k} {v}" for k, v in quality.items()))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
