"""The report's charts: static SVG drawn by matplotlib (no script, no network, prints as vectors).

Every chart returns `Chart(key, title, svg, points)`; `points` is how many data points it plots
(0 draws a "no data yet" panel). Text stays text in the SVG (`svg.fonttype: none`), which keeps
each chart a few kilobytes; `svg.hashsalt` and no date make the same figures give the same file.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass

from campaign_pipeline.report.figures import SCORE_BINS, Figures

PALETTE = ["#1b6ca8", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f", "#bab0ac"]
STATUS_COLOURS = {"sent": "#59a14f", "failed": "#e15759", "skipped": "#bab0ac"}


@dataclass
class Chart:
    key: str
    title: str
    svg: str
    points: int


def _plt():
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "svg.hashsalt": "campaign-report",
            "font.family": "sans-serif",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 10,
        }
    )
    return plt


def _svg(fig) -> str:
    plt = _plt()
    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = out.getvalue()
    text = text[text.index("<svg") :]  # inline: no XML declaration or doctype
    # matplotlib's RDF metadata block (and its namespaces) says nothing a reader needs
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    return re.sub(r'\s+xmlns:(?:cc|dc|rdf)="[^"]*"', "", text)


def _counts_axis(axis) -> None:
    """Whole counts with thousands separators (never matplotlib's `1e6` offset)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def _market_height(n: int, per_market: float = 0.3, rest: float = 1.0) -> float:
    """Inches for a chart with one row per market: every market keeps the room of its label, so
    50 markets stay as readable as 5."""
    return max(2.4, per_market * n + rest)


def _market_labels(ax, key: str, y: list[float], labels: list[str]) -> None:
    """Market ids as the y tick labels (horizontal bars: labels never collide however many);
    each label gets an id (`<chart>-market-label-<i>`) so a browser test can measure it."""
    ax.set_yticks(y, labels, fontsize=8)
    for i, label in enumerate(ax.get_yticklabels()):
        label.set_gid(f"{key}-market-label-{i}")


def _bar_counts(ax, bars, texts: list[str], top: float) -> None:
    """A count at the end of every bar."""
    for bar, text in zip(bars, texts, strict=True):
        ax.text(bar.get_x() + bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, text,
                va="center", fontsize=7)  # fmt: skip


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def _hbars(ax, labels: list[str], values: list[int], colour: str = PALETTE[0]) -> None:
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colour)
    ax.set_yticks(y, labels)
    top = max(values) if values else 0
    for yy, v in zip(y, values, strict=True):
        ax.text(v + top * 0.01, yy, f"{v:,}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15 or 1)
    _counts_axis(ax.xaxis)


def funnel(fig_: Figures) -> Chart:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels, values = list(fig_.funnel), list(fig_.funnel.values())
    _hbars(ax, labels, values)
    ax.set_xlabel("count")
    return Chart(
        "funnel", "The funnel: from registration rows to messages sent", _svg(fig), sum(1 for v in values if v)
    )


def score_distribution(fig_: Figures) -> Chart:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    bands = [*fig_.bands, "below every band"]
    width = 1 / SCORE_BINS
    bottom = [0] * SCORE_BINS
    points = 0
    for i, band in enumerate(bands):
        counts = [0] * SCORE_BINS
        for r in fig_.score_histogram:
            if r["band"] == band:
                counts[r["bin"]] += r["fans"]
        if not any(counts):
            continue
        points += sum(1 for c in counts if c)
        ax.bar([b * width for b in range(SCORE_BINS)], counts, width=width * 0.95, bottom=bottom, align="edge",
               color=PALETTE[i % len(PALETTE)], label=band)  # fmt: skip
        bottom = [a + b for a, b in zip(bottom, counts, strict=True)]
    if points:
        ax.set_xlim(0, 1)
        ax.set_xlabel("raw score")
        ax.set_ylabel("fans")
        _counts_axis(ax.yaxis)
        ax.legend(title="band", fontsize=8, frameon=False)
    else:
        _empty(ax, "scores")
    return Chart("scores", "Score distribution per band", _svg(fig), points)


def capacity(fig_: Figures) -> Chart:
    plt = _plt()
    markets = fig_.markets
    fig, ax = plt.subplots(figsize=(7, _market_height(len(markets), 0.42, 1.2)))
    y = list(range(len(markets)))[::-1]
    top = max([m["capacity"] for m in markets] + [1])
    ax.barh(y, [m["capacity"] for m in markets], height=0.84, color="none", edgecolor="#555", label="capacity")
    selected = ax.barh([v + 0.2 for v in y], [m["selected"] for m in markets], height=0.4, color=PALETTE[0],
                       label="selected")  # fmt: skip
    coded = ax.barh([v - 0.2 for v in y], [m["coded"] for m in markets], height=0.4, color=PALETTE[2], label="coded")
    _bar_counts(ax, selected, [f"{m['selected']:,} of {m['capacity']:,}" for m in markets], top)
    _bar_counts(ax, coded, [f"{m['coded']:,}" for m in markets], top)
    _market_labels(ax, "capacity", y, [m["market_id"] for m in markets])
    ax.set_ylim(-0.6, len(markets) - 0.4)
    ax.set_xlim(0, top * 1.3)
    ax.set_xlabel("fans")
    _counts_axis(ax.xaxis)
    ax.legend(fontsize=8, frameon=False, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    points = sum(1 for m in markets if m["selected"] or m["coded"])
    return Chart("capacity", "Selected and coded fans against capacity, per market", _svg(fig), points)


def fairness(fig_: Figures) -> Chart:
    plt = _plt()
    bands, markets = fig_.band_rates, fig_.markets
    fig, (upper, lower) = plt.subplots(
        2, 1, figsize=(7, _market_height(len(bands) + len(markets), 0.3, 1.6)),
        gridspec_kw={"height_ratios": [max(1, len(bands)), max(1, len(markets))]},
    )  # fmt: skip
    yb = list(range(len(bands)))[::-1]
    drawn = upper.barh(yb, [b["rate"] * 100 for b in bands], color=PALETTE[1])
    _bar_counts(upper, drawn, [f"{b['rate']:.1%} ({b['selected']:,} of {b['candidates']:,})" for b in bands], 100)
    upper.set_yticks(yb, [b["band"] for b in bands], fontsize=8)
    upper.set_title("per band", fontsize=9, loc="left")
    ym = list(range(len(markets)))[::-1]
    drawn = lower.barh(ym, [m["rate"] * 100 for m in markets], color=PALETTE[0])
    texts = [f"{m['rate']:.1%} ({m['first_choice_selected']:,} of {m['first_choice_eligible']:,})" for m in markets]
    _bar_counts(lower, drawn, texts, 100)
    _market_labels(lower, "fairness", ym, [m["market_id"] for m in markets])
    lower.set_ylim(-0.6, len(markets) - 0.4)
    lower.set_title("per market (first choice)", fontsize=9, loc="left")
    lower.set_xlabel("% of eligible scored fans selected")
    for ax in (upper, lower):
        ax.set_xlim(0, 130)
        ax.set_xticks([0, 25, 50, 75, 100])
    points = sum(1 for b in bands if b["candidates"]) + sum(1 for m in markets if m["first_choice_eligible"])
    return Chart("fairness", "Selection rate per band and per market (the fairness view)", _svg(fig), points)


def reasons(fig_: Figures) -> Chart:
    plt = _plt()
    items = list(fig_.reasons.items())[:15]
    fig, ax = plt.subplots(figsize=(7, max(1.6, 0.3 * len(items) + 0.6)))
    if items:
        _hbars(ax, [k for k, _ in items], [v for _, v in items], PALETTE[3])
        ax.set_xlabel("registrants (a registrant may have several reasons)")
    else:
        _empty(ax, "ineligible registrants")
    return Chart("reasons", "Reasons for ineligibility", _svg(fig), len(items))


def clusters(fig_: Figures) -> Chart:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 2.8))
    rows = fig_.clusters
    ax.bar([r["size"] for r in rows], [r["clusters"] for r in rows], color=PALETTE[4])
    if any(r["clusters"] for r in rows):
        ax.set_yscale("log")
    ax.set_xlabel("accounts per identity cluster")
    ax.set_ylabel("clusters (log scale)")
    return Chart("clusters", "Identity-cluster sizes", _svg(fig), sum(1 for r in rows if r["clusters"]))


