"""Scoring on tiny frames: bands and the seeded lottery, the fanlist formulas, the built-in model."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from helpers import make_campaign

from campaign_pipeline.config import Scoring
from campaign_pipeline.errors import ConfigError
from campaign_pipeline.frames import literal_frame
from campaign_pipeline.scoring import model as m
from campaign_pipeline.scoring.bands import with_bands
from campaign_pipeline.scoring.features import fan_features

CID = "tour-test"


def test_bands_follow_the_default_bounds_and_band_score_is_a_seeded_lottery_inside_the_band(spark):
    raws = [1.0, 0.95, 0.9499, 0.80, 0.5, 0.22, 0.2199, None]
    df = literal_frame(
        spark,
        [(CID, f"F{i}", r) for i, r in enumerate(raws)],
        "campaign_id string, global_user_id string, raw_score double",
    )
    got = {r["global_user_id"]: (r["band"], r["band_score"]) for r in with_bands(df, Scoring(), seed=7).collect()}
    assert [got[f"F{i}"][0] for i in range(len(raws))] == ["high", "high", "mid", "mid", "low", "low", None, None]
    bounds = {"high": (0.95, 1.0), "mid": (0.80, 0.95), "low": (0.22, 0.80)}
    for band, score in got.values():
        if band:
            assert bounds[band][0] <= score < bounds[band][1]
    assert got["F6"][1] is None and got["F7"][1] is None
    again = {r["global_user_id"]: r["band_score"] for r in with_bands(df, Scoring(), seed=7).collect()}
    other_seed = {r["global_user_id"]: r["band_score"] for r in with_bands(df, Scoring(), seed=8).collect()}
    assert again == {k: v[1] for k, v in got.items()}
    assert other_seed["F0"] != got["F0"][1]


def test_fanlist_linear_and_exponential_formulas(spark):
    ranks = literal_frame(
        spark,
        [(CID, "A", 1), (CID, "B", 2), (CID, "C", 3), (CID, "D", 4), (CID, "A", 3)],
        "campaign_id string, global_user_id string, rank long",
    )
    linear = {r["global_user_id"]: r["raw_score"] for r in m.fanlist_scores(ranks, Scoring()).collect()}
    # N = 4 ranked fans; A listed twice keeps its best rank
    assert linear == {"A": 1.0, "B": 0.75, "C": 0.5, "D": 0.25}
    expo = Scoring.model_validate({"fanlist": {"formula": "exponential", "half_life": 2}})
    got = {r["global_user_id"]: r["raw_score"] for r in m.fanlist_scores(ranks, expo).collect()}
    assert got["A"] == 1.0 and got["C"] == pytest.approx(0.5) and got["D"] == pytest.approx(0.5**1.5)


def _features(spark):
    registrants = literal_frame(
        spark,
        [
            (CID, "FAN", dt.datetime(2027, 2, 1, tzinfo=dt.UTC), True),
            (CID, "NEW", dt.datetime(2027, 2, 1, tzinfo=dt.UTC), False),
            (CID, "RESELLER", dt.datetime(2027, 2, 1, tzinfo=dt.UTC), True),
        ],
        "campaign_id string, global_user_id string, registered_at timestamp, phone_confirmed boolean",
    )
    activity = _activity(spark)
    return fan_features(registrants, activity)


def test_builtin_model_ranks_an_engaged_fan_above_a_newcomer_above_a_reseller_and_explains_it(spark):
    weights, intercept = m.model_weights(Scoring())
    scores = {r["global_user_id"]: r for r in m.builtin_scores(_features(spark), weights, intercept).collect()}
    assert scores["FAN"]["raw_score"] > scores["NEW"]["raw_score"] > scores["RESELLER"]["raw_score"]
    assert all(0 <= r["raw_score"] <= 1 for r in scores.values())  # a fan with no activity still gets a score
    top = [c["feature"] for c in scores["FAN"]["top_features"]]
    assert top[0] == "artist_streams" and len(top) == 3
    assert scores["RESELLER"]["top_features"][0]["feature"] in ("resale_listings", "chargebacks")
    assert scores["RESELLER"]["top_features"][0]["contribution"] < 0
    assert scores["FAN"]["model_version"].startswith("builtin-")


def test_changed_weights_change_the_model_version_and_unknown_features_are_config_errors():
    default = m.builtin_version(*m.model_weights(Scoring()))
    tuned = m.builtin_version(*m.model_weights(Scoring.model_validate({"model": {"weights": {"tickets_24m": 0.9}}})))
    assert default != tuned
    with pytest.raises(ConfigError, match=r"scoring.model.weights.streams: unknown feature"):
        m.model_weights(Scoring.model_validate({"model": {"weights": {"streams": 1.0}}}))


def test_a_saved_spark_ml_pipeline_model_scores_fans_and_its_version_is_recorded(spark, tmp_path):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from campaign_pipeline.scoring.features import FEATURES
    from campaign_pipeline.scoring.stage import score_registrants

    features = _features(spark)
    train = features.withColumn("label", (F.col("global_user_id") == "FAN").cast("double"))
    pipeline = Pipeline(
        stages=[VectorAssembler(inputCols=list(FEATURES), outputCol="features"), LogisticRegression(maxIter=5)]
    )
    path = str(tmp_path / "model-v3")
    pipeline.fit(train).write().save(path)
    campaign = make_campaign(CID, scoring={"source": "model", "model": {"path": path}})
    registrants = literal_frame(
        spark,
        [(CID, f, dt.datetime(2027, 2, 1, tzinfo=dt.UTC), True, True) for f in ("FAN", "NEW", "RESELLER")],
        "campaign_id string, global_user_id string, registered_at timestamp, phone_confirmed boolean, eligible boolean",
    )
    empty = spark.createDataFrame([], "campaign_id string, global_user_id string")
    scored = score_registrants(campaign, registrants, _activity(spark), empty, empty).collect()
    by_fan = {r["global_user_id"]: r for r in scored}
    assert by_fan["FAN"]["raw_score"] > by_fan["RESELLER"]["raw_score"]
    assert all(0 <= r["raw_score"] <= 1 and r["score_source"] == "model" for r in scored)
    assert by_fan["FAN"]["model_version"].startswith("pipeline:model-v3:PipelineModel")
    with pytest.raises(ConfigError, match="scoring.model.path: cannot load"):
        score_registrants(
            make_campaign(CID, scoring={"model": {"path": str(tmp_path / "missing")}}),
            registrants,
            _activity(spark),
            empty,
            empty,
        )


ACTIVITY_SCHEMA = (
    "campaign_id string, global_user_id string, account_created_at timestamp, tickets_purchased_24m long, "
    "events_attended_24m long, artist_tickets_purchased long, artist_streams_90d long, resale_listings_24m long, "
    "chargebacks_24m long, source_file string, source_line long, ingested_at timestamp"
)


def _activity(spark):
    return literal_frame(
        spark,
        [
            (CID, "FAN", dt.datetime(2015, 2, 1, tzinfo=dt.UTC), 8, 7, 3, 4000, 0, 0, "a", 1, dt.datetime(2027, 1, 1)),
            (
                CID,
                "RESELLER",
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                30,
                0,
                0,
                2,
                60,
                3,
                "a",
                2,
                dt.datetime(2027, 1, 1),
            ),
        ],
        ACTIVITY_SCHEMA,
    )


def test_external_scores_keep_the_latest_row_and_carry_extra_columns(spark):
    scored = literal_frame(
        spark,
        [
            (CID, "A", 0.5, {"model_version": "gbm-6"}, "s1.tsv", 2, dt.datetime(2027, 1, 1)),
            (CID, "A", 0.9, {"model_version": "gbm-7", "segment": "superfan"}, "s2.tsv", 2, dt.datetime(2027, 1, 2)),
        ],
        "campaign_id string, global_user_id string, score double, extra map<string,string>, source_file string, "
        "source_line long, ingested_at timestamp",
    )
    got = m.external_scores(scored).select("global_user_id", "raw_score", "model_version", "extra")
    want = literal_frame(
        spark,
        [("A", 0.9, "gbm-7", {"model_version": "gbm-7", "segment": "superfan"})],
        "global_user_id string, raw_score double, model_version string, extra map<string,string>",
    )
    assert_df_equality(got, want, ignore_nullable=True)


def test_the_latest_row_is_decided_by_the_data_not_by_which_run_ingested_which_file(spark):
    """Two activity files for one fan: ingested together, or in either order in two runs, the
    fan's features and scores are the same (the greater file name wins, then the line)."""
    t1, t2 = dt.datetime(2027, 1, 1), dt.datetime(2027, 1, 2)
    registrants = literal_frame(
        spark,
        [(CID, "A", dt.datetime(2027, 2, 1, tzinfo=dt.UTC), True), (CID, "B", dt.datetime(2027, 2, 1), True)],
        "campaign_id string, global_user_id string, registered_at timestamp, phone_confirmed boolean",
    )
    weights, intercept = m.model_weights(Scoring())

    def scores(first_file_at, second_file_at):
        rows = [
            (CID, "A", None, 1, 1, 0, 0, 0, 0, "land/fan_activity_2027-01.tsv", 2, first_file_at),
            (CID, "A", None, 9, 9, 2, 900, 0, 0, "land/fan_activity_2027-02.tsv", 2, second_file_at),
            (CID, "B", None, 0, 0, 0, 0, 5, 0, "land/fan_activity_2027-02.tsv", 3, second_file_at),
            (CID, "B", None, 4, 4, 0, 0, 0, 0, "land/fan_activity_2027-02.tsv", 4, second_file_at),
        ]
        activity = literal_frame(spark, rows, ACTIVITY_SCHEMA)
        out = m.builtin_scores(fan_features(registrants, activity), weights, intercept)
        return {r["global_user_id"]: r["raw_score"] for r in out.collect()}

    together, in_order, reversed_order = scores(t1, t1), scores(t1, t2), scores(t2, t1)
    assert together == in_order == reversed_order
    # A's row of the later-named file counts; B's later line of the same file counts
    assert scores(t1, t1)["A"] > 0.5 and together["B"] == scores(t2, t2)["B"]


def test_a_row_timestamp_in_the_scored_file_comes_before_the_file_name(spark):
    scored = literal_frame(
        spark,
        [
            (CID, "A", 0.2, {"as_of": "2027-01-05T00:00:00Z"}, "z_scores.tsv", 2, dt.datetime(2027, 1, 9)),
            (CID, "A", 0.8, {"as_of": "2027-01-07T00:00:00Z"}, "a_scores.tsv", 2, dt.datetime(2027, 1, 1)),
            (CID, "B", 0.3, {}, "z_scores.tsv", 3, dt.datetime(2027, 1, 1)),
            (CID, "B", 0.6, {}, "a_scores.tsv", 3, dt.datetime(2027, 1, 9)),
        ],
        "campaign_id string, global_user_id string, score double, extra map<string,string>, source_file string, "
        "source_line long, ingested_at timestamp",
    )
    got = {r["global_user_id"]: r["raw_score"] for r in m.external_scores(scored).collect()}
    assert got == {"A": 0.8, "B": 0.3}
