"""Allocation rules on tiny frames: the worked examples, properties on generated inputs, top-up."""

from __future__ import annotations

import random

import pytest
from helpers import make_campaign
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from campaign_pipeline.catalog import CATALOG
from campaign_pipeline.frames import literal_frame
from campaign_pipeline.selection.stage import COLUMNS, select_fans

CID = "tour-test"


def _inputs(spark, fans):
    """fans: (id, band_score or None, [markets], eligible)."""
    registrants = literal_frame(
        spark,
        [(CID, f, e, [] if e else ["FRAUD_RING"], prefs) for f, _, prefs, e in fans],
        "campaign_id string, global_user_id string, eligible boolean, ineligible_reasons array<string>, "
        "market_preferences array<string>",
    )
    scores = literal_frame(
        spark,
        [(CID, f, s, _band(s), s if _band(s) else None) for f, s, _, _ in fans],
        "campaign_id string, global_user_id string, raw_score double, band string, band_score double",
    )
    return registrants, scores


def _band(score):
    if score is None or score < 0.22:
        return None
    return "high" if score >= 0.95 else "mid" if score >= 0.8 else "low"


def _campaign(capacities: dict[str, int], **options):
    c = make_campaign(CID, markets=tuple(capacities), options={"min_score": 0.22, **options})
    return c.model_copy(
        update={"markets": [m.model_copy(update={"capacity": capacities[m.market_id]}) for m in c.markets]}
    )


def _empty_previous(spark):
    return spark.createDataFrame([], CATALOG["selections"].schema)


def _select(spark, campaign, fans, previous=None, run_id="r1"):
    registrants, scores = _inputs(spark, fans)
    return select_fans(spark, campaign, registrants, scores, previous or _empty_previous(spark), run_id)


def _verdicts(df):
    return {
        (r["global_user_id"], r["market_id"]): (r["verdict"], r["market_rank"], r["waitlist_position"])
        for r in df.collect()
    }


def test_spec_worked_example_first_choices_first(spark):
    campaign = _campaign({"A": 1, "B": 1})
    fans = [("X", 0.99, ["A", "B"], True), ("Y", 0.98, ["A"], True), ("Z", 0.30, ["B"], True)]
    out = _select(spark, campaign, fans)
    assert _verdicts(out) == {
        ("X", "A"): ("selected", 1, None),
        ("Z", "B"): ("selected", 1, None),
        ("Y", "A"): ("waitlisted", None, 1),
    }


def test_order_by_preference_changes_who_gets_a_contested_seat(spark):
    # X's second choice outranks Y's first choice: with order_by_preference Y's first choice wins.
    fans = [("X", 0.90, ["B", "A"], True), ("Y", 0.50, ["A"], True), ("W", 0.95, ["B"], True)]
    ordered = _verdicts(_select(spark, _campaign({"A": 1, "B": 1}), fans))
    assert ordered[("Y", "A")][0] == "selected" and ordered[("X", "B")][0] == "waitlisted"
    unordered = _verdicts(_select(spark, _campaign({"A": 1, "B": 1}, order_by_preference=False), fans))
    assert unordered[("X", "A")] == ("selected", 1, None)
    assert unordered[("Y", "A")] == ("waitlisted", None, 1)
    assert unordered[("W", "B")] == ("selected", 1, None)


def test_without_order_a_fan_admitted_twice_keeps_first_listed_and_frees_the_other(spark):
    fans = [("X", 0.99, ["A", "B"], True), ("V", 0.40, ["B"], True)]
    got = _verdicts(_select(spark, _campaign({"A": 1, "B": 1}, order_by_preference=False), fans))
    assert got == {("X", "A"): ("selected", 1, None), ("V", "B"): ("selected", 1, None)}


def test_multi_market_fans_may_win_several_markets(spark):
    fans = [("X", 0.99, ["A", "B"], True), ("Y", 0.50, ["B"], True)]
    out = _select(spark, _campaign({"A": 1, "B": 2}, single_market=False), fans)
    # B serves first choices first: Y (first choice B) ranks before X (second choice B)
    assert _verdicts(out) == {
        ("X", "A"): ("selected", 1, None),
        ("Y", "B"): ("selected", 1, None),
        ("X", "B"): ("selected", 2, None),
    }


