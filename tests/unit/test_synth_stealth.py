"""Synthetic stealth rings and decoys (20k registrants): who they are, the tactics they use, the
truth they carry, and that every other account is generated exactly as without them."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from campaign_pipeline.synth import SynthSpec, generate
from campaign_pipeline.synth.accounts import Draw, accounts, fan_activity, make_campaign
from campaign_pipeline.synth.command import _arguments
from campaign_pipeline.synth.scorecard import screening_quality
from campaign_pipeline.synth.spec import (
    BLOCKED_DOMAIN,
    CA_AREAS,
    DISPOSABLE,
    PLANTED,
    PROVIDERS,
    REGISTRATION_COLUMNS,
    STEALTH_TACTICS,
    WINDOW_START,
)
from campaign_pipeline.synth.stealth import layout

N = 20_000
SPEC = SynthSpec(campaign_id="stealth-20k", registrants=N, seed=11)
BASELINE = SynthSpec(campaign_id="stealth-20k", registrants=N, seed=11, stealth_rings=0, decoys=False)
FLAGS = sorted({case.flag for case in PLANTED})
NEW_COLUMNS = ["stealth_ring_id", "stealth_tactics", "decoy", "decoy_group", "carve_kind", "carve_group",
               "carve_rank", "carve_size"]  # fmt: skip


def _rows(df):
    return [r.asDict() for r in df.collect()]


@pytest.fixture(scope="module")
def acc(spark):
    df = accounts(spark, SPEC, make_campaign(SPEC)).persist()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def rows(acc):
    activity = fan_activity(Draw(SPEC.seed), acc)
    start = int(WINDOW_START.timestamp())
    joined = acc.join(activity, "global_user_id", "left").select(
        "*",  # days before the window (timestamps collect in the local time zone)
        ((F.lit(start) - F.unix_timestamp("account_created_at")) / 86400).alias("created_days_before"),
        F.unix_timestamp("truth_registered_at").alias("registered_s"),
    )
    return {r["acct"]: r for r in _rows(joined)}


@pytest.fixture(scope="module")
def stealth(rows):
    rings = defaultdict(list)
    for r in rows.values():
        if r["role"] == "stealth":
            rings[r["stealth_ring_id"]].append(r)
    return {ring: sorted(members, key=lambda r: r["carve_rank"]) for ring, members in rings.items()}


@pytest.fixture(scope="module")
def decoys(rows):
    groups = defaultdict(list)
    for r in rows.values():
        if r["decoy"]:
            groups[(r["decoy"], r["decoy_group"] if r["decoy"] != "new_fan" else r["acct"])].append(r)
    return groups


def _net(ip: str) -> str:
    return ip.rsplit(".", 1)[0]


# ---------------------------------------------------------------- stealth rings
def test_rings_have_8_to_30_accounts_and_2_to_4_tactics_every_tactic_used(stealth):
    assert len(stealth) == SPEC.stealth_ring_count() == N // 1000
    seen = set()
    for ring, members in stealth.items():
        tactics = members[0]["stealth_tactics"]
        assert 8 <= len(members) <= 30, ring
        assert [m["carve_rank"] for m in members] == list(range(len(members)))
        assert all(m["stealth_tactics"] == tactics for m in members)
        assert 2 <= len(tactics) <= 4 and set(tactics) <= set(STEALTH_TACTICS), tactics
        assert not {"catchall_domain", "pattern_local"} <= set(tactics)
        seen |= set(tactics)
    assert seen == set(STEALTH_TACTICS)
    assert len({tuple(m[0]["stealth_tactics"]) for m in stealth.values()}) > 3  # mixed


def test_stealth_accounts_share_no_exact_identifier(rows):
    for column in ("truth_email", "truth_phone_e164", "device_id", "payment_fingerprint", "ip_address"):
        counts = Counter(r[column] for r in rows.values() if r[column] is not None)
        shared = [r["acct"] for r in rows.values() if r["role"] == "stealth" and counts.get(r[column], 0) > 1]
        assert shared == [], column
    stealth = [r for r in rows.values() if r["role"] == "stealth"]
    # own device and card per account, or none at the genuine rates
    assert 0.15 < sum(r["device_id"] is None for r in stealth) / len(stealth) < 0.45
    assert 0.25 < sum(r["payment_fingerprint"] is None for r in stealth) / len(stealth) < 0.55


def test_stealth_accounts_truth_and_activity(rows, acc):
    biggest = [m.market_id for m in sorted(make_campaign(SPEC).markets, key=lambda m: -m.capacity)][:2]
    stealth = [r for r in rows.values() if r["role"] == "stealth"]
    for r in stealth:
        assert r["person_id"] == r["acct"] and r["single_account"] is False and r["decoy"] is None
        assert r["expected_tags"] == ["STEALTH_RING"], r["expected_tags"]
        assert not any(r[f] for f in FLAGS if f != "do_not_text"), r
        assert r["country"] == "US" and r["truth_phone_e164"][2:5] not in CA_AREAS
        assert r["market_preferences"] in (biggest[:1], biggest)
        assert 3 <= r["created_days_before"] <= 45
        assert r["events_attended_24m"] == 0 and r["artist_tickets_purchased"] == 0 and r["chargebacks_24m"] == 0
        assert r["tickets_purchased_24m"] <= 3 and r["artist_streams_90d"] <= 5 and r["resale_listings_24m"] <= 9
    assert 0.75 < sum(r["phone_confirmed"] for r in stealth) / len(stealth) < 0.95
    assert any(r["do_not_text"] for r in stealth)
    # spread over the whole window, never a burst
    times = sorted(r["registered_s"] for r in stealth)
    assert times[-1] - times[0] > 6 * 86400
    by_ring = defaultdict(Counter)  # registrations per ring and 10 minutes
    for r in stealth:
        by_ring[r["stealth_ring_id"]][r["registered_s"] // 600] += 1
    assert max(max(c.values()) for c in by_ring.values()) <= 3


def test_each_tactic_leaves_its_weak_signal(stealth):
    domains = set()
    for members in stealth.values():
        tactics = set(members[0]["stealth_tactics"])
        ips = [m["ip_address"] for m in members]
        nets = Counter(_net(ip) for ip in ips)
        emails = [m["truth_email"] for m in members]
        local = [e.split("@")[0] for e in emails]
        email_domains = {e.split("@")[1] for e in emails}
        phones = [int(m["truth_phone_e164"][2:]) for m in members]
        postals = {m["postal_code"] for m in members}
        if "proxy24" in tactics:
            assert len(nets) <= 2 and min(nets.values()) >= 4, nets
            assert len(set(ips)) == len(ips)
        else:
            assert len(nets) == len(members)
        if "catchall_domain" in tactics:
            (domain,) = email_domains
            assert domain.endswith(".com") and domain not in PROVIDERS + DISPOSABLE + [BLOCKED_DOMAIN], domain
            assert domain not in domains  # a domain of its own
            domains.add(domain)
            assert all(re.fullmatch(r"[a-z]+\.[a-z]+\d\d", x) for x in local), local
        elif "pattern_local" in tactics:
            assert email_domains <= set(PROVIDERS) - {"gmail.com"}
            shapes = {re.sub(r"\d", "9", re.sub(r"[a-z]+", "a", x)) for x in local}
            assert len(shapes) == 1 and re.search(r"[._]", shapes.pop()), local
            assert len({re.sub(r"\D", "", x) for x in local}) == len(local)  # digits differ per account
        else:
            assert email_domains <= set(PROVIDERS)
            assert all(re.fullmatch(r"[a-z]+\d+", x) for x in local), local
        if "number_block" in tactics:
            steps = {b - a for a, b in zip(phones, phones[1:], strict=False)}
            assert len(steps) == 1 and steps <= {1, 2, 3} and max(phones) - min(phones) < 100
            assert len({p // 100 for p in phones}) == 1  # one block of 100 numbers
        else:
            assert len({p // 100 for p in phones}) == len(phones)
        if "drop_postal" in tactics:
            assert len(postals) == 1
        else:
            assert len(postals) > len(members) // 2
    from disposable_email_domains import blocklist

    assert not domains & set(blocklist)


# ---------------------------------------------------------------- decoys
def test_decoys_share_single_weak_signals_and_carry_no_tags(rows, decoys):
    kinds = Counter(kind for kind, _ in decoys)
    assert kinds["company"] >= 1 and kinds["campus"] >= 1 and kinds["family"] >= 10 and kinds["new_fan"] >= 50
    per_kind = Counter(r["decoy"] for r in rows.values() if r["decoy"])
    assert all(0.002 * N <= per_kind[k] <= 0.016 * N for k in ("company", "campus", "family", "new_fan")), per_kind
    emails = Counter(r["truth_email"] for r in rows.values())
    phones = Counter(r["truth_phone_e164"] for r in rows.values())
    for (kind, _), members in decoys.items():
        for r in members:
            assert r["role"] == "genuine" and r["single_account"] is True and r["expected_tags"] == [], r
            assert not any(r[f] for f in FLAGS if f != "do_not_text"), r
            assert emails[r["truth_email"]] == 1 and phones[r["truth_phone_e164"]] == 1, r
            assert r["created_days_before"] is not None  # every decoy has fan activity
        nets = {_net(r["ip_address"]) for r in members}
        postals = {r["postal_code"] for r in members}
        if kind == "company":
            assert 15 <= len(members) <= 60 and len(nets) == 1 and len(postals) == 1
            assert len({r["ip_address"] for r in members}) == len(members)
            assert len({r["truth_email"].split("@")[1] for r in members}) == 1
            assert all(re.fullmatch(r"[a-z]+\.[a-z]+@[a-z]+-[a-z0-9]+\.com", r["truth_email"]) for r in members)
            assert all(r["created_days_before"] > 365 for r in members)
        elif kind == "campus":
            assert 100 <= len(members) <= 300 and len(nets) == 1 and len(postals) == 1
            assert len({r["ip_address"] for r in members}) < len(members)  # some share an address
            assert all(r["truth_email"].split("@")[1] in PROVIDERS for r in members)
            new = sum(r["created_days_before"] <= 90 for r in members) / len(members)
            no_events = sum(r["events_attended_24m"] == 0 for r in members) / len(members)
            # new students have attended nothing yet; about a third of the others neither
            assert 0.15 < new < 0.45 and 0.3 < no_events < 0.7, (new, no_events)
        elif kind == "family":
            assert 2 <= len(members) <= 5
            assert len({r["ip_address"] for r in members}) == 1 and len(postals) == 1
            assert len({r["last_name"] for r in members}) == 1
        else:
            (r,) = members
            assert 1 <= r["created_days_before"] <= 30
            assert r["events_attended_24m"] == 0 and r["resale_listings_24m"] == 0
            assert r["tickets_purchased_24m"] <= 2


# ---------------------------------------------------------------- everything else stays as it was
def test_every_other_account_is_generated_exactly_as_without_them(spark, acc):
    base = accounts(spark, BASELINE, make_campaign(BASELINE)).persist()  # read five times below
    columns = [c for c in base.columns if c not in NEW_COLUMNS]
    carved = acc.where(F.col("carve_kind").isNotNull())
    rest = acc.where(F.col("carve_kind").isNull()).select(columns)
    base_rest = base.join(carved.select("acct"), "acct", "left_anti").select(columns)
    assert rest.exceptAll(base_rest).isEmpty() and base_rest.exceptAll(rest).isEmpty()
    # carved only from genuine single-account people
    was = base.join(carved.select("acct"), "acct").groupBy("role", "single_account").count().collect()
    assert [(r["role"], r["single_account"]) for r in was] == [("genuine", True)]
    # the same fan activity for everyone else
    d = Draw(SPEC.seed)
    others = carved.select("global_user_id")
    activity = fan_activity(d, acc).join(others, "global_user_id", "left_anti")
    base_activity = fan_activity(d, base).join(others, "global_user_id", "left_anti")
    assert activity.exceptAll(base_activity).isEmpty() and base_activity.exceptAll(activity).isEmpty()
    # nothing of this without stealth rings and decoys
    assert base.where(F.col("carve_kind").isNotNull() | (F.col("role") == "stealth")).isEmpty()
    base.unpersist()


def test_options_and_layout():
    assert SynthSpec(registrants=500).stealth_ring_count() == 1
    assert SynthSpec(registrants=20_000).stealth_ring_count() == 20
    assert SynthSpec(registrants=20_000, stealth_rings=3).stealth_ring_count() == 3
    assert layout(SynthSpec(registrants=20_000, stealth_rings=0, decoys=False)).blocks == 0
    assert [r.kind for r in layout(SynthSpec(registrants=20_000, decoys=False)).regions] == ["stealth"]
    assert [r.kind for r in layout(SynthSpec(registrants=20_000, stealth_rings=0)).regions] == [
        "family", "new_fan", "company", "campus"]  # fmt: skip
    parser = argparse.ArgumentParser()
    _arguments(parser)
    args = parser.parse_args(["--out", "x", "--stealth-rings", "3", "--no-decoys"])
    assert args.stealth_rings == 3 and args.decoys is False
    args = parser.parse_args(["--out", "x"])
    assert args.stealth_rings is None and args.decoys is True


# ---------------------------------------------------------------- files, truth, scorecard
SMALL = SynthSpec(campaign_id="stealth-4k", registrants=4_000, seed=3, registrations_format="mixed")


@pytest.fixture(scope="module")
def written(spark, tmp_path_factory):
    return generate(spark, SMALL, str(tmp_path_factory.mktemp("stealth")))


def test_the_truth_stays_out_of_the_registrations(spark, written):
    # (the same seed writes the same files, stealth rings and decoys included: test_synthetic_campaign)
    landing = Path(written.landing)
    first = spark.read.parquet(written.truth)
    header = (landing / "registrations_000.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == REGISTRATION_COLUMNS
    for line in (landing / "registrations_001.jsonl").read_text(encoding="utf-8").splitlines():
        assert set(json.loads(line)) <= set(REGISTRATION_COLUMNS)  # (a null field is left out)
    types = dict(first.dtypes)
    assert types["stealth_ring_id"] == "bigint" and types["stealth_tactics"] == "array<string>"
    assert types["decoy"] == "string"
    # every stealth and decoy account has fan activity
    activity = spark.read.parquet(str(landing / "fan_activity.parquet")).select("global_user_id")
    planted = first.where(F.col("stealth_ring_id").isNotNull() | F.col("decoy").isNotNull())
    assert planted.count() > 100 and planted.join(activity, "global_user_id", "left_anti").isEmpty()


def test_scorecard_reports_stealth_recall_and_decoys_kept(spark, written):
    truth = spark.read.parquet(written.truth)
    perfect = truth.where("malformed IS NULL").select(
        "global_user_id",
        (F.coalesce(F.col("role"), F.lit("")) != "stealth").alias("eligible"),
        F.col("truth_phone_e164").alias("phone_e164"),
        F.col("expected_tags").alias("tags"),
    )
    q = screening_quality(perfect, truth)
    assert q["stealth_ineligible"] == 1.0 and q["stealth_rings"] == SMALL.stealth_ring_count()
    assert {k: v for k, v in q.items() if k.startswith("decoy_eligible:")} == {
        f"decoy_eligible:{k}": 1.0 for k in ("family", "new_fan", "company", "campus")}  # fmt: skip
    assert q["found:STEALTH_RING"] == 1.0
    # a truth written before stealth rings and decoys: their figures are None
    old = screening_quality(perfect, truth.drop("stealth_ring_id", "stealth_tactics", "decoy", "decoy_group"))
    assert old["stealth_rings"] == 0 and old["decoy_eligible:campus"] is None
