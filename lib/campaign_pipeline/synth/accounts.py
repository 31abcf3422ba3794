"""How a synthetic campaign's accounts are generated (what is generated is declared in `synth.spec`).

A Spark job (10M registrants need no driver memory: every column is a function of the account
number and the seed). Each column draws from `xxhash64(seed, column name, key)`, so adding a
column never changes the others.
"""

from __future__ import annotations

import datetime as dt
import functools

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign, Market, Options, Screening, Wave
from campaign_pipeline.synth.spec import (
    AREAS,
    BLOCKED_DOMAIN,
    CA_AREAS,
    CALL_CENTRE_PHONE,
    CITIES,
    DISPOSABLE,
    DUPLICATE_RATE,
    FIRST,
    INTL,
    LAST,
    PLANTED,
    PROVIDERS,
    RING_MEMBERS,
    RING_RATE,
    ROLE_TAGS,
    SECOND_DUPLICATE_RATE,
    STEALTH_MAX_RESALE,
    WINDOW_SECONDS,
    WINDOW_START,
    SynthSpec,
)
from campaign_pipeline.synth.stealth import (
    carve,
    email_column,
    ip_column,
    layout,
    name_columns,
    phone_of,
    postal_column,
    preferences_column,
    stealth_phones,
    tactics,
)

# Columns of stealth rings and decoys that replace the genuine draw where set (dropped once used).
OVERRIDES = ("_o_email", "_o_e164", "_o_ip", "_o_postal", "_o_prefs")


class Draw:
    """Seeded draws keyed by a column name: adding a column never changes the others."""

    def __init__(self, seed: int):
        self.seed = seed

    def hash(self, name: str, *keys: Column) -> Column:
        return F.xxhash64(F.lit(self.seed), F.lit(name), *keys)

    def uniform(self, name: str, *keys: Column) -> Column:
        return F.pmod(self.hash(name, *keys), F.lit(1 << 53)).cast("double") / float(1 << 53)

    def below(self, name: str, n: int | Column, *keys: Column) -> Column:
        return F.pmod(self.hash(name, *keys), n if isinstance(n, Column) else F.lit(n)).cast("int")

    def pick(self, name: str, values: list[str], *keys: Column) -> Column:
        return F.element_at(F.array(*[F.lit(v) for v in values]), self.below(name, len(values), *keys) + 1)


def make_markets(spec: SynthSpec) -> list[Market]:
    """Markets named after cities, capacity skewed (Zipf) so big markets are oversubscribed too."""
    weights = [1 / (i + 1) ** 0.8 for i in range(spec.markets)]
    total = spec.registrants * spec.capacity_ratio
    markets = []
    for i in range(spec.markets):
        code, city, tz, locale = CITIES[i % len(CITIES)]
        suffix = "" if i < len(CITIES) else f"-{i // len(CITIES) + 1}"
        markets.append(
            Market(
                market_id=f"{code}{suffix}-{i + 1:02d}",
                name=f"{city}{suffix}",
                capacity=max(10, int(total * weights[i] / sum(weights))),
                event_date=dt.date(2027, 4, 1) + dt.timedelta(days=2 * i),
                timezone=tz,
                locale=locale,
            )
        )
    return markets


