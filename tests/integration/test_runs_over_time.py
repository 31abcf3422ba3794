"""Codes, wave membership and messages over sequences of runs, through the pure stage cores on tiny
frames (slow for a unit test: a dozen stage cores per sequence)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from helpers import CID, T0, make_campaign, wave_inputs

from campaign_pipeline.catalog import CATALOG
from campaign_pipeline.codes.stage import CodeInputs, plan_assignments
from campaign_pipeline.frames import literal_frame
from campaign_pipeline.selection.stage import select_fans
from campaign_pipeline.waves.stage import plan_wave_messages


def _registrant_rows(fans):
    return [
        (CID, f, f"M-{f}", f"{f.lower()}@example.com", f"{f.lower()}@example.com", None, None, None, False, False,
         f, "Doe", "en_US", "US", prefs, T0, f, 1, None, None, None, [], True, [], "seed")
        for f, _, prefs in fans
    ]  # fmt: skip


def _after_commit(codes, plan):
    """code_assignments after the stage's commit: new rows inserted, late wave placements filled in."""
    keys = ["campaign_id", "global_user_id", "market_id"]
    return codes.join(plan.placed.select(*keys), keys, "left_anti").unionByName(plan.placed).unionByName(plan.new)


def test_codes_and_messages_stay_right_over_random_sequences_of_runs(spark):
    """select → assign → plan, with fans arriving, capacity raised, reassign switched, a wave added and
    a wave sent in between (the clock moving past its notify time): codes per market ≤ capacity,
    every selected fan holds exactly one code per market he holds, every coded fan in a wave has a
    message, a coded fan is in no wave only when no open wave has room for him, a wave never holds
    more fans than its limit, a fan's wave and validity never change once set, a sent wave never
    changes and takes no one."""
    for seed in (11,):
        rng = random.Random(seed)
        markets = ["NYC-01", "LAX-02", "CHI-03"]
        capacity = {m: rng.randint(1, 3) for m in markets}
        fans = []
        waves = [{"wave_id": "w1", "notify_at": "2027-03-01T15:00:00Z", "channels": "email", "limit": 2}]
        status: dict[str, str] = {}
        now = T0
        reassign = False
        selections = spark.createDataFrame([], CATALOG["selections"].schema)
        codes = spark.createDataFrame([], CATALOG["code_assignments"].schema)
        planned = spark.createDataFrame([], CATALOG["wave_messages"].schema)
        sent: dict[str, str] = {}
        placed_before: dict[tuple[str, str], tuple] = {}
        frozen_before: dict[str, dict[str, str]] = {}
        events = ["none", *rng.sample(["grow", "reassign", "add_wave", "send", "add_wave"], 5)]
        for step, event in enumerate(events):
            fans += [(f"S{seed}F{len(fans) + i}", round(rng.uniform(0.3, 0.99), 3), rng.sample(markets, 2))
                     for i in range(rng.randint(2, 5))]  # fmt: skip
            if event == "grow":
                capacity[rng.choice(markets)] += 1
            elif event == "reassign":
                reassign = not reassign
            elif event == "add_wave":
                waves.append({"wave_id": f"w{len(waves) + 1}", "notify_at": f"2027-03-0{len(waves) + 1}T15:00:00Z",
                              "limit": rng.randint(1, 4), "channels": "email"})  # fmt: skip
            elif event == "send":  # the notifier sends the first unsent wave; the clock passes its notify time
                wave = next(w for w in waves if w["wave_id"] not in status)
                status[wave["wave_id"]] = "completed"
                sent.update(
                    {r["message_id"]: r["text"] for r in planned.where(f"wave_id = '{wave['wave_id']}'").collect()}
                )
                now = dt.datetime.fromisoformat(wave["notify_at"]) + dt.timedelta(hours=1)
            campaign = make_campaign(
                CID, markets=tuple(markets), options={"min_score": 0.22, "reassign": reassign},
                codes={"source": "tm"}, waves=waves,
            )  # fmt: skip
            campaign = campaign.model_copy(
                update={"markets": [m.model_copy(update={"capacity": capacity[m.market_id]}) for m in campaign.markets]}
            )
            wave_rows = literal_frame(
                spark, [(CID, w, s) for w, s in status.items()], "campaign_id string, wave_id string, status string"
            )
            registrants = literal_frame(spark, _registrant_rows(fans), CATALOG["registrants"].schema)
            scores = literal_frame(
                spark, [(CID, f, s, "low", s) for f, s, _ in fans],
                "campaign_id string, global_user_id string, raw_score double, band string, band_score double",
            )  # fmt: skip
            selections = select_fans(
                spark, campaign, registrants, scores, selections, f"r{step}", coded=codes
            ).localCheckpoint()
            pool = spark.createDataFrame([], CATALOG["code_pool"].schema)
            inputs = CodeInputs(selections, pool, registrants, codes, waves=wave_rows)
            plan = plan_assignments(campaign, inputs, None, f"r{step}", T0, now=now)
            codes = _after_commit(codes, plan).localCheckpoint()
            messages = plan_wave_messages(
                campaign,
                dataclasses.replace(
                    wave_inputs(spark, planned=planned, logged=list(sent)),
                    assignments=codes,
                    registrants=registrants,
                    waves=wave_rows,
                ),
                f"r{step}",
            ).messages.localCheckpoint()
            planned = messages
            what = (seed, step, event)

            rows = codes.collect()
            held = {(r["global_user_id"], r["market_id"]) for r in rows}
            per_market = {m: sum(1 for _, mk in held if mk == m) for m in markets}
            assert all(per_market[m] <= capacity[m] for m in markets), (what, per_market, capacity)
            assert len(rows) == len(held), what  # one code per (fan, market)
            assert len({f for f, _ in held}) == len(held), what  # single market: one code per fan
            chosen = {(r["global_user_id"], r["market_id"]) for r in selections.where("verdict = 'selected'").collect()}
            assert chosen == held, (what, chosen ^ held)
            in_wave = {(r["global_user_id"], r["market_id"]) for r in rows if r["wave_id"]}
            messaged = {(r["global_user_id"], r["market_id"]) for r in messages.collect()}
            assert in_wave <= messaged, (what, in_wave - messaged)
            texts = {r["message_id"]: r["text"] for r in messages.collect()}
            assert all(texts.get(m) == t for m, t in sent.items()), what
            # a wave never holds more than its limit; a fan in no wave means no open wave had room
            holds = {w["wave_id"]: sum(1 for r in rows if r["wave_id"] == w["wave_id"]) for w in waves}
            assert all(holds[w["wave_id"]] <= w["limit"] for w in waves), (what, holds)
            open_room = [w for w in waves if w["wave_id"] not in status and holds[w["wave_id"]] < w["limit"]
                         and dt.datetime.fromisoformat(w["notify_at"]) > now]  # fmt: skip
            assert not (held - in_wave and open_room), (what, held - in_wave, open_room)
            # a fan's wave and validity never change once set
            placed = {(r["global_user_id"], r["market_id"]): (r["wave_id"], r["valid_from"], r["valid_until"])
                      for r in rows if r["wave_id"]}  # fmt: skip
            assert all(placed.get(k) == v for k, v in placed_before.items()), what
            for k, (wave_id, valid_from, _) in placed.items():
                notify = dt.datetime.fromisoformat(next(w["notify_at"] for w in waves if w["wave_id"] == wave_id))
                assert valid_from == notify.replace(tzinfo=None) - dt.timedelta(days=1), (what, k)
            # a sent wave never changes: the same messages, and no new member
            for wave_id, before in frozen_before.items():
                now_messages = {r["message_id"]: r["text"] for r in messages.where(f"wave_id = '{wave_id}'").collect()}
                assert now_messages == before, (what, wave_id)
            frozen_before = {
                w: {r["message_id"]: r["text"] for r in messages.where(f"wave_id = '{w}'").collect()} for w in status
            }
            placed_before = placed


