"""`explain` on a benchmark warehouse: one fan from a cold process, and 1,000 fans through
--fans-file, each as the command a support agent types (targets: ≤ 3 s and ≤ 30 s).

    python benchmarks/explain_bench.py --warehouse <work>/warehouse --campaign <work>/landing/bench.yaml

Fans are drawn from the warehouse's registrants (every 1000th id), so the figures do not depend
on one lucky fan; the median of --repeats single lookups is reported, and one `--spark` lookup
for comparison. Appends a section to benchmarks/RESULTS.md with --write.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).parent / "campaign-pipeline"), "explain"]


def _fans(warehouse: str, campaign_id: str, n: int) -> list[str]:
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    files = DeltaTable(f"{warehouse}/registrants").file_uris(file_pruning_predicate=[("campaign_id", "=", campaign_id)])
    ids = sorted(ds.dataset(files, format="parquet").to_table(columns=["global_user_id"]).column(0).to_pylist())
    return ids[:: max(1, len(ids) // n)][:n]


def _timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--campaign", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()

    from campaign_pipeline.config import load_campaign

    cid = load_campaign(args.campaign).campaign_id
    base = [*CLI, "--campaign", args.campaign, "--warehouse", args.warehouse]
    fans = _fans(args.warehouse, cid, max(args.batch, args.repeats))
    singles = []
    for fan in fans[:: max(1, len(fans) // args.repeats)][: args.repeats]:
        seconds, proc = _timed([*base, "--fan", fan])
        assert proc.returncode == 0, proc.stderr
        singles.append(seconds)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(fans[: args.batch]) + "\n")
    batch_seconds, proc = _timed([*base, "--fans-file", f.name])
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == args.batch
    spark_seconds, proc = _timed([*base, "--fan", fans[0], "--spark"])
    assert proc.returncode == 0, proc.stderr

    lines = [
        f"explain on {args.warehouse} (campaign {cid}):",
        f"- one fan, cold process (delta-rs): median {statistics.median(singles):.2f} s of {len(singles)}"
        f" (min {min(singles):.2f}, max {max(singles):.2f})",
        f"- {args.batch:,} fans through --fans-file: {batch_seconds:.1f} s",
        f"- one fan with --spark (JVM, Spark session, Delta scans): {spark_seconds:.1f} s",
    ]
    print("\n".join(lines))
    if args.write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as out:
            out.write("\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