def test_rejections_carry_reasons_min_score_applies_and_ties_break_by_fan_id(spark):
    fans = [
        ("F2", 0.90, ["A"], True),
        ("F1", 0.90, ["A"], True),
        ("BOT", 0.99, ["A"], False),
        ("NOSCORE", None, ["A"], True),
        ("LOW", 0.10, ["A"], True),
        ("MINSCORE", 0.30, ["A"], True),
    ]
    out = _select(spark, _campaign({"A": 1}, min_score=0.5), fans)
    rows = {r["global_user_id"]: r for r in out.collect()}
    assert rows["F1"]["verdict"] == "selected" and rows["F2"]["waitlist_position"] == 1
    assert rows["BOT"]["reasons"] == ["FRAUD_RING"] and rows["BOT"]["verdict"] == "rejected"
    assert rows["NOSCORE"]["reasons"] == ["NO_SCORE"]
    assert rows["LOW"]["reasons"] == ["BELOW_LOWEST_BAND"]
    assert rows["MINSCORE"]["reasons"] == ["BELOW_MIN_SCORE"]


def _random_case(seed: int, n_fans: int, n_markets: int):
    rng = random.Random(seed)
    markets = [f"M{i}" for i in range(n_markets)]
    capacities = {m: rng.randint(1, 4) for m in markets}
    fans = []
    for i in range(n_fans):
        prefs = rng.sample(markets, rng.randint(1, min(4, n_markets)))
        score = round(rng.choice([0.3, 0.5, 0.85, 0.9, 0.97, rng.random() * 0.7 + 0.25]), 3)
        fans.append((f"F{i:03d}", score, prefs, rng.random() > 0.1))
    return capacities, fans


def _generated_cases(n_cases: int, seed: int):
    """Many small campaigns (ids C000…) from one seed: allocation is partitioned by campaign, so one
    Spark pass decides all of them independently."""
    rng = random.Random(seed)
    return {
        f"C{i:03d}": _random_case(rng.randrange(1 << 30), rng.randint(1, 16), rng.randint(1, 4)) for i in range(n_cases)
    }


def _allocate_cases(spark, cases, **options):
    from campaign_pipeline.selection.allocate import allocate, waitlist

    rows, caps = [], []
    for cid, (capacities, fans) in cases.items():
        rows += [(cid, f, s, prefs) for f, s, prefs, eligible in fans if eligible]
        caps += [(cid, m, c, 0) for m, c in capacities.items()]
    candidates = literal_frame(
        spark, rows, "campaign_id string, global_user_id string, band_score double, market_preferences array<string>"
    )
    base = literal_frame(spark, caps, "campaign_id string, market_id string, remaining long, offset long")
    kept = spark.createDataFrame([], CATALOG["selections"].schema)
    campaign = _campaign({"A": 1}, **options)
    placed = allocate(campaign, candidates, kept, base)
    selected = placed.withColumn("verdict", F.lit("selected")).withColumn("waitlist_position", F.lit(None).cast("long"))
    waiting = waitlist(candidates, placed).drop("reasons")
    return selected.unionByName(waiting).collect()