def _fans_world(spark, fans):
    """Registrants and `selected` rows for (fan, market, market_rank) triples."""
    registrants = literal_frame(
        spark,
        [(CID, f, f"M-{f}", f"{f.lower()}@example.com", f"{f.lower()}@example.com", None, None, None, False, False,
          f, "Doe", "en_US", "US", [m], T0, f, 1, None, None, None, [], True, [], "seed") for f, m, _ in fans],
        CATALOG["registrants"].schema,
    )  # fmt: skip
    selections = literal_frame(
        spark, [(CID, f, "selected", m, 1, rank, None, 0.9, [], "seed") for f, m, rank in fans],
        CATALOG["selections"].schema,
    )  # fmt: skip
    return registrants, selections


def _tm_campaign(*waves):
    return make_campaign(CID, markets=("NYC-01",), codes={"source": "tm"}, waves=list(waves))


W1 = {"wave_id": "wave-1", "notify_at": "2027-03-01T15:00:00Z", "limit": 1, "channels": "email"}
W2 = {"wave_id": "wave-2", "notify_at": "2027-03-05T15:00:00Z", "channels": "email"}


def _assign(spark, campaign, fans, codes=None, statuses=(), now=T0):
    registrants, selections = _fans_world(spark, fans)
    codes = codes if codes is not None else spark.createDataFrame([], CATALOG["code_assignments"].schema)
    waves = literal_frame(
        spark, [(CID, w, s) for w, s in statuses], "campaign_id string, wave_id string, status string"
    )
    pool = spark.createDataFrame([], CATALOG["code_pool"].schema)
    inputs = CodeInputs(selections, pool, registrants, codes, waves=waves)
    plan = plan_assignments(campaign, inputs, None, "run", T0, now=now)
    keys = ["campaign_id", "global_user_id", "market_id"]
    after = codes.join(plan.placed.select(*keys), keys, "left_anti").unionByName(plan.placed).unionByName(plan.new)
    return after.localCheckpoint(), {r["global_user_id"]: (r["wave_id"], r["valid_from"]) for r in after.collect()}


