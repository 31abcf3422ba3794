"""Weak links: fresh accounts that share no identifier but too many weak signals (stealth rings).

A scalper operation can give every account its own email, phone, device and card; what it rarely
varies are the cheap things: a residential-proxy range (/24 or /48), its own catch-all email
domain, a block of consecutive numbers, one drop postal code, one template for the email's local
part. Honest fans share single such signals all the time (a company's domain, a campus network, a
household), so no signal decides alone: the evidence of every signal two accounts share is added.

- **Who is linked.** Only *fresh* accounts: the fan activity says the account was created at most
  `fresh_days` before the registration. New accounts are what a stealth operation is made of;
  established accounts (and accounts the activity does not know) are linked by exact identifiers
  only (`screening.identity`). This also bounds the work: the activity rows are filtered by
  creation date before anything moves, and only a few percent of a campaign's registrants (sent
  to every task as a hash table while they are at most `BROADCAST_FRESH`) enter the step.
- **Blocking.** Each fresh account holds one value per signal (`SIGNALS`; the phone two, blocks of
  100 numbers offset by 50, so numbers at most 50 apart always share one). Pairs are formed inside
  a value held by 2..`max_block` fresh accounts; a value held by more is a *hot block*: counted in
  the figures, pairing nobody (a /24 or domain with thousands of accounts is a finding, not a join).
  The pairs are therefore at most `max_block / 2` per account and value, whatever the data's shape.
  A *crowd*, more than `max_block` fresh accounts sharing the values of two signals (one /24 and one
  postal code, say), is linked as one group through one edge per account: a ring too big to pair
  does not hide in a hot block.
- **Evidence** (Fellegi–Sunter, agreements only): a shared value `v` of signal `s` held by `c` of the
  campaign's `N` fresh accounts adds `log2(m_s * N / c)` bits (`m_s`: `weak_links.m`), so a rare value
  weighs more than a common one and the campaign's own frequencies give the weights; the same first
  market preference adds its bits too (compared on the pairs, never blocked on). The prior is
  `-log2 N`. A pair is a weak link when it shares at least `min_signals` blocking signals (the
  first market is not one) and its evidence reaches `min_weight`: one shared value never links.
- **Clusters** are the connected components of the weak links (the identity graph's large-star /
  small-star rounds). A cluster larger than `screening.ring_size` in which at least `ring_share` of
  the accounts attended no event and at least `resale_share` list tickets for resale (under the
  scalper threshold: the trade's reason to exist) is a `STEALTH_RING`. Every other linked account
  is `REVIEW` (kept eligible, listed in the report for an operator): honest groups of new accounts
  (a campus network, a company's domain) share weak signals and may not have attended yet, but
  they do not resell. Each linked account records the signals of its
  links (`weak_signals`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN, FAN_SORT
from campaign_pipeline.config import WeakLinks
from campaign_pipeline.screening.identity import PLACEHOLDERS, connected_components
from campaign_pipeline.stage_context import local_cut

SIGNALS = ("ip_range", "email_domain", "phone_block", "postal_code", "email_pattern")
COMPARED = ("first_market",)
# What the step reads of a registrant (beside FAN) and of its fan activity.
WEAK_LINK_INPUTS = ("registered_at", "ip_address", "email_canonical", "phone_e164", "postal_code", "country")
PREFERENCE = "market_preferences"


@dataclass(frozen=True)
class WeakLinkResult:
    """`accounts`: one row per weakly linked account (FAN, `weak_cluster_id`, `weak_cluster_size`,
    `weak_signals`, `_stealth_ring`, `_review`); `figures`: what the step saw."""

    accounts: DataFrame
    figures: dict[str, int]


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """`body(value)` with `value` evaluated once however often `body` reads it (a Spark lambda binds
    it). An expression that reads a parsed part of its input many times (an address's octets) would
    otherwise parse it again at every read, and nested parts multiply: ranges of many accounts
    cost regular-expression runs in the hundreds per row."""
    return F.get(F.transform(F.array(value), body), 0)


def _ipv4_range(address: Column) -> Column:
    """`a.b.c.0/24` of a dotted IPv4 address (octets read as numbers, so `198.051.100.8` is
    `198.51.100.8`); null when not one, or private, shared (CGNAT), loopback, link-local or
    reserved: such an address says nothing about where a fan is."""

    def of(address: Column, octets: Column) -> Column:
        o = [F.get(octets, i) for i in range(4)]
        valid = address.rlike(r"^\d{1,3}(\.\d{1,3}){3}$") & F.greatest(*o).between(0, 255)
        private = (
            o[0].isin(0, 10, 127)
            | (o[0] >= 224)
            | ((o[0] == 172) & o[1].between(16, 31))
            | ((o[0] == 192) & (o[1] == 168))
            | ((o[0] == 100) & o[1].between(64, 127))
            | ((o[0] == 169) & (o[1] == 254))
        )
        return F.when(valid & ~private, F.concat_ws(".", *[o[i].cast("string") for i in range(3)]))

    return _let(
        address,
        lambda a: _let(F.transform(F.split(a, r"\."), lambda x: x.try_cast("int")), lambda octets: of(a, octets)),
    )


def _ipv6_range(address: Column) -> Column:
    """`x:y:z` (the /48) of an IPv6 address: `::` expanded to the zero groups it stands for, leading
    zeros dropped; null when not one, or link-local, unique-local or loopback."""

    def of(address: Column, head: Column, groups: Column) -> Column:
        first = F.transform(F.slice(groups, 1, 3), lambda g: F.regexp_replace(g, r"^0+(?=.)", ""))
        valid = (
            address.rlike(r"^[0-9a-f:]+$")
            & address.contains(":")
            & (F.size(groups) == 8)
            & F.forall(groups, lambda g: F.length(g).between(1, 4))
        )
        local = F.get(first, 0).rlike(r"^(fe[89ab][0-9a-f]|f[cd][0-9a-f]{2})$") | (F.length(head) == 0)
        return F.when(valid & ~local, F.array_join(first, ":"))

    def parts(address: Column) -> Column:
        head = F.when(address.contains("::"), F.substring_index(address, "::", 1)).otherwise(address)
        tail = F.when(address.contains("::"), F.substring_index(address, "::", -1))

        def groups(head: Column) -> Column:
            head_groups = F.when(F.length(head) > 0, F.split(head, ":")).otherwise(F.array().cast("array<string>"))
            tail_groups = F.when(F.length(tail) > 0, F.split(tail, ":")).otherwise(F.array().cast("array<string>"))
            zeros = F.greatest(F.lit(0), F.lit(8) - F.size(head_groups) - F.size(tail_groups))
            return _let(
                F.concat(head_groups, F.array_repeat(F.lit("0"), zeros), tail_groups), lambda g: of(address, head, g)
            )

        return _let(head, groups)

    return _let(address, parts)


def ip_range(ip: Column) -> Column:
    """`a.b.c.0/24` of an IPv4 address, `x:y:z::/48` of an IPv6 one, null for anything else (a
    placeholder, a private or reserved address). Brackets, a port and the IPv4-mapped prefix
    (`[2001:db8::1]:443`, `198.51.100.7:443`, `::ffff:198.51.100.7`) are read through."""

    def unbracketed(value: Column) -> Column:
        v4_port = F.regexp_extract(value, r"^(\d{1,3}(\.\d{1,3}){3})(:\d+)?$", 1)
        mapped = F.regexp_extract(value, r"^::ffff:(\d{1,3}(\.\d{1,3}){3})$", 1)
        v4 = F.when(F.length(mapped) > 0, mapped).when(F.length(v4_port) > 0, v4_port)
        return _let(
            v4,
            lambda v4: F.when(v4.isNotNull(), F.concat(_ipv4_range(v4), F.lit(".0/24"))).otherwise(
                F.concat(_ipv6_range(value), F.lit("::/48"))
            ),
        )

    def of(value: Column) -> Column:
        bracketed = F.regexp_extract(value, r"^\[([0-9a-f:.]+)\](:\d+)?$", 1)
        return F.when(value.isNull() | value.isin(*PLACEHOLDERS), F.lit(None)).otherwise(
            _let(F.when(F.length(bracketed) > 0, bracketed).otherwise(value), unbracketed)
        )

    return _let(F.lower(F.trim(ip)), of)


def email_shape(local: Column) -> Column:
    """The local part's shape: a run of letters is `a`, each digit `9`, the rest kept
    (`maria.garcia.4821` → `a.a.9999`)."""
    return F.regexp_replace(F.regexp_replace(local, r"\p{L}+", "a"), r"\p{Nd}", "9")


def phone_blocks(e164: Column) -> list[Column]:
    """The two blocks of 100 numbers (the second offset by 50) an E.164 number falls in."""
    digits = F.regexp_replace(e164, r"^\+", "")
    as_long = F.when(digits.rlike(r"^\d{6,15}$"), digits.cast("long"))
    return [
        F.concat(F.lit("a"), (F.floor(as_long / 100)).cast("string")),
        F.concat(F.lit("b"), (F.floor((as_long + 50) / 100)).cast("string")),
    ]


def block_values(cfg: WeakLinks) -> list[tuple[str, Column]]:
    """(signal, value) for every blocking key of a fresh account's row (null: the account has none)."""
    email = F.col("email_canonical")
    domain = F.when(email.contains("@"), F.substring_index(email, "@", -1))
    local = F.when(email.contains("@"), F.substring_index(email, "@", 1))
    providers = [p.lower() for p in cfg.mailbox_providers]
    compact = F.upper(F.regexp_replace(F.col("postal_code"), r"[^0-9A-Za-z]", ""))

    def postal_key(compact: Column) -> Column:
        return _let(
            F.when(compact.rlike(r"^\d{9}$"), F.substring(compact, 1, 5)).otherwise(compact),  # ZIP+4: the ZIP
            lambda postal: F.when(
                (F.length(postal) >= 3)
                & ~F.lower(postal).isin(*PLACEHOLDERS)
                & ~postal.rlike(r"^(.)\1*$")  # 00000, 99999, XXXXX
                & ~postal.isin("12345", "123456", "1234"),
                F.concat(F.coalesce(F.col("country"), F.lit("")), F.lit(":"), postal),
            ),
        )

    phone = F.col("phone_e164")
    return [
        ("ip_range", ip_range(F.col("ip_address"))),
        ("email_domain", F.when(~domain.isin(*providers), domain)),
        *[("phone_block", F.when(phone.isNotNull(), b)) for b in phone_blocks(phone)],
        ("postal_code", _let(compact, postal_key)),
        ("email_pattern", F.when(F.length(local) > 0, email_shape(local))),
    ]


# Fresh accounts up to this many are sent to every task as a hash table (the registrants are
# then scanned once and moved nowhere); more are joined by a shuffle.
BROADCAST_FRESH = 1_000_000


def recent_accounts(activity: DataFrame, since: Column | str, fresh_days: int) -> DataFrame:
    """FAN_SORT, `_created` (earliest account creation) and `_attended` (most events) of the fans
    with an account created on or after `since` minus `fresh_days` days: those that can be fresh.

    Activity rows are filtered before anything moves (a few percent of them), then every activity
    row of those fans (a fan may be listed in several files) gives its earliest creation."""
    floor = F.lit(since).cast("timestamp") - F.make_dt_interval(F.lit(fresh_days))
    candidates = activity.where(F.col("account_created_at") >= floor).select(*FAN_SORT).distinct()
    return (
        activity.join(candidates, FAN_SORT)
        .groupBy(*FAN_SORT)
        .agg(
            F.min("account_created_at").alias("_created"),
            F.max("events_attended_24m").alias("_attended"),
            F.max("resale_listings_24m").alias("_resale"),
        )
    )


def fresh_accounts(registrants: DataFrame, recent: DataFrame, fresh_days: int, broadcast: bool = True) -> DataFrame:
    """The fresh registrants: their account was created at most `fresh_days` before their
    registration (`recent_accounts`). FAN, the signal inputs, `_first_market`, `_no_attendance`,
    `_reselling` (any resale listing).

    A registrant the fan activity does not know is not fresh: weak links need the account's age."""
    fresh = F.col("_created") >= F.col("registered_at") - F.make_dt_interval(F.lit(fresh_days))
    return (
        registrants.join(F.broadcast(recent) if broadcast else recent, FAN_SORT)
        .where(fresh)
        .select(
            *FAN,
            *WEAK_LINK_INPUTS,
            F.get(F.col(PREFERENCE), 0).alias("_first_market"),
            (F.coalesce(F.col("_attended"), F.lit(0)) == 0).alias("_no_attendance"),
            (F.coalesce(F.col("_resale"), F.lit(0)) > 0).alias("_reselling"),
        )
    )


def memberships(fresh: DataFrame, cfg: WeakLinks) -> DataFrame:
    """(key, signal, account, first market, `holders`) for every blocking value of every fresh
    account, partitioned by key; `holders`: how many fresh accounts hold the key."""
    values = F.array(*[F.struct(F.lit(s).alias("signal"), v.alias("value")) for s, v in block_values(cfg)])
    exploded = fresh.select(
        F.col("global_user_id").alias("account"), "_first_market", F.explode(values).alias("b")
    ).where(F.col("b.value").isNotNull())
    keyed = exploded.select(
        F.concat(F.col("b.signal"), F.lit("="), F.col("b.value")).alias("key"),
        F.col("b.signal").alias("signal"),
        "account",
        "_first_market",
    ).repartition("key")
    return keyed.withColumn("holders", F.count(F.lit(1)).over(Window.partitionBy("key")))


# The signals a crowd can share two of: more than `max_block` fresh accounts on one /24 *and* one
# postal code (or domain, or phone block) are linked as one group without pairing them.
CROWD_SIGNALS = ("ip_range", "email_domain", "phone_block", "postal_code")


def crowds(members: DataFrame, cfg: WeakLinks) -> DataFrame:
    """(key, account, signals) for every fresh account in a *crowd*: more than `max_block` fresh
    accounts holding the same values of two signals. Each such account shares both with every
    other, as a weak link would, but a crowd is too big to pair: its accounts are linked through
    the crowd (one edge each), so a ring larger than `max_block` is one cluster, not a hot block
    that hides it. Both values of a crowd are hot blocks, so only the accounts' hot memberships
    (`memberships`) are read. The phone counts by its first block."""
    rank = F.create_map(*[x for i, s in enumerate(CROWD_SIGNALS) for x in (F.lit(s), F.lit(i))])
    hot = members.where(
        (F.col("holders") > cfg.max_block)
        & F.col("signal").isin(*CROWD_SIGNALS)
        & ~F.col("key").startswith("phone_block=b")  # the phone's second block
    )
    x = hot.select("account", F.col("key").alias("kx"), F.col("signal").alias("sx"))
    y = hot.select("account", F.col("key").alias("ky"), F.col("signal").alias("sy"))
    pairs = (
        x.join(y, "account")
        .where(F.element_at(rank, F.col("sx")) < F.element_at(rank, F.col("sy")))
        .select(
            F.concat(F.lit("\u0000"), "kx", F.lit("+"), "ky").alias("key"),
            "account",
            F.array("sx", "sy").alias("signals"),
        )
    )
    return (
        pairs.withColumn("_n", F.count(F.lit(1)).over(Window.partitionBy("key")))
        .where(F.col("_n") > cfg.max_block)
        .drop("_n")
    )


# Where an account's counting values sit (`account_blocks`): one slot per signal, two for the phone.
SLOTS = {
    "ip_range": ("ip_range",),
    "email_domain": ("email_domain",),
    "phone_block": ("phone_a", "phone_b"),
    "postal_code": ("postal_code",),
    "email_pattern": ("email_pattern",),
}
SLOT_ORDER = tuple(x for s in SIGNALS for x in SLOTS[s])


def account_blocks(members: DataFrame, fresh: DataFrame, cfg: WeakLinks, fresh_count: int) -> DataFrame:
    """One row per fresh account holding a value another account holds too: for each slot
    (`SLOTS`) the value (`<slot>`: key, weight in bits) if it can count for a pair (a value of
    2..`max_block` holders, or a hot one of at least `hot_min_bits`), its first market and that
    market's weight (`market_w`)."""
    n = float(max(fresh_count, 2))
    m = cfg.m.model_dump()
    m_of = F.element_at(F.create_map(*[x for s in SIGNALS for x in (F.lit(s), F.lit(float(m[s])))]), F.col("signal"))
    weight = F.log2(m_of * F.lit(n) / F.col("holders"))
    counting = members.where(
        (F.col("holders") >= 2) & ((F.col("holders") <= cfg.max_block) | (weight >= cfg.hot_min_bits))
    )
    slot = (
        F.when(F.col("key").startswith("phone_block=a"), "phone_a")
        .when(F.col("key").startswith("phone_block=b"), "phone_b")
        .otherwise(F.col("signal"))
    )
    blocks = counting.groupBy("account").agg(
        *[
            F.max(
                F.when(
                    slot == x,
                    F.struct(
                        F.col("key").alias("k"), weight.alias("w"), (F.col("holders") <= cfg.max_block).alias("o")
                    ),
                )
            ).alias(x)
            for x in SLOT_ORDER
        ]
    )
    markets = (
        fresh.where(F.col("_first_market").isNotNull())
        .groupBy("_first_market")
        .agg(F.log2(F.lit(float(m["first_market"]) * n) / F.count(F.lit(1))).alias("market_w"))
    )
    return blocks.join(
        fresh.select(F.col("global_user_id").alias("account"), "_first_market").join(
            F.broadcast(markets), "_first_market", "left"
        ),
        "account",
    )


# Account blocks of up to this many fresh accounts are sent to every task as a hash table (a few
# hundred bytes each), so the candidate pairs are scored where they are found; more are joined by
# shuffles.
BROADCAST_BLOCKS = 250_000


def candidate_pairs(members: DataFrame, fresh: DataFrame, cfg: WeakLinks, fresh_count: int) -> DataFrame:
    """(a, b, shared, evidence, signals), once for every pair of fresh accounts sharing a value of at
    most `max_block` holders. Once found, a pair also counts the hot values both hold that still
    carry `hot_min_bits` (a ring's email template among many fresh accounts: it found nobody, but it
    is evidence, weighed by its frequency). The evidence of each shared signal is that of its
    rarest value (the phone's two blocks), plus the first market's, minus the prior; the bits are
    added in `SIGNALS` order, so the sum is the same to the last bit on every run."""
    n = max(fresh_count, 2)
    blocks = members.where(F.col("holders").between(2, cfg.max_block))
    # a pair is found once per value of at most max_block holders the two share: each pair is kept
    # where it is found through the least of them, so no shuffle makes the pairs distinct
    found = (
        blocks.select("key", F.col("account").alias("a"))
        .join(blocks.select("key", F.col("account").alias("b")), "key")
        .where(F.col("a") < F.col("b"))
    )
    profiles = account_blocks(members, fresh, cfg, n)
    side = F.broadcast if fresh_count <= BROADCAST_BLOCKS else (lambda df: df)
    pa = profiles.select(
        F.col("account").alias("a"),
        *[F.col(x).alias(f"a_{x}") for x in SLOT_ORDER],
        F.col("_first_market").alias("ma"),
        "market_w",
    )
    pb = profiles.select(
        F.col("account").alias("b"), *[F.col(x).alias(f"b_{x}") for x in SLOT_ORDER], F.col("_first_market").alias("mb")
    )
    scored = found.join(side(pa), "a").join(side(pb), "b")

    def agrees(x: str) -> Column:  # both accounts hold the slot's value
        return F.col(f"a_{x}.k") == F.col(f"b_{x}.k")

    def agreement(x: str) -> Column:  # the slot's weight when both accounts hold its value
        return F.when(agrees(x), F.col(f"a_{x}.w"))

    per = {
        s: F.greatest(*[agreement(x) for x in SLOTS[s]]) if len(SLOTS[s]) > 1 else agreement(SLOTS[s][0])
        for s in SIGNALS
    }
    least_open = F.least(*[F.when(agrees(x) & F.col(f"a_{x}.o"), F.col(f"a_{x}.k")) for x in SLOT_ORDER])
    weights = scored.where(F.col("key") == least_open).select(
        "a", "b", "ma", "mb", "market_w", *[w.alias(f"w_{s}") for s, w in per.items()]
    )
    bits = F.lit(0.0)
    for s in SIGNALS:
        bits = bits + F.coalesce(F.col(f"w_{s}"), F.lit(0.0))
    same = (F.col("ma") == F.col("mb")) & F.col("market_w").isNotNull()
    shared = F.array_compact(F.array(*[F.when(F.col(f"w_{s}").isNotNull(), F.lit(s)) for s in SIGNALS]))
    return weights.select(
        "a",
        "b",
        sum(F.col(f"w_{s}").isNotNull().cast("int") for s in SIGNALS).alias("shared"),  # the first market is not one
        (bits + F.when(same, F.col("market_w")).otherwise(F.lit(0.0)) - F.lit(math.log2(n))).alias("evidence"),
        F.when(same, F.concat(shared, F.array(F.lit("first_market")))).otherwise(shared).alias("signals"),
    )


# The step's figures (`WeakLinkResult.figures`).
FIGURES = (
    "weak_fresh_accounts",
    "weak_candidate_pairs",
    "weak_links",
    "weak_hot_blocks",
    "weak_largest_hot_block",
    "weak_crowds",
    "weak_rounds",
)


def no_accounts(df: DataFrame) -> DataFrame:
    """No weakly linked account, in the columns of `WeakLinkResult.accounts` (FAN from `df`)."""
    return df.select(
        *FAN,
        F.lit(None).cast("string").alias("weak_cluster_id"),
        F.lit(None).cast("long").alias("weak_cluster_size"),
        F.lit(None).cast("array<string>").alias("weak_signals"),
        F.lit(False).alias("_stealth_ring"),
        F.lit(False).alias("_review"),
    ).where(F.lit(False))


def weak_links(
    registrants: DataFrame, activity: DataFrame, cfg: WeakLinks, ring_size: int, cut=local_cut
) -> WeakLinkResult:
    """The weakly linked accounts of `registrants` (one campaign's rule inputs, one row per fan as
    in `registrants`: FAN, `WEAK_LINK_INPUTS`, `market_preferences`) given their fan `activity`
    (see the module), and the step's figures. A fan listed twice would be counted twice in its
    blocks and keep one value per signal: give the latest registration of each fan."""
    earliest = registrants.agg(F.min("registered_at")).first()[0]
    recent = cut(recent_accounts(activity, F.lit(earliest), cfg.fresh_days), "weak links recent accounts")
    small = recent.count() <= BROADCAST_FRESH
    fresh = cut(fresh_accounts(registrants, recent, cfg.fresh_days, small), "weak links fresh accounts")
    n = fresh.count()
    figures = dict.fromkeys(FIGURES, 0) | {"weak_fresh_accounts": n}
    if n < 2:  # nobody to link (a campaign of established fans): no more jobs
        return WeakLinkResult(no_accounts(fresh), figures)
    members = cut(memberships(fresh, cfg), "weak links blocks")
    hot = (
        members.where(F.col("holders") > cfg.max_block)
        .groupBy("key")
        .agg(F.max("holders").alias("holders"))
        .agg(F.count(F.lit(1)).alias("hot"), F.max("holders").alias("largest"))
        .first()
    )
    pairs = cut(candidate_pairs(members, fresh, cfg, n), "weak links candidate pairs")
    linked_pair = (F.col("evidence") >= cfg.min_weight) & (F.col("shared") >= cfg.min_signals)
    links = pairs.where(linked_pair)
    counted = pairs.agg(F.count(F.lit(1)).alias("pairs"), F.sum(linked_pair.cast("long")).alias("links")).first()
    figures |= {
        "weak_candidate_pairs": int(counted["pairs"] or 0),
        "weak_links": int(counted["links"] or 0),
        "weak_hot_blocks": int(hot["hot"] or 0),
        "weak_largest_hot_block": int(hot["largest"] or 0),
    }
    crowd = cut(crowds(members, cfg), "weak links crowds")
    figures["weak_crowds"] = crowd.select("key").distinct().count()
    if figures["weak_links"] == 0 and figures["weak_crowds"] == 0:
        return WeakLinkResult(no_accounts(fresh), figures)
    edges = (
        links.select(F.col("a").alias("key"), F.col("a").alias("account"))
        .unionByName(links.select(F.col("a").alias("key"), F.col("b").alias("account")))
        .unionByName(crowd.select("key", "account"))
    )
    clusters, rounds = connected_components(edges, cut)
    figures["weak_rounds"] = rounds
    ends = (
        links.select(F.col("a").alias("account"), "signals")
        .unionByName(links.select(F.col("b").alias("account"), "signals"))
        .unionByName(crowd.select("account", "signals"))
    )
    signals = ends.groupBy("account").agg(
        F.array_sort(F.array_distinct(F.flatten(F.collect_list("signals")))).alias("weak_signals")
    )
    linked = (
        clusters.join(signals, "account")
        .join(fresh.select(*FAN, "_no_attendance", "_reselling"), F.col("account") == F.col("global_user_id"))
        .drop("account")
    )
    verdicts = linked.groupBy("cluster").agg(
        F.count(F.lit(1)).alias("weak_cluster_size"),
        F.avg(F.col("_no_attendance").cast("double")).alias("_share"),
        F.avg(F.col("_reselling").cast("double")).alias("_resale_share"),
    )
    stealth = (
        (F.col("weak_cluster_size") > ring_size)
        & (F.col("_share") >= cfg.ring_share)
        & (F.col("_resale_share") >= cfg.resale_share)
    )
    accounts = linked.join(verdicts, "cluster").select(
        *FAN,
        F.col("cluster").alias("weak_cluster_id"),
        "weak_cluster_size",
        "weak_signals",
        stealth.alias("_stealth_ring"),
        (~stealth).alias("_review"),
    )
    return WeakLinkResult(cut(accounts, "weak links verdicts"), figures)
