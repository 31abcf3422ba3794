"""Score sources: the built-in explainable model, a saved Spark ML PipelineModel, the data-science
scored file and the fanlist ranks. Each returns (campaign_id, global_user_id, raw_score,
model_version, top_features, extra); a fan a source does not cover has a null raw_score.
"""

from __future__ import annotations

import hashlib
import json

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.catalog import FAN
from campaign_pipeline.config import Scoring
from campaign_pipeline.errors import ConfigError, InputError
from campaign_pipeline.scoring.features import FEATURES, latest_row

# The documented defaults of the built-in weighted logistic model (docs/rules/scoring.md): logit =
# intercept + Σ weight × feature. Engagement with the artist counts most; resale and chargebacks
# pull a fan down. A fan with no history at all scores sigmoid(-2.6) ≈ 0.07: below every band.
DEFAULT_INTERCEPT = -2.6
DEFAULT_WEIGHTS: dict[str, float] = {
    "account_age_years": 0.08,
    "tickets_24m": 0.25,
    "events_24m": 0.30,
    "artist_tickets": 0.50,
    "artist_streams": 0.30,
    "resale_listings": -0.60,
    "chargebacks": -1.00,
    "phone_confirmed": 0.40,
    "has_activity": 0.20,
    "attendance_ratio": 0.50,
}
TOP_FEATURES = 3

CONTRIBUTION = T.StructType([T.StructField("feature", T.StringType()), T.StructField("contribution", T.DoubleType())])
OUTPUT = ["campaign_id", "global_user_id", "raw_score", "model_version", "top_features", "extra"]


def model_weights(scoring: Scoring) -> tuple[dict[str, float], float]:
    """Configured weights over the defaults; an unknown feature name is a config error naming the key."""
    unknown = sorted(set(scoring.model.weights) - set(FEATURES))
    if unknown:
        raise ConfigError(f"scoring.model.weights.{unknown[0]}: unknown feature; features are {', '.join(FEATURES)}")
    weights = {**DEFAULT_WEIGHTS, **scoring.model.weights}
    intercept = DEFAULT_INTERCEPT if scoring.model.intercept is None else scoring.model.intercept
    return weights, intercept


def builtin_version(weights: dict[str, float], intercept: float) -> str:
    """`builtin-<hash of the weights>`: a changed weight is a new model version."""
    digest = hashlib.sha256(json.dumps({"w": weights, "b": intercept}, sort_keys=True).encode()).hexdigest()
    return f"builtin-{digest[:10]}"


def builtin_scores(features: DataFrame, weights: dict[str, float], intercept: float, top_n: int = TOP_FEATURES):
    """raw_score = sigmoid(intercept + Σ wᵢxᵢ); the top |wᵢxᵢ| contributions are kept per fan."""
    parts = [
        F.struct(F.lit(name).alias("feature"), (F.lit(float(w)) * F.col(name)).alias("contribution"))
        for name, w in weights.items()
        if w != 0
    ]
    contributions = F.array(*parts) if parts else F.array().cast(T.ArrayType(CONTRIBUTION))
    logit = F.lit(float(intercept))
    for name, w in weights.items():
        if w != 0:
            logit = logit + F.lit(float(w)) * F.col(name)
    # Largest absolute contribution first; the feature name breaks ties so the order is total.
    ordered = F.array_sort(
        contributions,
        lambda a, b: (
            F.when(F.abs(a["contribution"]) > F.abs(b["contribution"]), -1)
            .when(F.abs(a["contribution"]) < F.abs(b["contribution"]), 1)
            .when(a["feature"] < b["feature"], -1)
            .when(a["feature"] > b["feature"], 1)
            .otherwise(0)
        ),
    )
    nonzero = F.filter(ordered, lambda c: c["contribution"] != 0)
    return features.select(
        "campaign_id",
        "global_user_id",
        (F.lit(1.0) / (F.lit(1.0) + F.exp(-logit))).alias("raw_score"),
        F.lit(builtin_version(weights, intercept)).alias("model_version"),
        F.slice(nonzero, 1, top_n).alias("top_features"),
        F.lit(None).cast("map<string,string>").alias("extra"),
    )


def pipeline_model_scores(features: DataFrame, path: str) -> DataFrame:
    """Scores from a Spark ML PipelineModel saved by the training notebook.

    The model reads the feature columns by name (it carries its own VectorAssembler) and must output
    `probability`; the raw score is the probability of the positive class. The version recorded is
    the path plus the model's uid and the saved metadata's timestamp.
    """
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    try:
        model = PipelineModel.load(path)
    except Exception as exc:  # noqa: BLE001 - a bad path is a config problem, said in one line
        raise ConfigError(f"scoring.model.path: cannot load a Spark ML PipelineModel from {path}: {exc}") from None
    scored = model.transform(features)
    if "probability" not in scored.columns:
        raise ConfigError(f"scoring.model.path: the model at {path} does not output a `probability` column")
    version = f"pipeline:{path.rstrip('/').rsplit('/', 1)[-1]}:{model.uid}"
    return scored.select(
        "campaign_id",
        "global_user_id",
        vector_to_array("probability")[1].alias("raw_score"),
        F.lit(version).alias("model_version"),
        F.lit(None).cast(T.ArrayType(CONTRIBUTION)).alias("top_features"),
        F.lit(None).cast("map<string,string>").alias("extra"),
    )


def external_scores(scored: DataFrame) -> DataFrame:
    """The data-science scored file; `model_version` is its `model_version` column if it has one."""
    latest = latest_row(scored)
    version = F.coalesce(
        F.col("extra")["model_version"],
        F.concat(F.lit("external:"), F.element_at(F.split("source_file", "/"), -1)),
    )
    return latest.select(
        "campaign_id",
        "global_user_id",
        F.col("score").alias("raw_score"),
        version.alias("model_version"),
        F.lit(None).cast(T.ArrayType(CONTRIBUTION)).alias("top_features"),
        "extra",
    )


def fanlist_scores(ranks: DataFrame, scoring: Scoring) -> DataFrame:
    """Ranks → scores: linear `1 − (rank − 1) / N` (N ranked fans) or `0.5 ^ ((rank − 1) / half_life)`.

    A fan ranked twice keeps the best (smallest) rank.
    """
    best = ranks.groupBy(*FAN).agg(F.min("rank").alias("rank"))
    n = F.count(F.lit(1)).over(Window.partitionBy("campaign_id"))
    rank = F.col("rank").cast("double")
    formula = scoring.fanlist
    if formula.formula == "linear":
        score = F.lit(1.0) - (rank - 1) / n
        version = "fanlist:linear"
    else:
        score = F.pow(F.lit(0.5), (rank - 1) / F.lit(float(formula.half_life)))
        version = f"fanlist:exponential:half_life={formula.half_life:g}"
    return best.select(
        "campaign_id",
        "global_user_id",
        F.greatest(F.least(score, F.lit(1.0)), F.lit(0.0)).alias("raw_score"),
        F.lit(version).alias("model_version"),
        F.lit(None).cast(T.ArrayType(CONTRIBUTION)).alias("top_features"),
        F.create_map(F.lit("rank"), F.col("rank").cast("string")).alias("extra"),
    )


def require_rows(df: DataFrame, what: str, campaign_id: str) -> None:
    if df.isEmpty():
        raise InputError(f"scoring.source: no {what} ingested for campaign {campaign_id}: land the file and run ingest")
