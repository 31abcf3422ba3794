"""The score stage: one `scores` row per registrant (eligible or not), from the configured source.

`scoring.source`:
- `model` — the built-in weighted logistic model (weights in config, defaults in
  `scoring.model.DEFAULT_WEIGHTS`) with the top contributing features stored per fan, or a Spark ML
  `PipelineModel` when `scoring.model.path` is set;
- `external` — the ingested data-science file (`external_scores`), extra columns kept in `extra`;
- `fanlist` — the ingested ranks through the configured formula.

A registrant the source does not cover has no raw score, no band and cannot be selected
(`NO_SCORE` at selection). Bands and the in-band lottery are in `scoring/bands.py`.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN, columns
from campaign_pipeline.config import Campaign
from campaign_pipeline.frames import require_columns
from campaign_pipeline.quality.expectations import check_tables
from campaign_pipeline.scoring import model as m
from campaign_pipeline.scoring.bands import with_bands
from campaign_pipeline.scoring.checks import CHECKS
from campaign_pipeline.scoring.features import fan_features
from campaign_pipeline.stage_context import StageContext, StageReport

SCORE_COLUMNS = columns("scores", without=("run_id",))


def source_scores(
    campaign: Campaign, registrants: DataFrame, activity: DataFrame, external: DataFrame, ranks: DataFrame
) -> DataFrame:
    """The raw scores of the configured source (fans it does not cover are absent)."""
    scoring = campaign.scoring
    if scoring.source == "model":
        features = fan_features(registrants, activity)
        if scoring.model.path:
            return m.pipeline_model_scores(features, scoring.model.path)
        weights, intercept = m.model_weights(scoring)
        return m.builtin_scores(features, weights, intercept)
    if scoring.source == "external":
        m.require_rows(external, "external scores (scored*.tsv)", campaign.campaign_id)
        return m.external_scores(external)
    m.require_rows(ranks, "fanlist ranks (fanlist_ranks*)", campaign.campaign_id)
    return m.fanlist_scores(ranks, scoring)


def score_registrants(
    campaign: Campaign, registrants: DataFrame, activity: DataFrame, external: DataFrame, ranks: DataFrame
) -> DataFrame:
    """Pure scoring: registrants (+ activity / external scores / ranks) → one scores row per registrant."""
    require_columns(registrants, [*FAN, "eligible"], "scoring")
    raw = source_scores(campaign, registrants, activity, external, ranks)
    scored = registrants.select(*FAN, "eligible").join(raw, FAN, "left")
    return (
        scored.withColumn("score_source", F.lit(campaign.scoring.source))
        .transform(lambda df: with_bands(df, campaign.scoring, campaign.seed))
        .select(*SCORE_COLUMNS)
    )


def score(ctx: StageContext) -> StageReport:
    """Score every registrant of the campaign into `scores` (a no-op when nothing changed)."""

    wh, cid, campaign = ctx.warehouse, ctx.campaign_id, ctx.campaign
    with ctx.step("score_and_write"):
        scores = score_registrants(
            campaign,
            wh.read("registrants", cid),
            wh.read("fan_activity", cid),
            wh.read("external_scores", cid),
            wh.read("fanlist_ranks", cid),
        )
        written = wh.replace_if_changed("scores", scores.withColumn("run_id", F.lit(ctx.run_id)), cid, cut=ctx.cut)
    with ctx.step("counts_and_checks"):
        table = wh.read("scores", cid)
        dq = check_tables(ctx, CHECKS)[0]
        return score_report(campaign, table, dq, written)


def score_report(campaign: Campaign, scores: DataFrame, dq: str, written: bool) -> StageReport:
    """Fans per band (and how many of them are eligible), unscored fans, the model version."""
    per_band = {
        (r["band"] or "(none)", bool(r["eligible"]), r["has_score"]): r["n"]
        for r in scores.groupBy("band", "eligible", F.col("raw_score").isNotNull().alias("has_score"))
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    }
    total = sum(per_band.values())
    unscored = sum(n for (_, _, has), n in per_band.items() if not has)
    report = StageReport(counts={"registrants": total, "scored": total - unscored, "unscored": unscored})
    bands = [b.name for b in sorted(campaign.scoring.bands, key=lambda b: -b.min)] + ["(none)"]
    for band in bands:
        counted = [(e, v) for (b, e, has), v in per_band.items() if b == band and (has or band != "(none)")]
        report.counts[f"band:{band}"] = sum(v for _, v in counted)
        report.counts[f"band_eligible:{band}"] = sum(v for e, v in counted if e)
    version = scores.select("model_version").where("model_version IS NOT NULL").first()
    report.summary = [
        f"source {campaign.scoring.source}"
        + (f" · model {version[0]}" if version else "")
        + ("" if written else " · unchanged since the last run (nothing written)")
    ]
    for band in bands:
        label = "below every band" if band == "(none)" else band
        report.summary.append(
            f"{label:<17} {report.counts[f'band:{band}']:>10,} fans  ({report.counts[f'band_eligible:{band}']:,} eligible)"
        )
    if unscored:
        report.summary.append(f"not covered by the source (no score): {unscored:,}")
    report.summary.append(f"expectations: {dq}")
    return report
