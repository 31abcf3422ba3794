"""Codes and messages over random sequences of runs, through the pure stage cores on tiny frames
(slow for a unit test: a dozen stage cores per sequence)."""

from __future__ import annotations

import dataclasses
import random

from helpers import CID, T0, make_campaign, wave_inputs

from campaign_pipeline.codes.stage import CodeInputs, plan_assignments
from campaign_pipeline.selection.stage import select_fans
from campaign_pipeline.tables import CATALOG, literal_frame
from campaign_pipeline.waves.stage import plan_wave_messages


def _registrant_rows(fans):
    return [
        (CID, f, f"M-{f}", f"{f.lower()}@example.com", f"{f.lower()}@example.com", None, None, None, False, False,
         f, "Doe", "en_US", "US", prefs, T0, f, 1, [], True, [], "seed")
        for f, _, prefs in fans
    ]  # fmt: skip


def test_codes_and_messages_stay_right_over_random_sequences_of_runs(spark):
    """select → assign → plan, with fans arriving, capacity raised, reassign switched, a wave added and
    a wave sent in between: codes per market ≤ capacity, every selected fan holds exactly one code per
    market he holds, every coded fan has a message, a sent message never changes."""
    for seed in (3,):
        rng = random.Random(seed)
        markets = ["NYC-01", "LAX-02", "CHI-03"]
        capacity = {m: rng.randint(1, 3) for m in markets}
        fans = []
        waves = [{"wave_id": "w1", "notify_at": "2027-03-01T15:00:00Z", "channels": "email"}]
        reassign = False
        selections = spark.createDataFrame([], CATALOG["selections"].schema)
        codes = spark.createDataFrame([], CATALOG["code_assignments"].schema)
        planned = spark.createDataFrame([], CATALOG["wave_messages"].schema)
        sent: dict[str, str] = {}
        events = ["none", *rng.sample(["grow", "reassign", "add_wave", "send"], 3)]
        if "reassign" not in events:
            events[1] = "reassign"
        for step, event in enumerate(events):
            fans += [(f"S{seed}F{len(fans) + i}", round(rng.uniform(0.3, 0.99), 3), rng.sample(markets, 2))
                     for i in range(rng.randint(2, 5))]  # fmt: skip
            if event == "grow":
                capacity[rng.choice(markets)] += 1
            elif event == "reassign":
                reassign = not reassign
            elif event == "add_wave":
                waves.append({"wave_id": f"w{len(waves) + 1}", "notify_at": f"2027-03-0{len(waves) + 1}T15:00:00Z"})
            elif event == "send":
                sent.update({r["message_id"]: r["text"] for r in planned.collect()})
            campaign = make_campaign(
                CID, markets=tuple(markets), options={"min_score": 0.22, "reassign": reassign},
                codes={"source": "tm"}, waves=waves,
            )  # fmt: skip
            campaign = campaign.model_copy(
                update={"markets": [m.model_copy(update={"capacity": capacity[m.market_id]}) for m in campaign.markets]}
            )
            registrants = literal_frame(spark, _registrant_rows(fans), CATALOG["registrants"].schema)
            scores = literal_frame(
                spark, [(CID, f, s, "low", s) for f, s, _ in fans],
                "campaign_id string, global_user_id string, raw_score double, band string, band_score double",
            )  # fmt: skip
            selections = select_fans(
                spark, campaign, registrants, scores, selections, f"r{step}", coded=codes
            ).localCheckpoint()
            inputs = CodeInputs(selections, spark.createDataFrame([], CATALOG["code_pool"].schema), registrants, codes)
            new = plan_assignments(campaign, inputs, None, f"r{step}", T0).new
            codes = codes.unionByName(new).localCheckpoint()
            messages = plan_wave_messages(
                campaign,
                dataclasses.replace(
                    wave_inputs(spark, planned=planned, logged=list(sent)),
                    selected=selections.where("verdict = 'selected'"),
                    assignments=codes,
                    registrants=registrants,
                ),
                f"r{step}",
            ).messages.localCheckpoint()
            planned = messages
            what = (seed, step, event)

            held = {(r["global_user_id"], r["market_id"]) for r in codes.collect()}
            per_market = {m: sum(1 for _, mk in held if mk == m) for m in markets}
            assert all(per_market[m] <= capacity[m] for m in markets), (what, per_market, capacity)
            assert codes.count() == len(held), what  # one code per (fan, market)
            assert len({f for f, _ in held}) == len(held), what  # single market: one code per fan
            chosen = {(r["global_user_id"], r["market_id"]) for r in selections.where("verdict = 'selected'").collect()}
            assert chosen == held, (what, chosen ^ held)
            messaged = {(r["global_user_id"], r["market_id"]) for r in messages.collect()}
            assert held <= messaged, (what, held - messaged)
            texts = {r["message_id"]: r["text"] for r in messages.collect()}
            assert all(texts.get(m) == t for m, t in sent.items()), what