def delivery(fig_: Figures) -> Chart:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    series: dict[tuple[str, str], list] = {}
    for r in fig_.delivery:
        series.setdefault((r["channel"], r["status"]), []).append((r["hour"], r["messages"]))
    styles = {"sms": "-", "email": "--"}
    for (channel, status), values in sorted(series.items()):
        hours, total, points = [], 0, []
        for hour, n in sorted(values):
            total += n
            hours.append(hour)
            points.append(total)
        ax.step(hours, points, where="post", marker="o", markersize=3, linestyle=styles.get(channel, ":"),
                color=STATUS_COLOURS.get(status, "#333"), label=f"{channel} {status}")  # fmt: skip
    if series:
        hours = sorted({r["hour"] for r in fig_.delivery})
        if len(hours) == 1:  # one hour of sending: an hour either side, not matplotlib's years
            ax.set_xlim(hours[0] - dt.timedelta(hours=1), hours[0] + dt.timedelta(hours=1))
        ax.set_ylabel("messages (cumulative)")
        _counts_axis(ax.yaxis)
        ax.legend(fontsize=8, frameon=False)
        fig.autofmt_xdate()
    else:
        _empty(ax, "messages sent")
    return Chart("delivery", "Delivery results over time, per channel", _svg(fig), len(fig_.delivery))


