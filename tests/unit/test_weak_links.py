"""Weak links (stealth rings) on small inline DataFrames."""

from __future__ import annotations

import datetime as dt
import random
import re

import pytest
from chispa import assert_column_equality
from pyspark.sql import functions as F

from campaign_pipeline.config import WeakLinks
from campaign_pipeline.screening.weak_links import email_shape, ip_range, memberships, phone_blocks, weak_links

CID = "c1"
REGISTERED = dt.datetime(2027, 2, 3, 12, tzinfo=dt.UTC)
FRESH = REGISTERED - dt.timedelta(days=10)
OLD = REGISTERED - dt.timedelta(days=3000)
SCHEMA = (
    "campaign_id string, global_user_id string, registered_at timestamp, ip_address string, "
    "email_canonical string, phone_e164 string, postal_code string, country string, "
    "market_preferences array<string>, account_created_at timestamp, events_attended_24m long, "
    "resale_listings_24m long"
)
ACTIVITY = ("campaign_id", "global_user_id", "account_created_at", "events_attended_24m", "resale_listings_24m")


def _account(i: int, **over) -> dict:
    """A fresh account sharing nothing: its own /24, provider mailbox of a common shape, phone
    block, postal code."""
    row = {
        "campaign_id": CID,
        "global_user_id": f"U{i:06d}",
        "registered_at": REGISTERED,
        "ip_address": f"{10 + i // 60000}.{(i // 250) % 240}.{i % 250}.7",
        "email_canonical": f"fan{i}@gmail.com",
        "phone_e164": f"+1212{2000000 + i * 1000:07d}",
        "postal_code": f"{10000 + i:05d}",
        "country": "US",
        "market_preferences": [f"M{i % 7}"],
        "account_created_at": FRESH,
        "events_attended_24m": 0,
        "resale_listings_24m": 0,
    }
    return row | over


def _frame(spark, rows: list[dict]):
    """(registrants, fan activity) of the rows."""
    df = spark.createDataFrame([tuple(r[k] for k in _account(0)) for r in rows], SCHEMA)
    return df.drop(*ACTIVITY[2:]), df.select(*ACTIVITY)


def _linked(spark, rows, cfg=None, ring_size=6):
    result = weak_links(*_frame(spark, rows), cfg or WeakLinks(), ring_size)
    return {r["global_user_id"]: r.asDict() for r in result.accounts.collect()}, result.figures


def _ring(start: int, size: int, **shared) -> list[dict]:
    out = []
    for k in range(size):
        i = start + k
        row = _account(i, resale_listings_24m=1 + k % 9)  # resells, under the scalper threshold
        if "ip" in shared:
            row["ip_address"] = f"{shared['ip']}.{k + 2}"
        if "domain" in shared:
            row["email_canonical"] = f"first.last{k:02d}@{shared['domain']}"
        if "block" in shared:
            row["phone_e164"] = f"+1{shared['block'] + 2 * k}"
        if "postal" in shared:
            row["postal_code"] = shared["postal"]
        out.append(row)
    return out


def test_block_keys_read_ranges_blocks_and_shapes(spark):
    rows = [
        ("203.0.113.45", "203.0.113.0/24", "Maria.Garcia.4821", "a.a.9999"),
        ("2001:DB8:0a::1", "2001:db8:a::/48", "jo_e99", "a_a99"),
        ("2001:db8::1", "2001:db8:0::/48", "élodie2", "a9"),
        ("unknown", None, "x", "a"),
        ("127.0.0.1", None, "", ""),
        # one address however it is written; private, shared and reserved ones say nothing
        ("198.051.100.8", "198.51.100.0/24", "a", "a"),
        ("198.51.100.11:443", "198.51.100.0/24", "a", "a"),
        ("::ffff:198.51.100.10", "198.51.100.0/24", "a", "a"),
        ("[2001:db8:a::1]:443", "2001:db8:a::/48", "a", "a"),
        ("2001::2:3:4:5:6:7", "2001:0:2::/48", "a", "a"),
        ("10.1.2.3", None, "a", "a"),
        ("100.64.1.2", None, "a", "a"),
        ("300.1.2.3", None, "a", "a"),
        ("fe80::1", None, "a", "a"),
        ("::1", None, "a", "a"),
    ]
    df = spark.createDataFrame(rows, "ip string, range string, local string, shape string").select(
        ip_range(F.col("ip")).alias("got"), "range", email_shape(F.lower("local")).alias("got_shape"), "shape"
    )
    assert_column_equality(df, "got", "range")
    assert_column_equality(df, "got_shape", "shape")
    blocks = spark.range(1).select(*[b.alias(f"b{i}") for i, b in enumerate(phone_blocks(F.lit("+12125550151")))])
    assert list(blocks.first()) == ["a121255501", "b121255502"]


