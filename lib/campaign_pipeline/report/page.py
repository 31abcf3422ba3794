"""The campaign report: one self-contained HTML file (inline styles, static SVG charts, no script).

It opens without a network, prints cleanly (each chart and its table stay on one page), and
shows counts only: the figures it is built from never hold a phone number, an email or a code.
"""

from __future__ import annotations

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from campaign_pipeline.report.charts import Chart
from campaign_pipeline.report.figures import Figures

EXPLANATIONS = {
    "trends": "The funnel and delivery at every report run of this campaign (the campaign_stats snapshots), "
    "this run last.",
    "ingest": "Per landing file, the lines read: ingested, or quarantined with a reason (below). Read = ingested + "
    "quarantined for every file.",
    "funnel": "How many rows and fans reached each step, from the registration rows ingested to the messages sent.",
    "scores": "How raw scores spread, coloured by the band each score falls in; the in-band lottery decides within a band.",
    "capacity": "Per market, the fans selected and coded against the market's capacity (outline).",
    "fairness": "The share of eligible scored fans selected, per band and per first-choice market; "
    "large gaps between markets with similar demand deserve a look.",
    "reasons": "Why registrants were ineligible (a registrant may carry several reasons).",
    "clusters": "How many identity clusters have each size: large clusters are accounts sharing a phone, "
    "an email, a device or a payment fingerprint. Below: fresh accounts weakly linked (no identifier shared, "
    "but IP range, email domain, phone block, postal code, email pattern or first market), per signal, and the "
    "largest clusters left for review (eligible, STEALTH_RING only when the cluster is large and mostly without "
    "attendance).",
    "delivery": "Messages sent and failed over time, per channel (cumulative, by the hour).",
    "quality": "The latest great-expectations check of each table: passed, warnings, and critical failures.",
}

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Campaign report · {{ f.campaign_name }} ({{ f.campaign_id }})</title>
<style>
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
         max-width: 960px; padding: 24px; }
  h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 6px; }
  .meta { color: #666; margin-bottom: 16px; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
  .card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 10px; }
  .card b { display: block; font-size: 18px; } .card span { color: #666; font-size: 12px; }
  .card i { display: block; color: #777; font-size: 11px; font-style: normal; }
  code { font-size: 11.5px; background: #f4f4f4; padding: 0 3px; word-break: break-all; }
  .bad { color: #b3261e; } .warn { color: #9a6700; } .ok { color: #2e7d32; }
  figure { margin: 0; break-inside: avoid; page-break-inside: avoid; }
  figure svg { width: 100%; height: auto; }
  figcaption { color: #555; margin: 2px 0 6px; }
  table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 12.5px; }
  th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 6px; text-align: left; vertical-align: top; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  section { break-inside: avoid-page; }
  @media print { body { max-width: none; padding: 0; } a { color: inherit; text-decoration: none; }
                 h2 { break-after: avoid; } }
</style>
</head>
<body>
<h1>{{ f.campaign_name }} <small>({{ f.campaign_id }})</small></h1>
<div class="meta">Generated {{ f.generated_at.strftime("%Y-%m-%d %H:%M UTC") }} · run {{ f.run_id }}</div>

<div class="cards">
{% for label, value in headline.items() %}
  <div class="card"><b class="{{ 'bad' if value and ('failed' in label or 'breaks' in label) else ('warn' if value and label == 'warnings' else '') }}">{{ "{:,}".format(value) }}</b><span>{{ label }}</span>
  <i class="delta">{% if deltas[label] is none %}{{ 'first report' if first else 'not recorded last time' }}{% elif deltas[label] == 0 %}no change since the last report{% else %}{{ "{:+,}".format(deltas[label]) }} since the last report{% endif %}</i></div>
{% endfor %}
</div>

<section id="waves">
<h2>Waves</h2>
<p>Each configured wave as notify left it. A wave that needs an operator says why and the command to run (look at the delivery failures below first).</p>
<table class="waves">
<tr><th>wave</th><th>notify at (UTC)</th><th>status</th><th class="n">attempts</th><th>channel</th><th class="n">planned</th><th class="n">sent</th><th class="n">failed</th><th class="n">skipped</th><th class="n">pending</th><th>held by</th><th>needs an operator</th></tr>
{% for w in f.waves %}{% set chans = w.channels.items() | list %}
{% for ch, c in (chans if chans else [("–", none)]) %}
<tr class="wave{{ ' bad' if w.needs_operator else '' }}" data-wave="{{ w.wave_id }}">
{% if loop.first %}<td rowspan="{{ loop.length }}">{{ w.wave_id }}</td><td rowspan="{{ loop.length }}">{{ w.notify_at.strftime("%Y-%m-%d %H:%M") }}</td>
<td rowspan="{{ loop.length }}">{{ w.status }}</td><td class="n" rowspan="{{ loop.length }}">{{ w.attempts }}</td>{% endif %}
<td>{{ ch }}</td>{% for k in ("planned", "sent", "failed", "skipped", "pending") %}<td class="n">{{ "{:,}".format(c[k]) if c else "–" }}</td>{% endfor %}
{% if loop.first %}<td rowspan="{{ loop.length }}">{% if w.lease_owner %}{{ w.lease_owner }} until {{ w.lease_until.strftime("%H:%M:%S") }}{% elif w.paused_until %}paused until {{ w.paused_until.strftime("%H:%M:%S") }}{% endif %}</td>
<td rowspan="{{ loop.length }}">{% if w.needs_operator %}{{ w.needs_operator }}: <code>{{ w.command }}</code>{% endif %}</td>{% endif %}
</tr>
{% endfor %}
{% else %}<tr><td colspan="12">No waves configured.</td></tr>
{% endfor %}
</table>
</section>

{% for c in charts %}
<section id="{{ c.key }}">
<h2>{{ c.title }}</h2>
<figure class="chart" data-chart="{{ c.key }}" data-points="{{ c.points }}">
{{ c.svg | safe }}
<figcaption>{{ explanations[c.key] }}</figcaption>
</figure>
{{ tables[c.key] | safe }}
</section>
{% endfor %}

<section id="runs">
<h2>Stage runs</h2>
<p>The last run of each stage (pipeline_runs), with its first figures (all of them are in pipeline_runs.counts): a stage left <code>running</code> whose process died is resumed by the next <code>run</code>.</p>
<table class="runs">
<tr><th>stage</th><th>status</th><th>started (UTC)</th><th class="n">seconds</th><th class="n">rows</th><th>figures</th><th>run</th></tr>
{% for r in f.runs %}
<tr class="{{ 'bad' if r.status == 'failed' else ('warn' if r.status == 'running' else '') }}"><td>{{ r.stage }}</td><td>{{ r.status }}</td>
<td>{{ r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "" }}</td>
<td class="n">{{ "{:,.1f}".format(r.seconds) if r.seconds is not none else "" }}</td>
<td class="n">{{ "{:,}".format(r.rows) if r.rows is not none else "" }}</td>
<td>{% for k, v in ((r.figures or {}).items() | sort)[:8] %}{{ k }} {{ "{:,}".format(v) if v is not none else "–" }}{{ "; " if not loop.last }}{% endfor %}{{ " …" if (r.figures or {}) | length > 8 }}</td>
<td>{{ r.run_id }}</td></tr>
{% else %}<tr><td colspan="7">No stage run recorded.</td></tr>
{% endfor %}
</table>
</section>

<section id="reconciliation">
<h2>Reconciliation across stages</h2>
<p>Each line carries a count from one table to the next; a break names both counts.
{% if breaks %}<b class="bad">{{ breaks }} break{{ 's' if breaks > 1 }}.</b>{% else %}<b class="ok">Everything balances.</b>{% endif %}</p>
<table class="reconciliation">
<tr><th>check</th><th class="n">left</th><th></th><th class="n">right</th><th>terms</th></tr>
{% for b in f.balances %}
<tr class="{{ '' if b.balanced else 'bad' }}"><td>{{ b.check }}</td>
<td class="n">{{ "{:,}".format(b.left_count) }} {{ b.left_label }}</td><td>{{ '=' if b.balanced else '≠' }}</td>
<td class="n">{{ "{:,}".format(b.right_count) }} {{ b.right_label }}</td>
<td>{% for k, v in b.parts.items() %}{{ k }} {{ "{:,}".format(v) }}{{ "; " if not loop.last }}{% endfor %}</td></tr>
{% endfor %}
</table>
</section>

<section id="expectations">
<h2>Data-quality results</h2>
<p>{% if docs %}Great-expectations Data Docs: <a href="{{ docs.index }}">all suites</a>.{% else %}Data Docs were not built.{% endif %}</p>
<table class="expectations">
<tr><th>table</th><th>expectation</th><th>severity</th><th>result</th><th>observed</th></tr>
{% for q in f.quality %}
<tr><td>{% if docs and docs.pages.get(q.table) %}<a href="{{ docs.pages[q.table] }}">{{ q.table }}</a>{% else %}{{ q.table }}{% endif %}</td>
<td>{{ q.expectation }}</td><td>{{ q.severity }}</td>
<td class="{{ 'ok' if q.success else ('bad' if q.severity == 'critical' else 'warn') }}">{{ 'passed' if q.success else 'failed' }}</td>
<td>{% for k, v in q.observed.items() if v is not none %}{{ k }} {{ v }}{{ "; " if not loop.last }}{% endfor %}</td></tr>
{% endfor %}
</table>
</section>
</body>
</html>
"""


def _table(headers: list[str], rows: list[list], numeric: set[int] | None = None, css: str = "figures") -> str:
    numeric = numeric if numeric is not None else set(range(1, len(headers)))
    esc = jinja2.filters.escape

    def cell(i, v, tag="td"):
        cls = ' class="n"' if i in numeric else ""
        if v is None:
            v = "–"
        elif isinstance(v, float):
            v = f"{v:.1%}"
        elif isinstance(v, int) and not isinstance(v, bool):
            v = f"{v:,}"
        return f"<{tag}{cls}>{esc(str(v))}</{tag}>"

    head = "<tr>" + "".join(cell(i, h, "th") for i, h in enumerate(headers)) + "</tr>"
    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{css}">{head}{body}</table>'


def chart_tables(f: Figures) -> dict[str, str]:
    """The numbers under each chart, for people who prefer them."""
    per_bin: dict[int, dict[str, int]] = {}
    for r in f.score_histogram:
        per_bin.setdefault(r["bin"], {})[r["band"]] = r["fans"]
    bands = [b for b in [*f.bands, "below every band"] if any(b in v for v in per_bin.values())]
    trend: dict = {}
    for r in f.trend:
        trend.setdefault(r["computed_at"], {})[r["step"]] = r["value"]
    steps = [s for s in ("registrants", "eligible", "selected", "coded", "messages planned", "messages sent",
                         "messages failed") if any(s in v for v in trend.values())]  # fmt: skip
    from campaign_pipeline.report.figures import SCORE_BINS

    return {
        "funnel": _table(["step", "count"], [[k, v] for k, v in f.funnel.items()]),
        "scores": _table(
            ["raw score", *bands],
            [
                [f"{b / SCORE_BINS:.2f}–{(b + 1) / SCORE_BINS:.2f}", *[per_bin[b].get(x, 0) for x in bands]]
                for b in sorted(per_bin)
            ],
        ),  # fmt: skip
        "capacity": _table(
            ["market", "name", "capacity", "selected", "coded", "waitlisted"],
            [[m["market_id"], m["name"], m["capacity"], m["selected"], m["coded"], m["waitlisted"]] for m in f.markets],
            {2, 3, 4, 5},
        ),
        "fairness": _table(
            ["band", "eligible scored fans", "selected", "rate"],
            [[b["band"], b["candidates"], b["selected"], b["rate"]] for b in f.band_rates],
        )
        + _table(
            ["first-choice market", "registrants", "eligible", "selected (any market)", "rate"],
            [
                [m["market_id"], m["first_choice"], m["first_choice_eligible"], m["first_choice_selected"], m["rate"]]
                for m in f.markets
            ],
        ),  # fmt: skip
        "reasons": _table(["reason", "registrants"], [[k, v] for k, v in f.reasons.items()]),
        "clusters": _table(
            ["accounts per cluster", "clusters", "accounts"],
            [[c["size"], c["clusters"], c["accounts"]] for c in f.clusters],
            {1, 2},
        )
        + "<h3>Weak links per signal</h3>"
        + _table(
            ["signal", "STEALTH_RING accounts", "REVIEW accounts"],
            [[w["signal"], w["stealth_ring"], w["review"]] for w in f.weak_signals],
            {1, 2},
        )
        + "<h3>Weak-link clusters to review</h3>"
        + _table(
            ["weak-link cluster", "accounts", "signals"],
            [[c["cluster"], c["accounts"], c["signals"]] for c in f.review_clusters],
            {1},
        ),  # fmt: skip
        "delivery": _table(
            ["hour (UTC)", "channel", "status", "messages"],
            [[f"{d['hour']:%Y-%m-%d %H:00}", d["channel"], d["status"], d["messages"]] for d in f.delivery],
            {3},
        )
        + "<h3>Top failure reasons</h3>"
        + (
            _table(
                ["channel", "reason (contacts masked)", "messages"],
                [[x["channel"], x["reason"], x["messages"]] for x in f.failures],
                {2},
                "failures",
            )
            if f.failures
            else "<p>No message has failed.</p>"
        ),  # fmt: skip
        "trends": _table(
            ["report run (UTC)", *steps],
            [[f"{at:%Y-%m-%d %H:%M}", *[trend[at].get(s) for s in steps]] for at in sorted(trend)],
        ),
        "ingest": _table(
            ["landing file", "kind", "lines read", "ingested", "quarantined"],
            [[x["file"], x["kind"], x["lines"], x["ingested"], x["quarantined"]] for x in f.ingest_files],
            {2, 3, 4},
        )
        + (
            _table(
                ["stage", "file", "reason", "rows"],
                [[q["stage"], q["file"], q["reason"], q["rows"]] for q in f.quarantine],
                {3},
                "quarantine",
            )
            if f.quarantine
            else "<p>Nothing quarantined.</p>"
        ),  # fmt: skip
        "quality": "",  # the full list is in the data-quality section below
    }


def render(f: Figures, charts: list[Chart], docs: dict | None = None) -> str:
    # The template is ours, but the values it shows (campaign and market names) come from operators'
    # configs: the sandbox keeps any template text from reaching Python objects.
    env = SandboxedEnvironment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(
        f=f,
        charts=charts,
        tables=chart_tables(f),
        explanations=EXPLANATIONS,
        headline=f.headline(),
        deltas=f.deltas(),
        first=f.previous is None,
        breaks=sum(not b.balanced for b in f.balances),
        docs=docs,
    )
