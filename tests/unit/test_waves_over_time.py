"""Wave planning over a sequence of runs, on tiny frames (the pure `plan_wave_messages`): messages
re-planned around what was sent, waves that are sending or sent left as they are."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import CID, wave_inputs
from pyspark.sql import functions as F

from campaign_pipeline.config import load_campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import literal_frame
from campaign_pipeline.waves.stage import plan_wave_messages

ROOT = Path(__file__).resolve().parents[2]


def _campaign(channels="both", sms="Code {{ code }}"):
    base = load_campaign(ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml")
    data = base.model_dump()
    data["waves"] = [{"wave_id": "wave-1", "notify_at": "2027-03-01T15:00:00Z", "channels": channels}]
    data["messages"]["templates"]["en_US"]["sms"] = sms
    return type(base).model_validate(data)


def test_replanning_never_deletes_a_planned_unsent_message(spark):
    """channels: both — once the SMS has a notification_log row, the unsent email is still planned."""
    first = plan_wave_messages(_campaign(), wave_inputs(spark), "run-1").messages.localCheckpoint()
    by_channel = {r["channel"]: r for r in first.collect()}
    assert sorted(by_channel) == ["email", "sms"]
    sms_id, email_id = by_channel["sms"]["message_id"], by_channel["email"]["message_id"]

    again = plan_wave_messages(
        _campaign(sms="NEW {{ code }}"), wave_inputs(spark, planned=first, logged=[sms_id]), "run-2"
    ).messages
    got = {r["message_id"]: r for r in again.collect()}
    assert sorted(got) == sorted([sms_id, email_id])
    assert got[sms_id]["text"] == by_channel["sms"]["text"] and got[sms_id]["run_id"] == "run-1"  # sent: as it was
    assert got[email_id]["run_id"] == "run-2"  # unsent: re-planned, never dropped
    assert again.where(F.col("channel") == "sms").count() == 1


def test_a_wave_that_is_sending_or_sent_never_changes(spark):
    """wave-1 is sending: a changed template re-plans nothing of it, even its messages without a
    notification_log row yet; a scheduled wave's unsent messages do follow the template."""
    first = plan_wave_messages(_campaign(), wave_inputs(spark), "run-1").messages.localCheckpoint()
    sending = literal_frame(spark, [(CID, "wave-1", "sending")], "campaign_id string, wave_id string, status string")
    inputs = dataclasses.replace(wave_inputs(spark, planned=first), waves=sending)
    again = plan_wave_messages(_campaign(sms="NEW {{ code }}"), inputs, "run-2").messages
    assert sorted(again.collect()) == sorted(first.collect())
    scheduled = dataclasses.replace(inputs, waves=sending.limit(0))
    replanned = plan_wave_messages(_campaign(sms="NEW {{ code }}"), scheduled, "run-2").messages
    assert {r["text"] for r in replanned.where("channel = 'sms'").collect()} == {"NEW NYC0001"}


def test_a_wave_that_holds_fans_cannot_be_removed_from_the_config(spark):
    data = _campaign().model_dump()
    data["waves"] = [{"wave_id": "wave-9", "notify_at": "2027-03-09T15:00:00Z"}]
    with pytest.raises(PipelineError, match=r"no longer in the campaign config: wave-1 \(1 fans\)"):
        plan_wave_messages(type(_campaign()).model_validate(data), wave_inputs(spark), "run-1")
