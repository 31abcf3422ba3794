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