def _check_properties(capacities, fans, rows, order_by_preference, single_market=True):
    selected = [r for r in rows if r["verdict"] == "selected"]
    eligible = {f for f, _, _, e in fans if e}
    by_fan = {}
    for r in rows:
        by_fan.setdefault(r["global_user_id"], []).append(r)
    assert set(by_fan) == eligible  # every eligible fan has a verdict
    if single_market:
        assert all(len(v) == 1 for v in by_fan.values())  # one verdict per fan
    taken = {m: 0 for m in capacities}
    for r in selected:
        taken[r["market_id"]] += 1
    assert all(taken[m] <= capacities[m] for m in capacities), taken  # capacity never exceeded
    ranks = {}
    for r in selected:
        ranks.setdefault(r["market_id"], []).append(r["market_rank"])
    assert all(sorted(v) == list(range(1, len(v) + 1)) for v in ranks.values())
    info = {f: (s, prefs) for f, s, prefs, _ in fans}
    won = {(r["global_user_id"], r["market_id"]) for r in selected}
    for fan in eligible:
        _, prefs = info[fan]
        # no eligible fan left out of a preferred market that ended with free capacity
        if single_market and any(fan == f for f, _ in won):
            continue
        assert all(taken[m] == capacities[m] for m in prefs if (fan, m) not in won), (fan, taken)
    if not order_by_preference:  # stable: no blocking pair (ordered rounds serve first choices first instead)
        assert not blocking_pairs(capacities, fans, selected), blocking_pairs(capacities, fans, selected)
    if order_by_preference:
        # a fan who put M first is never waitlisted while a lower band_score got M as a later choice
        for r in rows:
            if r["verdict"] != "waitlisted":
                continue
            score, prefs = info[r["global_user_id"]]
            later = [s for s in selected if s["market_id"] == prefs[0] and s["preference_rank"] > 1]
            assert all(s["band_score"] > score for s in later), (r, later)


def blocking_pairs(capacities, fans, selected):
    """(fan, market) pairs that would both rather be matched: the fan listed the market before what he
    got (or got nothing), and the market has a free seat or holds a fan ordered after him
    (band_score descending, then fan id)."""
    info = {f: (s, prefs) for f, s, prefs, e in fans if e}
    holders: dict[str, list] = {m: [] for m in capacities}
    got: dict[str, set] = {}
    for r in selected:
        holders[r["market_id"]].append((-r["band_score"], r["global_user_id"]))
        got.setdefault(r["global_user_id"], set()).add(r["market_id"])
    pairs = []
    for fan, (score, prefs) in info.items():
        mine = got.get(fan, set())
        wanted = prefs if len(mine) != 1 or len(prefs) == 1 else prefs[: min(prefs.index(m) for m in mine)]
        for market in wanted:
            if market in mine:
                continue
            seats = holders[market]
            if len(seats) < capacities[market] or any(h > (-score, fan) for h in seats):
                pairs.append((fan, market))
    return pairs


def test_deferred_acceptance_leaves_no_seat_empty_that_a_fan_wanted(spark):
    """order_by_preference: false — X 0.99 [A, B], Y 0.98 [B, C], Z 0.30 [C], one seat each: the stable
    outcome is X→A, Y→B, Z→C (the old admit-then-free rounds left B empty and waitlisted Z)."""
    campaign = _campaign({"A": 1, "B": 1, "C": 1}, order_by_preference=False)
    fans = [("X", 0.99, ["A", "B"], True), ("Y", 0.98, ["B", "C"], True), ("Z", 0.30, ["C"], True)]
    got = _verdicts(_select(spark, campaign, fans))
    assert got == {
        ("X", "A"): ("selected", 1, None),
        ("Y", "B"): ("selected", 1, None),
        ("Z", "C"): ("selected", 1, None),
    }


def test_deferred_acceptance_lets_a_better_fan_displace_a_holder_who_then_moves_on(spark):
    # Y first holds A; X (better) is rejected by B, proposes to A and displaces Y, who moves on to C.
    campaign = _campaign({"A": 1, "B": 1, "C": 1}, order_by_preference=False)
    fans = [("W", 0.99, ["B"], True), ("X", 0.90, ["B", "A"], True), ("Y", 0.50, ["A", "C"], True)]
    got = _verdicts(_select(spark, campaign, fans))
    assert got == {
        ("W", "B"): ("selected", 1, None),
        ("X", "A"): ("selected", 1, None),
        ("Y", "C"): ("selected", 1, None),
    }


