"""The report stage: reconciliation across stages, a `campaign_stats` snapshot, the campaign report.

1. Reconciliation (`quality.reconcile`): every check is appended to `reconciliation` under the
   run id; a break fails the stage once everything below is written, naming both counts.
2. Figures (`report.figures`): aggregates of the campaign's tables; the funnel and per-market
   figures are appended to `campaign_stats` (one snapshot per run, for charting a campaign's
   history).
3. The report: `report.html` (one self-contained file, static SVG charts) and great-expectations'
   Data Docs (`data_docs/`, from the results the stages recorded), written to
   `<warehouse>/_reports/<campaign>/` (local or s3://) or to `report --out DIR`.
4. The headline figures (counts only) go to Slack when a webhook is configured.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import catalog_rows
from campaign_pipeline.ops import alerts
from campaign_pipeline.stage_context import StageContext, StageReport


def report_destination(ctx: StageContext) -> str:
    out = ctx.options.get("out")
    return str(out).rstrip("/") if out else f"{ctx.warehouse.root}/_reports/{ctx.campaign_id}"


def publish(folder: Path, destination: str) -> str:
    """Copy the report folder to `destination` (a local folder or s3://bucket/prefix); returns
    the report file's location."""
    import shutil

    if destination.startswith("s3://"):
        from campaign_pipeline.storage import split_s3, upload

        bucket, prefix = split_s3(destination)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        upload([(p, f"{prefix}/{p.relative_to(folder).as_posix()}".lstrip("/")) for p in files], bucket, "report")
        return f"{destination}/report.html"
    target = Path(destination.removeprefix("file://")).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    if (target / "data_docs").exists():
        shutil.rmtree(target / "data_docs")
    shutil.copytree(folder, target, dirs_exist_ok=True)
    return str((target / "report.html").resolve())


def headline_text(campaign_id: str, headline: dict[str, int], location: str) -> str:
    figures = " · ".join(f"{k} {v:,}" for k, v in headline.items())
    return f":bar_chart: campaign {campaign_id} report: {figures}\n{location}"


def report(ctx: StageContext) -> StageReport:
    """Reconcile, snapshot, write the campaign report and its Data Docs; fail on a break."""
    from campaign_pipeline.quality.expectations import campaign_reader
    from campaign_pipeline.quality.reconcile import breaks, reconcile
    from campaign_pipeline.report import charts, figures, page
    from campaign_pipeline.report.docs import build_data_docs

    wh, cid, campaign = ctx.warehouse, ctx.campaign_id, ctx.campaign
    read = campaign_reader(wh, cid)
    generated_at = dt.datetime.now(dt.UTC)
    with ctx.step("reconcile"):
        balances = reconcile(campaign, read)
        rows = [{**b.row(), "campaign_id": cid, "run_id": ctx.run_id, "checked_at": generated_at} for b in balances]
        if rows:
            wh.append("reconciliation", catalog_rows(ctx.spark, "reconciliation", rows))
    with ctx.step("figures"):
        fig = figures.compute(
            campaign,
            read,
            ctx.run_id,
            generated_at,
            balances,
            wave_attempts=ctx.env.notify.wave_attempts,
            env_name=ctx.env.name,
        )
        wh.append("campaign_stats", catalog_rows(ctx.spark, "campaign_stats", [fig.stats_row()]))
    with ctx.step("render"):
        drawn = charts.all_charts(fig)
        with tempfile.TemporaryDirectory(prefix="campaign-report-") as tmp:
            folder = Path(tmp)
            docs = build_data_docs(fig.quality, cid, folder / "data_docs")
            (folder / "report.html").write_text(page.render(fig, drawn, docs), encoding="utf-8")
            size = (folder / "report.html").stat().st_size
            location = publish(folder, report_destination(ctx))
    headline = fig.headline()
    out = StageReport(counts={k.replace(" ", "_"): v for k, v in headline.items()})
    out.counts["report_bytes"] = size
    out.summary = [f"report: {location} ({size / 1024:,.0f} KiB)"]
    out.summary += [f"  {b.line()}" for b in balances if not b.balanced]
    alerts.post(ctx.env, headline_text(cid, headline, location))
    failed = breaks(balances)
    if failed:
        raise PipelineError(
            f"reconciliation: {len(failed)} break{'s' if len(failed) > 1 else ''} in campaign {cid} "
            f"(report written to {location}):\n  " + "\n  ".join(b.line() for b in failed)
        )
    return out