def trends(fig_: Figures) -> Chart:
    """The funnel and delivery over the report runs (`campaign_stats`), this run last; one point
    per run, evenly spaced, labelled with its time (runs minutes or weeks apart read alike)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 2.8))
    panels = {
        left: ("registrants", "eligible", "selected", "coded"),
        right: ("messages planned", "messages sent", "messages failed"),
    }
    runs = sorted({r["computed_at"] for r in fig_.trend})
    at = {when: i for i, when in enumerate(runs)}
    for ax, steps in panels.items():
        for i, step in enumerate(steps):
            values = sorted((r["computed_at"], r["value"]) for r in fig_.trend if r["step"] == step)
            if values:
                ax.plot([at[v[0]] for v in values], [v[1] for v in values], marker="o", markersize=3,
                        color=PALETTE[i % len(PALETTE)], label=step)  # fmt: skip
        _counts_axis(ax.yaxis)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, frameon=False)
        shown = sorted({round(k * (len(runs) - 1) / 4) for k in range(5)}) if len(runs) > 5 else range(len(runs))
        ax.set_xticks(list(shown), [f"{runs[k]:%m-%d %H:%M}" for k in shown], fontsize=7, rotation=30, ha="right")
        ax.set_xlim(-0.5, max(len(runs) - 0.5, 0.5))
    left.set_title("funnel", fontsize=9, loc="left")
    right.set_title("delivery", fontsize=9, loc="left")
    return Chart("trends", "The campaign across report runs", _svg(fig), len(runs))


def ingest(fig_: Figures) -> Chart:
    """Per landing file: rows ingested and quarantined (a line read is one or the other)."""
    plt = _plt()
    files = fig_.ingest_files
    fig, ax = plt.subplots(figsize=(7, _market_height(len(files), 0.3, 0.9)))
    if files:
        y = list(range(len(files)))[::-1]
        top = max([f["lines"] for f in files] + [1])
        ax.barh(y, [f["ingested"] for f in files], color=PALETTE[2], label="ingested")
        ax.barh(y, [f["quarantined"] for f in files], left=[f["ingested"] for f in files], color=PALETTE[3],
                label="quarantined")  # fmt: skip
        for yy, f in zip(y, files, strict=True):
            ax.text(f["ingested"] + f["quarantined"] + top * 0.01, yy,
                    f"{f['ingested']:,} ingested · {f['quarantined']:,} quarantined", va="center", fontsize=7)  # fmt: skip
        ax.set_yticks(y, [f["file"] for f in files], fontsize=8)
        ax.set_xlim(0, top * 1.6)
        ax.set_xlabel("lines read")
        _counts_axis(ax.xaxis)
        ax.legend(fontsize=8, frameon=False, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    else:
        _empty(ax, "landing files ingested")
    return Chart("ingest", "Landing files: lines ingested and quarantined", _svg(fig), len(files))


def quality(fig_: Figures) -> Chart:
    plt = _plt()
    tables: dict[str, dict[str, int]] = {}
    for q in fig_.quality:
        outcome = "passed" if q["success"] else ("critical" if q["severity"] == "critical" else "warning")
        counts = tables.setdefault(q["table"], {"passed": 0, "warning": 0, "critical": 0})
        counts[outcome] += 1
    names = list(tables)
    fig, ax = plt.subplots(figsize=(7, max(1.6, 0.32 * len(names) + 0.8)))
    if names:
        y = list(range(len(names)))[::-1]
        left = [0] * len(names)
        for outcome, colour in (("passed", "#59a14f"), ("warning", "#f2b33d"), ("critical", "#e15759")):
            values = [tables[n][outcome] for n in names]
            ax.barh(y, values, left=left, color=colour, label=outcome)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_yticks(y, names)
        ax.set_xlabel("expectations (latest check of each table)")
        ax.legend(fontsize=8, frameon=False, ncols=3, loc="upper center", bbox_to_anchor=(0.5, 1.2))
    else:
        _empty(ax, "expectations checked")
    return Chart("quality", "Data-quality results per table", _svg(fig), len(fig_.quality))


def all_charts(fig_: Figures) -> list[Chart]:
    return [
        f(fig_)
        for f in (trends, funnel, ingest, score_distribution, capacity, fairness, reasons, clusters, delivery, quality)
    ]