def make_campaign(spec: SynthSpec) -> Campaign:
    markets = make_markets(spec)
    return Campaign(
        campaign_id=spec.campaign_id,
        name=f"Aurora Skies — {spec.campaign_id}",
        artist="Aurora Skies",
        seed=spec.seed,
        home_country="US",
        options=Options(sms_countries=["US", "CA"]),
        screening=Screening(ring_size=6, max_shared=50),
        markets=markets,
        waves=[
            Wave(
                wave_id="wave-1",
                notify_at=dt.datetime(2027, 3, 1, 15, tzinfo=dt.UTC),
                limit=max(1, spec.registrants // 10),
            ),
            Wave(wave_id="wave-2", notify_at=dt.datetime(2027, 3, 2, 15, tzinfo=dt.UTC)),
        ],
    )


def planted_flags(d: Draw, registrants: int, populations: dict[str, Column]) -> dict[str, Column]:
    """One boolean column per planted flag, from the declared cases (first case of a group wins)."""
    keys = {"person": F.col("person_id"), "account": F.col("acct")}
    flags: dict[str, Column] = {}
    taken: dict[str, Column] = {}
    for case in PLANTED:
        hit = populations[case.population] & (d.uniform(case.draw, keys[case.key]) < case.rate_for(registrants))
        if case.group:
            hit = hit & ~taken.get(case.group, F.lit(False))
            taken[case.group] = taken.get(case.group, F.lit(False)) | hit
        flags[case.flag] = (flags[case.flag] | hit) if case.flag in flags else hit
    return flags


def expected_tags() -> Column:
    """The screening tags an account must get, from its role and its planted flags."""
    by_tag: dict[str, list[Column]] = {}
    for role, tags in ROLE_TAGS.items():
        for tag in tags:
            by_tag.setdefault(tag, []).append(F.col("role") == role)
    for case in PLANTED:
        for tag in case.tags:
            by_tag.setdefault(tag, []).append(F.col(case.flag))
    any_of = {tag: functools.reduce(lambda x, y: x | y, conds) for tag, conds in by_tag.items()}
    return F.array_compact(F.array(*[F.when(cond, F.lit(tag)) for tag, cond in sorted(any_of.items())]))


def accounts(spark: SparkSession, spec: SynthSpec, campaign: Campaign) -> DataFrame:
    """One row per planted account with every generated attribute and its ground truth."""
    d = Draw(spec.seed)
    n = spec.registrants
    lay = layout(spec)
    n_rings = max(1, round(n * RING_RATE * 5 / 8 / RING_MEMBERS))  # 5 of 8 slots may hold ring accounts
    a = F.col("acct")
    slot = F.pmod(a, F.lit(8))
    # Duplicate accounts sit right after their person's first account (slots 1 and 2 of a block of 8).
    dup1 = (slot == 1) & (d.uniform("dup1", a) < DUPLICATE_RATE)
    prev_dup1 = (F.pmod(a - 1, F.lit(8)) == 1) & (d.uniform("dup1", a - 1) < DUPLICATE_RATE)
    dup2 = (slot == 2) & prev_dup1 & (d.uniform("dup2", a) < SECOND_DUPLICATE_RATE)
    ring = (slot >= 3) & (d.uniform("ring", a) < RING_RATE)
    # Stealth rings and decoys are carved from would-be genuine single accounts (`synth.stealth`).
    kind, group = F.col("carve_kind"), F.col("carve_group")
    stealth = kind.eqNullSafe("stealth")
    df = (
        spark.range(n)
        .withColumnRenamed("id", "acct")
        .transform(carve(d, lay))
        .select("*", F.when(stealth, tactics(d, group)).alias("stealth_tactics"))
        .transform(stealth_phones(d, lay))  # the number search runs over these few columns
        .select(
            "acct",
            F.when(ring, "ring")
            .when(dup1 | dup2, "duplicate")
            .when(stealth, "stealth")
            .otherwise("genuine")
            .alias("role"),
            F.when(dup1, a - 1).when(dup2, a - 2).otherwise(a).alias("person_id"),
            F.when(ring, d.below("ring_id", n_rings, a)).alias("ring_id"),
            F.when(stealth, group).alias("stealth_ring_id"),
            "stealth_tactics",
            F.when(kind.isNotNull() & ~stealth, kind).alias("decoy"),
            F.when(kind.isin("company", "campus", "family"), group).alias("decoy_group"),
            "carve_kind",
            "carve_group",
            "carve_rank",
            "carve_size",
            "_o_e164",
        )
    )
    p = F.col("person_id")
    is_ring = F.col("role") == "ring"
    solo = (F.pmod(p, F.lit(8)) >= 3) & ~is_ring  # a person with a single account
    carved = kind.isNotNull()  # no planted case applies to a stealth or decoy account but do-not-text
    flags = planted_flags(d, n, {"single": solo & ~carved, "ring": is_ring, "any": F.lit(True)})
    first, last = name_columns(d)
    df = df.select(
        "*",
        F.concat(F.lit("U"), F.lpad(F.hex(d.hash("uid", a)), 16, "0")).alias("global_user_id"),
        F.concat(F.lit("M"), (a + 10_000_000).cast("string")).alias("member_id"),
        F.coalesce(first, d.pick("first", FIRST, p)).alias("first_name"),
        F.coalesce(last, d.pick("last", LAST, p)).alias("last_name"),
        (solo & ~stealth).alias("single_account"),
        *[flag.alias(name) for name, flag in flags.items()],
        F.when(is_ring, d.uniform("conf", a) < 0.2).otherwise(d.uniform("conf", a) < 0.85).alias("phone_confirmed"),
    )
    df = df.withColumn("expected_tags", expected_tags())
    df = df.select(
        "*",
        email_column(d).alias("_o_email"),
        ip_column(d).alias("_o_ip"),
        postal_column(d).alias("_o_postal"),
        preferences_column(d, campaign.market_ids, [m.capacity for m in campaign.markets]).alias("_o_prefs"),
    )
    # Materialise the flags: every later column reads them, and inlining them everywhere makes
    # generated code too large to compile.
    df = df.localCheckpoint(eager=False)
    df = df.transform(_phones(d)).transform(_emails(d)).transform(_devices(d, n_rings))
    df = df.transform(_preferences(d, campaign)).transform(_registration_time(d))
    return df.drop(*OVERRIDES)


def _phones(d: Draw):
    def transform(df: DataFrame) -> DataFrame:
        p, a = F.col("person_id"), F.col("acct")
        # Injective per person (p < 160M): an affine permutation split into area slot and local number.
        mixed = phone_of(p)
        area = F.element_at(F.array(*[F.lit(x) for x in AREAS]), (F.pmod(mixed, F.lit(len(AREAS))) + 1).cast("int"))
        local = (mixed / len(AREAS)).cast("long")
        exchange = (F.floor(local / 10000) + 200).cast("string")
        line = F.lpad(F.pmod(local, F.lit(10000)).cast("string"), 4, "0")
        canada = area.isin(*CA_AREAS)
        nanp = F.concat(F.lit("+1"), area, exchange, line)
        intl_idx = d.below("intl_kind", len(INTL), p) + 1
        intl_prefix = F.element_at(F.array(*[F.lit(x[1]) for x in INTL]), intl_idx)
        intl_digits = F.element_at(F.array(*[F.lit(x[2]) for x in INTL]), intl_idx)
        intl_country = F.element_at(F.array(*[F.lit(x[0]) for x in INTL]), intl_idx)
        intl_body = F.lpad(F.pmod(d.hash("intl_body", p), F.lit(100_000_000)).cast("string"), 8, "0")
        intl_e164 = F.concat(intl_prefix, intl_body.substr(F.lit(1), intl_digits))
        e164 = (
            F.when(F.col("no_phone"), F.lit(None))
            .when(F.col("invalid_phone"), F.lit(None))
            .when(F.col("shared_phone"), F.lit(CALL_CENTRE_PHONE))
            .when(F.col("intl"), intl_e164)
            .when(F.col("_o_e164").isNotNull(), F.col("_o_e164"))
            .otherwise(nanp)
        )
        stealth = F.col("_o_e164").isNotNull()  # always a US number
        country = F.when(F.col("intl"), intl_country).when(stealth, "US").when(canada, "CA").otherwise("US")
        fmt = d.below("phone_fmt", 8, a)
        ten = F.substring(e164, 3, 10)
        A, E, L = F.substring(ten, 1, 3), F.substring(ten, 4, 3), F.substring(ten, 7, 4)
        typed_nanp = (
            F.when(fmt == 0, F.concat(F.lit("("), A, F.lit(") "), E, F.lit("-"), L))
            .when(fmt == 1, F.concat_ws("-", A, E, L))
            .when(fmt == 2, F.concat_ws(".", A, E, L))
            .when(fmt == 3, F.concat(F.lit("+1 "), A, F.lit(" "), E, F.lit(" "), L))
            .when(fmt == 4, F.concat(F.lit("1-"), A, F.lit("-"), E, F.lit("-"), L))
            .when(fmt == 5, ten)
            .when(fmt == 6, e164)
            .otherwise(F.concat(F.lit(" "), A, F.lit(" "), E, F.lit(" "), L, F.lit(" ")))
        )
        national = F.substring(e164, 4, 20)
        trunk = F.when(intl_country == "MX", F.lit("")).otherwise(F.lit("0"))
        typed_intl = (
            F.when(fmt < 3, F.concat(trunk, national))
            .when(fmt < 6, F.concat(F.substring(e164, 1, 3), F.lit(" "), national))
            .otherwise(e164)
        )
        garbage = F.element_at(
            F.array(F.lit("12345"), F.lit("555-01"), F.lit("n/a"), F.lit("000-000-0000")), d.below("garbage", 4, a) + 1
        )
        typed = (
            F.when(F.col("no_phone"), F.lit(None))
            .when(F.col("invalid_phone"), garbage)
            .when(F.col("intl"), typed_intl)
            .otherwise(typed_nanp)
        )
        return df.withColumn("truth_phone_e164", e164).withColumn("country", country).withColumn("phone", typed)

    return transform


def _emails(d: Draw):
    def transform(df: DataFrame) -> DataFrame:
        p, a = F.col("person_id"), F.col("acct")
        base = F.lower(F.regexp_replace(F.concat(F.col("first_name"), F.col("last_name")), r"[^A-Za-z]", ""))
        local = F.concat(base, p.cast("string"))
        provider = d.pick("provider", PROVIDERS, p)
        # A person's duplicate account: a gmail dot/+tag variant of the same address, else a new
        # address at another provider (the shared phone links them instead).
        gmail_person = provider == "gmail.com"
        dotted = F.concat(F.substring(local, 1, 1), F.lit("."), F.substring(local, 2, 100))
        tagged = F.concat(local, F.lit("+presale"))
        variant = F.when(d.uniform("variant", a) < 0.5, dotted).otherwise(tagged)
        is_dup = F.col("role") == "duplicate"
        domain = (
            F.when(F.col("blocked_domain"), F.lit(BLOCKED_DOMAIN))
            .when(F.col("allowlisted"), F.lit("partners." + BLOCKED_DOMAIN))
            .when(F.col("disposable"), d.pick("disp", DISPOSABLE, a))
            .when(is_dup & ~gmail_person, d.pick("provider2", PROVIDERS[1:], a))
            .otherwise(provider)
        )
        ring_local = F.concat(F.lit("fan"), F.lower(F.hex(d.hash("ringmail", a))).substr(1, 10))
        user = (
            F.when(F.col("role") == "ring", ring_local)
            .when(is_dup & gmail_person, variant)
            .when(is_dup, F.concat(local, F.lit("x")))
            .otherwise(local)
        )
        clean = F.coalesce(F.col("_o_email"), F.concat(user, F.lit("@"), domain))
        # Typed: mixed case and stray spaces for some.
        style = d.below("email_style", 6, a)
        typed = (
            F.when(style == 0, F.initcap(clean))
            .when(style == 1, F.upper(clean))
            .when(style == 2, F.concat(F.lit("  "), clean, F.lit(" ")))
            .otherwise(clean)
        )
        # Duplicates linked by phone keep the person's phone; gmail-linked ones get a new one.
        return (
            df.withColumn("truth_email", clean)
            .withColumn("email", typed)
            .withColumn("linked_by", F.when(is_dup & gmail_person, "email").when(is_dup, "phone"))
        )

    return transform


def _devices(d: Draw, n_rings: int):
    def transform(df: DataFrame) -> DataFrame:
        a, p, r = F.col("acct"), F.col("person_id"), F.col("ring_id")
        is_ring = F.col("role") == "ring"
        device = (
            F.when(
                is_ring & (d.uniform("ringdev", r) < 0.5),
                F.concat(F.lit("dev-"), F.lower(F.hex(d.hash("ringdevice", r)))),
            )
            .when(d.uniform("nodev", a) < 0.3, F.lit(None))
            .otherwise(F.concat(F.lit("dev-"), F.lower(F.hex(d.hash("device", a)))))
        )
        card = (
            F.when(is_ring, F.concat(F.lit("pf_"), F.lower(F.hex(d.hash("ringcard", r)))))
            .when(d.uniform("nocard", a) < 0.4, F.lit(None))
            .otherwise(F.concat(F.lit("pf_"), F.lower(F.hex(d.hash("card", a)))))
        )
        ip_key = F.when(is_ring, F.concat(F.lit("r"), r.cast("string"))).otherwise(
            F.concat(F.lit("a"), a.cast("string"))
        )
        octet = lambda i: (F.pmod(d.hash(f"ip{i}", ip_key), F.lit(254)) + 1).cast("string")  # noqa: E731
        ip = F.concat_ws(".", octet(1), octet(2), octet(3), octet(4))
        postal = F.lpad(d.below("zip", 99999, p).cast("string"), 5, "0")
        return (
            df.withColumn("device_id", device)
            .withColumn("payment_fingerprint", card)
            .withColumn("ip_address", F.coalesce(F.col("_o_ip"), ip))
            .withColumn("postal_code", F.coalesce(F.col("_o_postal"), postal))
        )

    return transform


def _preferences(d: Draw, campaign: Campaign):
    """1-4 markets, weighted towards big markets (Efraimidis-Spirakis sampling without replacement)."""
    ids = campaign.market_ids
    weights = [m.capacity for m in campaign.markets]

    def transform(df: DataFrame) -> DataFrame:
        a = F.col("acct")
        u_n = d.uniform("npref", a)
        n_pref = F.when(u_n < 0.35, 1).when(u_n < 0.65, 2).when(u_n < 0.85, 3).otherwise(4)
        n_pref = F.least(n_pref, F.lit(len(ids)))
        table = F.array(
            *[
                F.struct(F.lit(i).alias("i"), F.lit(m).alias("m"), F.lit(float(w)).alias("w"))
                for i, (m, w) in enumerate(zip(ids, weights, strict=True))
            ]
        )
        keyed = F.transform(
            table,
            lambda t: F.struct((-F.log(d.uniform("pref", a, t["i"]) + 1e-12) / t["w"]).alias("k"), t["m"].alias("m")),
        )
        chosen = F.slice(F.transform(F.array_sort(keyed), lambda s: s["m"]), 1, n_pref)
        chosen = F.coalesce(F.col("_o_prefs"), chosen)
        locale = F.element_at(
            F.array(*[F.lit(m.locale) for m in campaign.markets]),
            F.array_position(F.array(*[F.lit(i) for i in ids]), F.element_at(chosen, 1)).cast("int"),
        )
        return df.withColumn("market_preferences", chosen).withColumn("locale", locale)

    return transform


def _registration_time(d: Draw):
    def transform(df: DataFrame) -> DataFrame:
        a, r = F.col("acct"), F.col("ring_id")
        start = int(WINDOW_START.timestamp())
        genuine = F.lit(start) + (d.uniform("regtime", a) * WINDOW_SECONDS).cast("long")
        ring_base = F.lit(start) + (d.uniform("ringtime", r) * (WINDOW_SECONDS - 3600)).cast("long")
        ring_t = ring_base + d.below("ringoffset", 600, a)
        seconds = F.when(F.col("role") == "ring", ring_t).otherwise(genuine)
        ts = F.timestamp_seconds(seconds)
        style = d.below("ts_style", 5, a)
        # Some typed in Paris local time with its offset: the same instant, written differently.
        shifted = F.from_utc_timestamp(ts, "Europe/Paris")
        offset_minutes = ((F.unix_timestamp(shifted) - F.unix_timestamp(ts)) / 60).cast("int")
        offset = F.format_string("+%02d:%02d", (offset_minutes / 60).cast("int"), F.pmod(offset_minutes, F.lit(60)))
        typed = (
            F.when(style == 0, F.date_format(ts, "yyyy-MM-dd'T'HH:mm:ss'Z'"))
            .when(style == 1, F.concat(F.date_format(shifted, "yyyy-MM-dd'T'HH:mm:ss"), offset))
            .when(style == 2, F.date_format(ts, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"))
            .when(style == 3, F.date_format(ts, "yyyy-MM-dd HH:mm:ss'+00:00'"))
            .otherwise(F.date_format(ts, "yyyy-MM-dd'T'HH:mm:ssXXX"))
        )
        return df.withColumn("truth_registered_at", ts).withColumn("registered_at", typed)

    return transform


def fan_activity(d: Draw, acc: DataFrame) -> DataFrame:
    """Fan activity: most registrants have a history; genuine fans are more active than rings.
    Stealth and decoy accounts always have a row: stealth accounts are weeks old, never attended,
    resell below the scalper threshold; new fans are days old; campuses mix new accounts (no event
    attended yet) and old ones."""
    a = F.col("acct")
    ring = F.col("role") == "ring"
    stealth = F.col("role") == "stealth"
    decoy = F.col("decoy")
    new_fan = decoy.eqNullSafe("new_fan")
    u = lambda name: d.uniform(name, a)  # noqa: E731
    # students whose account is new: no event attended yet, like a ring's (they do not resell)
    new_student = decoy.eqNullSafe("campus") & (u("campus_new") < 0.3)
    start = int(WINDOW_START.timestamp())
    days_before = lambda lo, hi, name: F.timestamp_seconds(  # noqa: E731
        F.lit(start) - (F.lit(lo * 86400) + u(name) * ((hi - lo) * 86400)).cast("long")
    )
    return acc.where((d.uniform("has_activity", a) < 0.92) | stealth | decoy.isNotNull()).select(
        "global_user_id",
        F.when(ring, F.timestamp_seconds(F.lit(start) - (u("age") * 60 * 86400).cast("long")))
        .when(stealth, days_before(3, 45, "age"))
        .when(new_fan, days_before(1, 30, "age"))
        .when(new_student, days_before(1, 90, "age"))
        .otherwise(
            F.timestamp_seconds(
                F.lit(int(dt.datetime(2008, 1, 1, tzinfo=dt.UTC).timestamp()))
                + (u("age") * 18 * 365 * 86400).cast("long")
            )
        )
        .alias("account_created_at"),
        F.when(ring, F.floor(u("tix") * 3))
        .when(stealth, F.floor(u("tix") * 4))
        .when(new_fan, F.floor(u("tix") * 3))
        .otherwise(F.floor(u("tix") * u("tix2") * 14))
        .cast("long")
        .alias("tickets_purchased_24m"),
        F.when(ring | stealth | new_fan | new_student, F.lit(0))
        .otherwise(F.floor(u("tix") * u("tix2") * 10))
        .cast("long")
        .alias("events_attended_24m"),
        F.when(ring | stealth | new_fan, F.lit(0))
        .otherwise(F.floor(u("atix") * 4))
        .cast("long")
        .alias("artist_tickets_purchased"),
        F.when(ring, F.floor(u("streams") * 5))
        .when(stealth, F.floor(u("streams") * 6))
        .otherwise(F.floor(F.pow(u("streams"), 3) * 5000))
        .cast("long")
        .alias("artist_streams_90d"),
        F.when(ring, F.floor(u("resale") * 50) + 10)
        .when(stealth, F.floor(u("resale") * (STEALTH_MAX_RESALE + 1)))
        .when(new_fan | (u("resale") < 0.92), F.lit(0))
        .otherwise(F.floor(u("resale2") * 3) + 1)
        .cast("long")
        .alias("resale_listings_24m"),
        F.when(ring, F.floor(u("cb") * 5)).otherwise(F.lit(0)).cast("long").alias("chargebacks_24m"),
    )


def code_pool(spark: SparkSession, d: Draw, campaign: Campaign) -> DataFrame:
    """(code, market_id, i): 10% more codes than capacity per market, seeded and unique."""
    markets = spark.createDataFrame(
        [(m.market_id, int(m.capacity * 1.1) + 1) for m in campaign.markets], "market_id string, n int"
    )
    return markets.select("market_id", F.explode(F.sequence(F.lit(1), F.col("n"))).alias("i")).select(
        F.upper(
            F.lpad(
                F.conv(F.pmod(d.hash("code", F.col("market_id"), F.col("i")), F.lit(1 << 50)).cast("string"), 10, 32),
                10,
                "0",
            )
        ).alias("code"),
        "market_id",
        F.col("i"),
    )