def test_validity_of_a_late_wave_member_is_set_when_a_wave_first_takes_him(spark):
    """wave-1 (limit 1) is full, so F2's code has no wave and no validity; a wave added later takes
    him and sets his validity from its notify time, and F1's wave and validity stay as they were."""
    fans = [("F1", "NYC-01", 1), ("F2", "NYC-01", 2)]
    codes, first = _assign(spark, _tm_campaign(W1), fans)
    assert first == {"F1": ("wave-1", dt.datetime(2027, 2, 28, 15)), "F2": (None, None)}
    _, later = _assign(spark, _tm_campaign(W1, W2), fans, codes)
    assert later == {"F1": first["F1"], "F2": ("wave-2", dt.datetime(2027, 3, 4, 15))}


def test_a_wave_limit_is_never_exceeded_when_better_ranked_fans_arrive(spark):
    """F2 holds wave-1's one place; F1 arrives later with a better market rank: wave-1 stays F2's,
    F1 goes to the next wave with room."""
    codes, _ = _assign(spark, _tm_campaign(W1, W2), [("F2", "NYC-01", 2)])
    _, got = _assign(spark, _tm_campaign(W1, W2), [("F1", "NYC-01", 1), ("F2", "NYC-01", 2)], codes)
    assert {f: w for f, (w, _) in got.items()} == {"F1": "wave-2", "F2": "wave-1"}


def test_a_wave_that_is_sending_sent_or_past_its_notify_time_takes_no_new_fans(spark):
    unlimited = {**W1, "limit": None}
    fans = [("F1", "NYC-01", 1)]
    _, only_wave_1 = _assign(spark, _tm_campaign(unlimited), fans, now=dt.datetime(2027, 3, 1, 15, tzinfo=dt.UTC))
    assert only_wave_1 == {"F1": (None, None)}
    for statuses in ([("wave-1", "sending")], [("wave-1", "completed")]):
        _, with_wave_2 = _assign(spark, _tm_campaign(unlimited, W2), fans, statuses=statuses)
        assert with_wave_2["F1"][0] == "wave-2", statuses
