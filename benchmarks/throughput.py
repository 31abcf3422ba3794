"""What the throughput benchmarks share (phones_bench.py, render_bench.py): timed repeats of one
Spark action, and the markdown table of their medians and rates."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed_runs(action: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `action`."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        action()
        runs.append(time.perf_counter() - t0)
    return runs


def throughput_table(what: str, unit: str, rows: list[tuple[str, int, list[float]]]) -> str:
    """| what | unit | runs (s) | median (s) | unit/s | per (name, count, runs)."""
    lines = [f"| {what} | {unit} | runs (s) | median (s) | {unit}/s |", "|---|---:|---|---:|---:|"]
    for name, n, runs in rows:
        med = statistics.median(runs)
        lines.append(f"| {name} | {n:,} | {', '.join(f'{r:.1f}' for r in runs)} | {med:.1f} | {n / med:,.0f} |")
    return "\n".join(lines)
