"""Scale benchmarks (`make bench`): synth a campaign, then time each stage over several runs.

    python benchmarks/run.py [--registrants 2000000] [--repeats 3] [--stages ingest,screen]
                             [--reference ../shared/bench] [--write-results]

Each repeat runs the stages into a fresh warehouse (re-running a stage on unchanged inputs is a
no-op, which would measure nothing). The default is the whole run, ingest through report, as
`campaign-pipeline run` does it on the day before the first wave (so notify finds no wave due and
sends nothing: the benchmark needs no gateway). Before each repeat, in the same invocation and on the
same landing files, it runs the reference measurements when `--reference` holds them: the Spark
floor (`spark_floor.py`: read every registration, one shuffle on the fan id, one Delta write) and
the DuckDB peer (`peer_duckdb.py`: the decision chain in SQL). Every stage's time is printed as a
ratio to that repeat's floor (ingest per input row: it reads fan activity too). Prints seconds
per run, the median, rows/s and the ratios; `--write-results` also puts the table at the top of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"mixed": "registrations half CSV, half JSON lines", "json": "registrations as JSON lines"}


def _reference(script: Path, args: list[str], key: str) -> tuple[float | None, str]:
    """Run a reference script in its own process; (seconds it reports under `key`, its output).

    A reference that fails (the DuckDB peer was once killed for memory at 10M registrants on 24 GiB)
    gives None and the reason: the chain is still measured, the table says the peer did not finish.
    """
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    found = re.search(rf"{key}=([0-9.]+)", proc.stdout)
    if proc.returncode != 0 or not found:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        if proc.returncode == -9:
            why += " (the kernel's out-of-memory killer, most likely)"
        print(f"{script.name} failed, {why}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}", file=sys.stderr)
        return None, why
    return float(found.group(1)), proc.stdout


def replace_section(text: str, name: str, body: str) -> str:
    """RESULTS.md with the table between `<!-- bench:NAME start -->` and its end marker replaced
    (one current table per benchmark); a new size gets its own section at the end."""
    start, end = f"<!-- bench:{name} start -->", f"<!-- bench:{name} end -->"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        return f"{head}{start}\n{body}\n{end}{tail}"
    return (
        f"{text.rstrip()}\n\n## The whole run at {name.removeprefix('chain-')} registrants\n\n{start}\n{body}\n{end}\n"
    )


def _jvm_peak_mib(spark) -> float | None:
    """The driver JVM's peak resident memory (Linux VmHWM), or None where /proc cannot tell."""
    try:
        pid = spark.sparkContext._gateway.proc.pid  # the JVM PySpark launched (spark-submit execs java)
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (AttributeError, OSError, ValueError):
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    from campaign_pipeline.pipeline import PIPELINE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrants", type=int, default=int(os.environ.get("BENCH_REGISTRANTS", 2_000_000)))
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument(
        "--registrations-format",
        default="mixed",
        help="the registration files' format (synth's choices; default mixed: half CSV, half JSON lines)",
    )
    parser.add_argument(
        "--capacity-ratio",
        type=float,
        default=0.35,
        help="codes per registrant (default 0.35); e.g. 0.005 for a campaign that selects few fans out of many",
    )
    parser.add_argument("--repeats", type=int, default=3)
    chain = [s.name for s in PIPELINE]
    parser.add_argument("--stages", default=",".join(chain), help="default: the whole run, ingest through report")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "campaign-pipeline-bench"))
    parser.add_argument(
        "--reference",
        default=os.environ.get("BENCH_REFERENCE", str(ROOT.parent / "shared" / "bench")),
        help="folder with spark_floor.py and peer_duckdb.py (skipped when absent)",
    )
    parser.add_argument(
        "--lineage",
        choices=("checkpoint", "local_checkpoint", "persist"),
        help="the environment's lineage policy (default: the local environment's)",
    )
    parser.add_argument("--event-log", help="write Spark's event log into this folder")
    parser.add_argument("--write-results", action="store_true", help="put the table at the top of RESULTS.md")
    parser.add_argument(
        "--reuse-landing",
        action="store_true",
        help="keep the landing files of an earlier run with the same size and seed instead of synthesizing again",
    )
    args = parser.parse_args(argv)

    from campaign_pipeline.config import load_campaign, load_environment
    from campaign_pipeline.runner import run_pipeline
    from campaign_pipeline.session import build_session
    from campaign_pipeline.synth import SynthSpec, generate
    from campaign_pipeline.waves.membership import day_before_first_wave

    work = Path(args.work)
    env = load_environment("local").with_roots(str(work / "landing"), str(work / "warehouse"))
    if args.lineage:
        env = env.model_copy(update={"lineage": args.lineage})
    if args.event_log:  # Spark's event log: every job's description and duration, for finding where time goes
        Path(args.event_log).mkdir(parents=True, exist_ok=True)
        conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(Path(args.event_log).resolve())}
        env = env.model_copy(update={"spark": env.spark.model_copy(update={"conf": {**env.spark.conf, **conf}})})
    spark = build_session(env, app_name="campaign-pipeline bench")
    spark.sparkContext.setLogLevel("ERROR")

    spec = SynthSpec(
        campaign_id="bench",
        registrants=args.registrants,
        markets=args.markets,
        registrations_format=args.registrations_format,
        capacity_ratio=args.capacity_ratio,
    )
    stamp = work / "landing" / f"{spec.campaign_id}.spec"
    if args.reuse_landing and stamp.is_file() and stamp.read_text() == repr(spec):
        from campaign_pipeline.synth import SynthOutput, output_paths

        landing_dir, truth, yaml_path = output_paths(spec, str(work / "landing"))
        campaign = load_campaign(yaml_path)
        out = SynthOutput(str(landing_dir), str(truth), str(yaml_path), campaign)
        print(f"synth: reusing {landing_dir} ({args.registrants:,} registrants, {args.markets} markets)")
    else:
        t0 = time.perf_counter()
        stamp.unlink(missing_ok=True)
        out = generate(spark, spec, str(work / "landing"))
        stamp.write_text(repr(spec))
        print(f"synth {args.registrants:,} registrants, {args.markets} markets: {time.perf_counter() - t0:.1f} s")
        campaign = load_campaign(out.campaign_yaml)
    stages = [s.strip() for s in args.stages.split(",")]

    timings: dict[str, list[float]] = {s: [] for s in stages}  # plus "<stage>: <step>" entries
    rows: dict[str, int] = {}
    reference = Path(args.reference)
    floor_script, peer_script = reference / "spark_floor.py", reference / "peer_duckdb.py"
    floors: list[float] = []
    peers: list[float] = []
    peer_failures: list[str] = []
    whole: list[float] = []
    landing = str(work / "landing" / campaign.campaign_id)
    for i in range(args.repeats):
        if floor_script.is_file():
            floor, why = _reference(
                floor_script, [landing, str(work / "floor"), "--jars", str(ROOT / "jars")], "floor_s"
            )
            if floor is None:
                raise SystemExit(f"spark_floor.py failed ({why}): the ratios need the floor")
            floors.append(floor)
            shutil.rmtree(work / "floor", ignore_errors=True)
        if peer_script.is_file():
            peer, why = _reference(peer_script, [landing, out.campaign_yaml, "--threads", "2"], "peer_total_s")
            if peer is None:
                peer_failures.append(why)
            else:
                peers.append(peer)
        if floors or peers or peer_failures:
            print(
                f"repeat {i + 1}: floor {floors[-1] if floors else 0:.1f} s, DuckDB peer "
                + (f"{peers[-1]:.1f} s" if peers else f"failed: {peer_failures[-1]}" if peer_failures else "-")
            )
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
            elif name == "screen":  # the graphs' figures: rounds, the weak-link step's pairs and hot blocks
                print("  [screen] " + "\n  ".join(x for x in result.summary if x.startswith(("identity", "weak"))))
            for step, seconds in result.steps.items():
                timings.setdefault(f"{name}: {step}", []).append(seconds)
                rows[f"{name}: {step}"] = rows[name]
        total = sum(s for _, _, s in report.rows)
        whole.append(total)
        print(f"repeat {i + 1}: " + ", ".join(f"{n} {s:.1f} s" for n, _, s in report.rows) + f"; total {total:.1f} s")

    floor = statistics.median(floors) if floors else None
    input_rows = rows.get("ingest", args.registrants)
    table = ["| stage | rows | runs (s) | median (s) | rows/s | × floor |", "|---|---:|---|---:|---:|---:|"]
    for name, values in timings.items():
        med = statistics.median(values)
        ratio = ""
        if floors:
            # ratio per repeat against that repeat's floor; ingest per input row (it reads more rows)
            scale = (input_rows / args.registrants) if name.startswith("ingest") else 1.0
            ratio = f"{statistics.median(v / (f * scale) for v, f in zip(values, floors, strict=False)):.2f}"
        table.append(
            f"| {name} | {rows[name]:,} | {', '.join(f'{v:.1f}' for v in values)} | {med:.1f} "
            f"| {rows[name] / med:,.0f} | {ratio} |"
        )
    med_whole = statistics.median(whole)
    table.append(
        f"| **whole run** | {args.registrants:,} | {', '.join(f'{v:.1f}' for v in whole)} | **{med_whole:.1f}** | "
        f"| {med_whole / floor:.2f} |"
        if floor
        else f"| **whole run** | | | **{med_whole:.1f}** | | |"
    )
    if floors:
        table.append(f"| floor (`spark_floor.py`) | {args.registrants:,} | {', '.join(f'{v:.1f}' for v in floors)} "
                     f"| {floor:.1f} | | 1.00 |")  # fmt: skip
    if peer_failures:
        table.append(
            f"| DuckDB peer (`peer_duckdb.py`) | {args.registrants:,} | did not finish: {'; '.join(peer_failures)} | | | |"
        )
    if peers:
        table.append(
            f"| DuckDB peer (`peer_duckdb.py`) | {args.registrants:,} | {', '.join(f'{v:.1f}' for v in peers)} "
            f"| {statistics.median(peers):.1f} | | {statistics.median(peers) / floor:.2f} |"
            if floor
            else ""
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    jvm_peak = _jvm_peak_mib(spark)
    # In local mode the executors' tasks run in the driver JVM too.
    memory = (
        f"Peak memory of the driver: Python {peak:,.0f} MiB; JVM "
        + (f"{jvm_peak:,.0f} MiB resident (VmHWM)" if jvm_peak else "not measured")
        + f", spark.driver.memory {spark.conf.get('spark.driver.memory', '1g')}."
    )
    table += ["", memory]
    print("\n" + "\n".join(table))
    if args.write_results:
        results = ROOT / "benchmarks" / "RESULTS.md"
        body = (
            f"`python benchmarks/run.py {' '.join(sys.argv[1:])}`: {args.registrants:,} registrants "
            f"({FORMATS.get(args.registrations_format, f'registrations as {args.registrations_format.upper()}')}), {args.markets} "
            f"markets, stages {' → '.join(stages) if len(stages) < 3 else f'{stages[0]} → {stages[-1]}'}, "
            f"{args.repeats} repeat(s) beside the floor and the DuckDB peer. Taken {dt.date.today().isoformat()}."
            "\n\n" + "\n".join(table)
        )
        results.write_text(replace_section(results.read_text(), f"chain-{args.registrants}", body))
        print(f"written to {results}")
    if "screen" in stages:
        from campaign_pipeline.synth.scorecard import screening_quality
        from campaign_pipeline.warehouse import Warehouse

        registrants = Warehouse(spark, env.warehouse_root).read("registrants", campaign.campaign_id)
        quality = screening_quality(registrants, spark.read.parquet(out.truth))
        print("\nscreening quality against the ground truth: " + ", ".join(f"{k} {v}" for k, v in quality.items()))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