def test_a_ring_sharing_two_signals_is_a_stealth_ring_and_single_signals_link_nobody(spark):
    ring = _ring(0, 12, ip="198.51.100", domain="vk3q-tix.com")
    # honest fans sharing one signal each with the ring or with one another
    same_range = [_account(100, ip_address="198.51.100.200")]
    same_postal = [_account(101, postal_code="55555"), _account(102, postal_code="55555")]
    loners = [_account(200 + i) for i in range(600)]
    accounts, figures = _linked(spark, ring + same_range + same_postal + loners)
    assert set(accounts) == {r["global_user_id"] for r in ring}
    assert all(a["_stealth_ring"] and a["weak_cluster_size"] == 12 for a in accounts.values())
    assert all({"ip_range", "email_domain"} <= set(a["weak_signals"]) for a in accounts.values())
    assert figures["weak_fresh_accounts"] == 615 and figures["weak_links"] == 66


def test_a_chain_of_consecutive_numbers_with_one_drop_address_is_one_ring(spark):
    ring = _ring(0, 20, block=2125550100, postal="90210")
    for k, row in enumerate(ring):  # one ZIP, written as ZIP+4 by some
        row["postal_code"] = f"90210-{k:04d}" if k % 2 else "90210"
    accounts, _ = _linked(spark, ring + [_account(300 + i) for i in range(600)])
    assert set(accounts) == {r["global_user_id"] for r in ring}
    assert {a["weak_cluster_size"] for a in accounts.values()} == {20}
    assert all(set(a["weak_signals"]) >= {"phone_block", "postal_code"} for a in accounts.values())


def test_established_or_attending_accounts_are_not_stealth_rings(spark):
    # a company: staff on the company's domain and office range, established accounts
    company = [dict(r, account_created_at=OLD) for r in _ring(0, 15, ip="192.0.2", domain="acme-corp.com")]
    # the same pattern among fresh accounts that mostly attend events: linked, but for review
    mixed = [
        dict(r, events_attended_24m=3 if k % 2 else 0)
        for k, r in enumerate(_ring(100, 10, ip="192.0.3", postal="02139"))
    ]
    small = _ring(200, 4, ip="192.0.4", postal="02140")
    # new students behind one campus network: no event yet, but they do not resell
    campus = [dict(r, resale_listings_24m=0) for r in _ring(300, 40, ip="192.0.5", postal="02141")]
    accounts, _ = _linked(spark, company + mixed + small + campus + [_account(500 + i) for i in range(600)])
    assert not any(r["global_user_id"] in accounts for r in company)  # only fresh accounts are linked
    assert {accounts[r["global_user_id"]]["_review"] for r in mixed + small + campus} == {True}
    assert {accounts[r["global_user_id"]]["weak_cluster_size"] for r in campus} == {40}
    assert not any(a["_stealth_ring"] for a in accounts.values())


def _oracle_keys(row: dict) -> set[str]:
    """The blocking values of an account, computed here independently of Spark."""
    ip, email, phone, postal = row["ip_address"], row["email_canonical"], row["phone_e164"], row["postal_code"]
    local, domain = email.split("@")
    number = int(phone[1:])
    shape = re.sub(r"[0-9]", "9", re.sub(r"[a-z]+", "a", local))
    keys = {f"ip:{ip.rsplit('.', 1)[0]}", f"pc:{postal}", f"pa:{number // 100}", f"pb:{(number + 50) // 100}"}
    return keys | ({f"d:{domain}"} if domain != "gmail.com" else set()) | {f"s:{shape}"}


