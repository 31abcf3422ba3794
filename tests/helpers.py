"""Small builders shared by the tests."""

from __future__ import annotations

import datetime as dt


def make_campaign(campaign_id: str = "tour-test", markets=("NYC-01", "LAX-02", "CHI-03"), **overrides):
    from campaign_pipeline.config import Campaign

    data = {
        "campaign_id": campaign_id,
        "name": "Test Tour",
        "artist": "Test Artist",
        "seed": 7,
        "markets": [
            {"market_id": m, "name": m, "capacity": 10, "event_date": dt.date(2027, 4, 1 + i)}
            for i, m in enumerate(markets)
        ],
    }
    data.update(overrides)
    return Campaign.model_validate(data)


def stage_context(spark, campaign, env, warehouse_root: str, landing_root: str, run_id: str = "run-test"):
    from campaign_pipeline.runner import StageContext
    from campaign_pipeline.tables import Warehouse

    env = env.with_roots(landing_root, warehouse_root)
    return StageContext(
        spark, campaign, env, Warehouse(spark, warehouse_root), run_id, dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    )
