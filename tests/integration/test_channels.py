"""A third channel plugs in through the channel registry alone: plan_waves plans its messages (and
the waves' counts and suites follow), notify sends them with the channel's own sender."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from helpers import T0, small_coded_campaign
from pyspark import cloudpickle
from pyspark.sql import functions as F

from campaign_pipeline.channels import Channel, registered
from campaign_pipeline.channels.delivery import Outcome
from campaign_pipeline.config import Campaign, load_campaign
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
QUIET = open("/dev/null", "w")  # noqa: SIM115 - the runner's progress, not wanted here


def push_channel(outbox: Path) -> Channel:
    """An app-push channel: every fan with a member id is reachable; the text is the SMS template's;
    its sender appends each message to `outbox` (a file the Spark tasks write)."""

    async def send(sending) -> list[Outcome]:
        with open(outbox, "a", encoding="utf-8") as f:
            for m in sending.messages:
                f.write(json.dumps({"id": m["message_id"], "to": m["recipient"], "text": m["text"]}) + "\n")
        return [Outcome(m["message_id"], "sent", 1, sent_at=dt.datetime.now(dt.UTC)) for m in sending.messages]

    return Channel(name="push", label="push", recipient="member_id",
                   reachable=lambda campaign: F.col("member_id").isNotNull(), text_template="sms", send=send)  # fmt: skip


def test_a_third_channel_is_planned_and_sent_through_the_registry(spark, test_env, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks unpickle the sender by value
    cid, outbox = "push-tour", tmp_path / "outbox.jsonl"
    with registered(push_channel(outbox), first=True):
        data = load_campaign(ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml").model_dump()
        data["campaign_id"] = cid
        data["waves"][0]["channels"] = "push"  # validated against the registry
        campaign = Campaign.model_validate(data)
        env = test_env.with_roots(None, str(tmp_path / "wh"))
        wh = Warehouse(spark, env.warehouse_root)
        small_coded_campaign(wh, cid, fans=5, wave="wave-1")

        planned = run_pipeline(spark, campaign, env, stages=["plan_waves"], now=T0, out=QUIET).rows[0][1]
        assert planned.counts["push"] == 5 and planned.counts["sms"] == planned.counts["email"] == 0
        assert "5 messages: 5 push, 0 SMS (0 segments), 0 email" in planned.summary[0]
        messages = {r["message_id"]: r for r in wh.read("wave_messages", cid).collect()}
        assert {r["channel"] for r in messages.values()} == {"push"}
        assert sorted(r["recipient"] for r in messages.values()) == [f"M{i}" for i in range(5)]
        assert all("your presale code for" in r["text"] and r["code"] in r["text"] for r in messages.values())
        wave = wh.read("waves", cid).where("wave_id = 'wave-1'").first()
        assert (wave["total"], wave["push"], wave["sms"], wave["email"]) == (5, 5, 0, 0)

        after = campaign.waves[0].notify_at + dt.timedelta(minutes=1)
        sent = run_pipeline(spark, campaign, env, stages=["notify"], now=after, out=QUIET).rows[0][1]
        assert sent.counts["push:sent"] == 5
        pushed = [json.loads(line) for line in outbox.read_text().splitlines()]
        assert sorted(p["id"] for p in pushed) == sorted(messages)  # each message once
        log = wh.read("notification_log", cid).collect()
        assert {(r["message_id"], r["channel"], r["status"]) for r in log} == {(m, "push", "sent") for m in messages}
        assert wh.read("waves", cid).where("wave_id = 'wave-1'").first()["status"] == "completed"