@pytest.mark.parametrize("seed", [1, 2])
def test_accounts_that_share_no_weak_signal_are_never_linked(spark, seed):
    """Random campaigns in which half the accounts draw every value from small pools (and share some)
    and half get values of their own: whatever the evidence threshold, every link shares a value,
    and an account sharing none is never linked."""
    rnd = random.Random(seed)
    shapes = ["{f}.{l}{d2}", "{f}_{l}_{d4}", "{l}{f}{d3}"]
    rows = []
    for i in range(400):
        pooled = i % 2 == 0
        f, last = rnd.choice(["ann", "bo", "cy"]), rnd.choice(["lee", "kim", "roe"])
        template = rnd.choice(shapes) if pooled else "q" + "-" * (i % 7 + 1) + "z" + "." * (i // 7 + 1) + "x"
        local = template.format(
            f=f, l=last, d2=rnd.randint(10, 99), d3=rnd.randint(100, 999), d4=rnd.randint(1000, 9999)
        )
        rows.append(
            _account(
                i,
                ip_address=f"10.9.{rnd.randint(0, 20)}.{rnd.randint(1, 250)}"
                if pooled
                else f"11.{i // 200}.{i % 200}.1",
                email_canonical=f"{local}@{rnd.choice(['gmail.com', 'a-tix.com', 'b-tix.com']) if pooled else f'own{i}.org'}",
                phone_e164=f"+1303555{rnd.randint(0, 600):04d}" if pooled else f"+1404{2000000 + 1000 * i:07d}",
                postal_code=f"9{rnd.randint(0, 30):04d}" if pooled else f"P{i:05d}",
                market_preferences=[f"M{i}"],
            )
        )
    keys = {r["global_user_id"]: _oracle_keys(r) for r in rows}
    holders: dict[str, int] = {}
    for ks in keys.values():
        for k in ks:
            holders[k] = holders.get(k, 0) + 1
    sharing = {a for a, ks in keys.items() if any(holders[k] > 1 for k in ks)}
    assert sharing and len(sharing) < len(rows)
    cfg = WeakLinks(min_weight=-1000.0, min_signals=1, max_block=1000)
    registrants, activity = _frame(spark, rows)
    from campaign_pipeline.screening.weak_links import candidate_pairs, fresh_accounts, recent_accounts

    fresh = fresh_accounts(registrants, recent_accounts(activity, F.lit(OLD), cfg.fresh_days), cfg.fresh_days)
    pairs = candidate_pairs(memberships(fresh, cfg), fresh, cfg, len(rows)).collect()
    assert pairs
    for p in pairs:
        assert keys[p["a"]] & keys[p["b"]], (p["a"], p["b"])
    accounts, _ = _linked(spark, rows, cfg)
    assert set(accounts) <= sharing and set(accounts)


def test_a_ring_too_big_to_pair_is_one_crowd_not_a_hot_block(spark):
    ring = _ring(0, 150, ip="198.51.100", domain="vk3q-tix.com", postal="90210")
    for k, row in enumerate(ring):  # 150 addresses in one /24 (two blocks of 75 hosts)
        row["ip_address"] = f"198.51.100.{k % 250}"
    accounts, figures = _linked(spark, ring + [_account(1000 + i) for i in range(300)])
    assert figures["weak_hot_blocks"] >= 3 and figures["weak_crowds"] == 3  # /24+domain, /24+postal, domain+postal
    assert set(accounts) == {r["global_user_id"] for r in ring}
    assert {(a["weak_cluster_size"], a["_stealth_ring"]) for a in accounts.values()} == {(150, True)}


def test_a_hot_range_of_5000_accounts_is_counted_not_paired(spark):
    cfg = WeakLinks()
    # one /24 behind 5,000 fresh accounts that share nothing else (no email: no shape in common)
    hot = [_account(i, ip_address=f"81.2.1.{i % 250}", email_canonical=None) for i in range(5000)]
    members = memberships(_frame(spark, hot)[0].select("*", F.lit("M0").alias("_first_market")), cfg)
    assert members.where("signal = 'ip_range'").select("holders").distinct().collect()[0][0] == 5000
    accounts, figures = _linked(spark, hot, cfg)
    assert figures["weak_hot_blocks"] == 1 and figures["weak_largest_hot_block"] == 5000
    # every pair is bounded by max_block per value: no value but the hot range is shared here
    assert figures["weak_candidate_pairs"] == 0 and accounts == {}


@pytest.mark.parametrize(("max_block", "pairs", "hot"), [(10, 200 * 45, 40), (50, 40 * 1225, 0)])
def test_candidate_pairs_stay_below_max_block_over_two_per_account_and_value(spark, max_block, pairs, hot):
    # 2,000 accounts in 40 postal codes of 50 and 200 ranges of 10 (each range inside one code)
    rows = [
        _account(i, postal_code=f"P{i % 40:03d}", ip_address=f"81.2.{i % 200}.{i // 200}", email_canonical=None)
        for i in range(2000)
    ]
    _, figures = _linked(spark, rows, WeakLinks(max_block=max_block))
    assert figures["weak_candidate_pairs"] == pairs <= 2000 * 2 * max_block // 2
    assert figures["weak_hot_blocks"] == hot