@pytest.mark.parametrize(
    "options",
    [
        {"order_by_preference": True, "single_market": True},
        {"order_by_preference": False, "single_market": True},
        {"order_by_preference": True, "single_market": False},
        {"order_by_preference": False, "single_market": False},
    ],
    ids=["ordered", "unordered", "multi-market", "multi-market-unordered"],
)
def test_allocation_properties_on_40_generated_campaigns(spark, options):
    cases = _generated_cases(40, seed=hash(tuple(options.items())) % 1000)
    rows = _allocate_cases(spark, cases, **options)
    for cid, (capacities, fans) in cases.items():
        mine = [r for r in rows if r["campaign_id"] == cid]
        _check_properties(capacities, fans, mine, options["order_by_preference"], options["single_market"])


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_fans=st.integers(1, 14), n_markets=st.integers(1, 4))
def test_selection_properties_end_to_end_with_rejections(spark, seed, n_fans, n_markets):
    capacities, fans = _random_case(seed, n_fans, n_markets)
    out = _select(spark, _campaign(capacities), fans).collect()
    assert {r["global_user_id"] for r in out} == {f for f, *_ in fans}  # nothing lost
    assert all(r["verdict"] == "rejected" for r in out if r["global_user_id"] in {f for f, _, _, e in fans if not e})
    _check_properties(capacities, fans, [r for r in out if r["verdict"] != "rejected"], True)


def test_few_taken_out_of_many_keeps_each_markets_best_before_the_shuffle_and_places_the_same(spark, monkeypatch):
    """A handful of seats for hundreds of fans: allocation bounds each market's ranking by the most
    capacity left (Spark's window group limit). The placements are those of the unbounded ranking."""
    from campaign_pipeline.selection import allocate as allocation

    capacities, fans = _random_case(7, 300, 4)
    cases = {"C000": (capacities, fans)}
    bounds, limited = [], []
    few_taken, take = allocation._few_taken, allocation._take

    def planned(*args):  # whether Spark plans each round's ranking with a group limit
        ranked = take(*args)
        limited.append("WindowGroupLimit" in ranked._jdf.queryExecution().optimizedPlan().toString())
        return ranked

    monkeypatch.setattr(allocation, "_few_taken", lambda *a: bounds.append(few_taken(*a)) or bounds[-1])
    monkeypatch.setattr(allocation, "_take", planned)
    rows = _allocate_cases(spark, cases)
    assert bounds == [max(capacities.values())] and limited and all(limited)  # the bounded ranking was used
    _check_properties(capacities, fans, rows, True)
    monkeypatch.setattr(allocation, "_few_taken", lambda *a: None)
    assert sorted(map(tuple, _allocate_cases(spark, cases))) == sorted(map(tuple, rows))


def test_rounds_stop_once_every_market_is_full_and_place_the_same(spark, monkeypatch):
    """Capacity gone after the first choices: no later round is planned or run, and the
    placements are those of running every round."""
    from campaign_pipeline.selection import allocate as allocation

    capacities, fans = _random_case(7, 300, 4)
    cases = {"C000": (capacities, fans)}
    rounds, take = [], allocation._take
    monkeypatch.setattr(allocation, "_take", lambda *a: rounds.append(1) or take(*a))
    rows = _allocate_cases(spark, cases)
    assert max(len(prefs) for _, _, prefs, _ in fans) == 4 and len(rounds) == 1
    _check_properties(capacities, fans, rows, True)
    # seats left after round 1 (B, C), none after round 2: round 3 is the first not run
    full_after_two = {
        "C001": (
            {"A": 1, "B": 1, "C": 1},
            [("F1", 0.9, ["A", "B", "C"], True), ("F2", 0.8, ["A", "B", "C"], True),
             ("F3", 0.7, ["A", "C", "B"], True), ("F4", 0.6, ["A", "C", "B"], True)],
        )
    }  # fmt: skip
    rounds.clear()
    two = _allocate_cases(spark, full_after_two)
    assert len(rounds) == 2
    assert sorted((r["global_user_id"], r["verdict"], r["market_id"]) for r in two) == [
        ("F1", "selected", "A"), ("F2", "selected", "B"), ("F3", "selected", "C"), ("F4", "waitlisted", "A")
    ]  # fmt: skip
    monkeypatch.setattr(allocation, "_left_after", lambda base, placed: allocation._after(base, placed))
    rounds.clear()
    assert sorted(map(tuple, _allocate_cases(spark, cases))) == sorted(map(tuple, rows)) and len(rounds) == 4
    rounds.clear()
    assert sorted(map(tuple, _allocate_cases(spark, full_after_two))) == sorted(map(tuple, two)) and len(rounds) == 3


