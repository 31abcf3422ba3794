"""The data scientists' notebooks run, cell by cell, against a small generated campaign (synth →
ingest → screen → score → select), so none of them can rot. (data_quality.ipynb runs against the
golden campaign in test_hand_written_campaign.py.)"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from helpers import run_notebook

from campaign_pipeline.config import load_campaign
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.scoring.features import FEATURES
from campaign_pipeline.synth import SynthSpec, generate
from campaign_pipeline.tables import Warehouse

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(scope="module")
def selected(spark, test_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("nb-synth")
    synth = generate(spark, SynthSpec(campaign_id="nb-small", registrants=800, markets=3, seed=7), str(out))
    wh_root = str(tmp_path_factory.mktemp("nb-wh"))
    env = test_env.with_roots(str(Path(synth.landing).parent), wh_root)
    stages = ["ingest", "screen", "score", "select"]
    terminal = _Terminal()  # the steps are printed as they end only on a terminal
    run_pipeline(spark, load_campaign(synth.campaign_yaml), env, stages=stages, out=terminal)
    return synth.campaign_yaml, Warehouse(spark, wh_root), terminal.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _params(campaign_yaml, wh):
    return {"warehouse_root": wh.root, "campaign_yaml": campaign_yaml, "env_name": "local"}


def test_explore_scores_shows_bands_contributions_and_selection_rates(spark, selected):
    campaign_yaml, wh, _ = selected
    scope = run_notebook(NOTEBOOKS / "explore_scores.ipynb", **_params(campaign_yaml, wh))
    scores = wh.read("scores", "nb-small")
    assert scope["bands"].fans.sum() == scores.count()
    assert set(scope["bands"].band) - {"(none)"} <= {b.name for b in load_campaign(campaign_yaml).scoring.bands}
    contributions = scope["contributions"]
    assert len(contributions) > 0 and set(contributions.feature) <= set(FEATURES)
    by_band = scope["by_band"]
    assert by_band.selection_rate.between(0, 1).all()
    assert by_band.drop(columns="selection_rate").to_numpy().sum() == wh.read("selections", "nb-small").count()


def test_what_if_selection_compares_verdicts_and_writes_nothing(spark, selected):
    campaign_yaml, wh, _ = selected
    campaign = load_campaign(campaign_yaml)
    first = campaign.markets[0].market_id
    version = wh.version("selections")
    scope = run_notebook(
        NOTEBOOKS / "what_if_selection.ipynb", **_params(campaign_yaml, wh), capacity={first: 3}, options={}
    )
    markets = scope["markets"]
    # the unchanged config reproduces what the select stage wrote
    recorded = {
        (r["market_id"] or "(none)", r["verdict"]): r["count"]
        for r in wh.read("selections", "nb-small").groupBy("market_id", "verdict").count().collect()
    }
    rows = markets.to_dict("records")
    assert {(r["market_id"], r["verdict"]): r["before"] for r in rows if r["before"]} == recorded
    after = {(r["market_id"], r["verdict"]): r["after"] for r in rows}
    assert after[(first, "selected")] == 3 < recorded[(first, "selected")]
    assert scope["moves"]["count"].sum() > 0
    assert version is not None and wh.version("selections") == version  # nothing written


def test_train_scoring_model_saves_a_model_the_score_stage_can_load(spark, selected, tmp_path):
    from pyspark.ml import PipelineModel

    campaign_yaml, wh, _ = selected
    path = str(tmp_path / "scoring-model")
    scope = run_notebook(
        NOTEBOOKS / "train_scoring_model.ipynb",
        warehouse_root=wh.root, campaign_id="nb-small", env_name="local", model_path=path,
    )  # fmt: skip
    assert 0.0 <= scope["auc"] <= 1.0
    model = PipelineModel.load(path)
    assert "probability" in model.transform(scope["test_set"].limit(5)).columns


def test_a_terminal_sees_each_step_as_it_ends_with_the_rows_it_wrote(spark, selected):
    _, wh, printed = selected
    steps = [line for line in printed.splitlines() if line.startswith("  [")]
    assert [s.split("]")[0][3:] for s in steps[:1]] == ["ingest"]
    assert any(s.startswith("  [screen] identity_graph done · ") for s in steps)
    registrants = wh.read("registrants", "nb-small").count()
    screen_write = next(s for s in steps if s.startswith("  [screen] rules_and_write done"))
    assert re.search(rf"registrants {registrants:,} rows \(\w+\)", screen_write), screen_write
    selections = wh.read("selections", "nb-small").count()
    assert any(f"selections {selections:,} rows" in s for s in steps if s.startswith("  [select] write done"))