def _table(df):
    return sorted(tuple(r) for r in df.select(*COLUMNS).collect())


def test_shuffled_rows_and_other_partition_counts_give_identical_selections(spark):
    cases = _generated_cases(30, seed=99)
    baseline = sorted(map(tuple, _allocate_cases(spark, cases)))
    shuffled = {cid: (caps, random.Random(1).sample(fans, len(fans))) for cid, (caps, fans) in reversed(cases.items())}
    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        for partitions in ("1", "4"):
            spark.conf.set("spark.sql.shuffle.partitions", partitions)
            assert sorted(map(tuple, _allocate_cases(spark, shuffled))) == baseline
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)


def test_rerun_keeps_everything_and_more_capacity_only_tops_up(spark):
    capacities, fans = _random_case(7, 30, 3)
    campaign = _campaign(capacities)
    first = _select(spark, campaign, fans, run_id="r1")
    first = first.localCheckpoint(eager=True)
    again = _select(spark, campaign, fans, previous=first, run_id="r2")
    assert _table(again.drop("run_id").withColumn("run_id", again["verdict"])) == _table(
        first.drop("run_id").withColumn("run_id", first["verdict"])
    )
    bigger = dict(capacities)
    grown = sorted(bigger)[0]
    bigger[grown] += 10
    topped = _select(spark, _campaign(bigger), fans, previous=first, run_id="r3")
    before = {r["global_user_id"]: (r["verdict"], r["market_id"]) for r in first.collect()}
    after = {r["global_user_id"]: (r["verdict"], r["market_id"]) for r in topped.collect()}
    changed = [f for f in before if before[f][0] != after[f][0]]
    assert 0 < len(changed) <= 10
    # every earlier selection survives with its market; the new ones are in the grown market
    assert all(after[f] == before[f] for f in before if before[f][0] == "selected")
    assert all(after[f] == ("selected", grown) for f in changed)


def test_reassign_recomputes_from_scratch(spark):
    fans = [("X", 0.99, ["A"], True), ("Y", 0.50, ["A"], True)]
    previous = literal_frame(
        spark,
        [
            (CID, "Y", "selected", "A", 1, 1, None, 0.5, [], "r0"),
            (CID, "X", "waitlisted", "A", 1, None, 1, 0.99, ["NOT_REACHED"], "r0"),
        ],
        CATALOG["selections"].schema,
    )
    redone = _verdicts(_select(spark, _campaign({"A": 1}, reassign=True), fans, previous=previous))
    assert redone[("X", "A")][0] == "selected" and redone[("Y", "A")][0] == "waitlisted"


def test_reassign_keeps_every_selection_that_holds_an_issued_code(spark):
    """Y holds A's only seat and its code; X (better) arrives. Under reassign, Y keeps A (issued codes
    are never taken back) and X waits: A never holds capacity + 1 codes, Y is never left codeless
    (before, X took A and Y, moved or waitlisted, kept A's code)."""
    fans = [("X", 0.99, ["A", "B"], True), ("Y", 0.50, ["A", "B"], True), ("V", 0.40, ["B"], True)]
    previous = literal_frame(
        spark,
        [
            (CID, "Y", "selected", "A", 1, 1, None, 0.5, [], "r0"),
            (CID, "V", "selected", "B", 1, 1, None, 0.4, [], "r0"),
        ],
        CATALOG["selections"].schema,
    )
    coded = literal_frame(spark, [(CID, "Y", "A")], "campaign_id string, global_user_id string, market_id string")
    registrants, scores = _inputs(spark, fans)
    campaign = _campaign({"A": 1, "B": 1}, reassign=True)
    got = _verdicts(select_fans(spark, campaign, registrants, scores, previous, "r1", coded=coded))
    # Y keeps A with its code; V's uncoded seat at B is decided again (V's first choice wins it)
    assert got == {
        ("Y", "A"): ("selected", 1, None),
        ("V", "B"): ("selected", 1, None),
        ("X", "A"): ("waitlisted", None, 1),
    }
