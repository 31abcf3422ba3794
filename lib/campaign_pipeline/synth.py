"""Synthetic campaigns: seeded, realistic landing files with known ground truth.

A Spark job (10M registrants need no driver memory: every column is a function of the account
number and the seed). Each column draws from `xxhash64(seed, column name, key)`, so adding a
column never changes the others. Planted mess, each recorded in the ground truth:

- phones typed in many formats, international numbers typed nationally or with `+`, invalid ones,
  one call-centre number shared by many unrelated fans, unconfirmed phones;
- mixed-case emails with stray spaces; duplicate accounts of one person (shared phone, or gmail
  dot/`+tag` variants of one address);
- scalper rings: accounts sharing a payment card (and often a device), registered in a burst from
  one IP, low activity, many resale listings and chargebacks;
- disposable-domain, blocked-domain and blocked-address emails; allow-listed partner addresses;
- do-not-text fans; 1-4 market preferences skewed to big markets; malformed rows.

Output under `<out>/`: `<campaign_id>/` (landing files), `<campaign_id>/_truth/` (Parquet ground
truth, ignored by ingest) and `<campaign_id>.yaml` (a matching campaign config).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign, Market, Options, Screening, Wave, dump_campaign

CITIES = [
    ("NYC", "New York", "America/New_York", "en_US"),
    ("LAX", "Los Angeles", "America/Los_Angeles", "en_US"),
    ("CHI", "Chicago", "America/Chicago", "en_US"),
    ("TOR", "Toronto", "America/Toronto", "en_CA"),
    ("HOU", "Houston", "America/Chicago", "es_US"),
    ("ATL", "Atlanta", "America/New_York", "en_US"),
    ("MIA", "Miami", "America/New_York", "es_US"),
    ("SEA", "Seattle", "America/Los_Angeles", "en_US"),
    ("BOS", "Boston", "America/New_York", "en_US"),
    ("MTL", "Montreal", "America/Toronto", "fr_CA"),
    ("DEN", "Denver", "America/Denver", "en_US"),
    ("PHX", "Phoenix", "America/Phoenix", "en_US"),
    ("VAN", "Vancouver", "America/Vancouver", "en_CA"),
    ("DAL", "Dallas", "America/Chicago", "en_US"),
    ("SFO", "San Francisco", "America/Los_Angeles", "en_US"),
    ("PHL", "Philadelphia", "America/New_York", "en_US"),
    ("DET", "Detroit", "America/Detroit", "en_US"),
    ("MSP", "Minneapolis", "America/Chicago", "en_US"),
    ("NSH", "Nashville", "America/Chicago", "en_US"),
    ("AUS", "Austin", "America/Chicago", "en_US"),
    ("LVG", "Las Vegas", "America/Los_Angeles", "en_US"),
    ("POR", "Portland", "America/Los_Angeles", "en_US"),
    ("SDG", "San Diego", "America/Los_Angeles", "en_US"),
    ("CLT", "Charlotte", "America/New_York", "en_US"),
    ("ORL", "Orlando", "America/New_York", "en_US"),
]
FIRST = [
    "Maria",
    "James",
    "Sofia",
    "Liam",
    "Olivia",
    "Noah",
    "Emma",
    "Mateo",
    "Ava",
    "Lucas",
    "Chloé",
    "Ethan",
    "Isabella",
    "Aiden",
    "Mia",
    "Jamal",
    "Priya",
    "Wei",
    "Fatima",
    "Jörg",
    "Zoë",
    "Diego",
    "Hannah",
    "Kofi",
]
LAST = [
    "Garcia",
    "Smith",
    "Nguyen",
    "Johnson",
    "Brown",
    "O'Brien",
    "Müller",
    "Smith, Jr.",
    "Kim",
    "Patel",
    "Rodriguez",
    "Martin",
    "Lee",
    "Walker",
    "Hall",
    "de la Cruz",
    "Young",
    "Allen",
    "Wright",
    "Lopez",
    "Chen",
    "Okafor",
    "Dubois",
    "Kowalski",
]
# 20 area codes, 3 of them Canadian: a phone's area slot decides its country.
AREAS = [
    "212",
    "416",
    "213",
    "312",
    "415",
    "617",
    "604",
    "206",
    "305",
    "404",
    "512",
    "702",
    "514",
    "303",
    "214",
    "602",
    "615",
    "503",
    "718",
    "646",
]
CA_AREAS = {"416", "604", "514"}
# (country, e164 prefix, digits after it, national trunk prefix for typing it locally)
INTL = [
    ("GB", "+447400", 6, "0"),
    ("GB", "+447800", 6, "0"),
    ("DE", "+491512", 7, "0"),
    ("FR", "+3361", 7, "0"),
    ("FR", "+3367", 7, "0"),
    ("MX", "+5255", 8, ""),
]
PROVIDERS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "hotmail.com",
    "aol.com",
    "proton.me",
    "comcast.net",
]
DISPOSABLE = ["mailinator.com", "guerrillamail.com", "yopmail.com", "10minutemail.com", "sharklasers.com"]
BLOCKED_DOMAIN = "scalperhub.example"
ALLOWED_PATTERN = "*@partners.scalperhub.example"
CALL_CENTRE_PHONE = "+18005550199"
REGISTRATION_COLUMNS = [
    "campaign_id",
    "global_user_id",
    "member_id",
    "email",
    "phone",
    "phone_confirmed",
    "first_name",
    "last_name",
    "locale",
    "country",
    "postal_code",
    "market_preferences",
    "registered_at",
    "ip_address",
    "device_id",
    "payment_fingerprint",
    "do_not_text",
]
WINDOW_START = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)
WINDOW_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class SynthSpec:
    campaign_id: str = "demo-tour"
    registrants: int = 200_000
    markets: int = 12
    seed: int = 20270301
    registration_files: int = 0  # 0: one per million registrants
    registrations_format: str = "csv"
    malformed_rate: float = 0.0005
    capacity_ratio: float = 0.35  # total codes / registrants


@dataclass(frozen=True)
class SynthOutput:
    landing: str
    truth: str
    campaign_yaml: str
    campaign: Campaign


class _Draw:
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


def accounts(spark: SparkSession, spec: SynthSpec, campaign: Campaign) -> DataFrame:
    """One row per planted account with every generated attribute and its ground truth."""
    d = _Draw(spec.seed)
    n = spec.registrants
    n_rings = max(1, round(n * 0.025 / 14))
    a = F.col("acct")
    slot = F.pmod(a, F.lit(8))
    # Duplicate accounts sit right after their person's first account (slots 1 and 2 of a block of 8).
    dup1 = (slot == 1) & (d.uniform("dup1", a) < 0.24)
    prev_dup1 = (F.pmod(a - 1, F.lit(8)) == 1) & (d.uniform("dup1", a - 1) < 0.24)
    dup2 = (slot == 2) & prev_dup1 & (d.uniform("dup2", a) < 0.35)
    ring = (slot >= 3) & (d.uniform("ring", a) < 0.04)
    df = (
        spark.range(n)
        .withColumnRenamed("id", "acct")
        .select(
            "acct",
            F.when(ring, "ring").when(dup1 | dup2, "duplicate").otherwise("genuine").alias("role"),
            F.when(dup1, a - 1).when(dup2, a - 2).otherwise(a).alias("person_id"),
            F.when(ring, d.below("ring_id", n_rings, a)).alias("ring_id"),
        )
    )
    p = F.col("person_id")
    is_ring = F.col("role") == "ring"
    solo = (F.pmod(p, F.lit(8)) >= 3) & ~is_ring  # a person with a single account
    # Enough fans behind one call-centre number to exceed max_shared (50) at any campaign size.
    shared_rate = min(0.05, max(0.002, 130 / max(1, n)))
    df = df.select(
        "*",
        F.concat(F.lit("U"), F.lpad(F.hex(d.hash("uid", a)), 16, "0")).alias("global_user_id"),
        F.concat(F.lit("M"), (a + 10_000_000).cast("string")).alias("member_id"),
        d.pick("first", FIRST, p).alias("first_name"),
        d.pick("last", LAST, p).alias("last_name"),
        # international: 2.5% of single-account genuine fans
        # Phone plantings are exclusive (first wins): no phone, invalid, call-centre, international.
        # Only single-account people lose or garble their phone, so duplicates stay linked by it.
        (solo & (d.uniform("nophone", p) < 0.03)).alias("no_phone"),
        (solo & (d.uniform("nophone", p) >= 0.03) & (d.uniform("badphone", p) < 0.005)).alias("invalid_phone"),
        (
            solo
            & (d.uniform("nophone", p) >= 0.03)
            & (d.uniform("badphone", p) >= 0.005)
            & (d.uniform("callcentre", p) < shared_rate)
        ).alias("shared_phone"),
        (
            solo
            & (d.uniform("nophone", p) >= 0.03)
            & (d.uniform("badphone", p) >= 0.005)
            & (d.uniform("callcentre", p) >= shared_rate)
            & (d.uniform("intl", p) < 0.025)
        ).alias("intl"),
        (solo & (d.uniform("blockedmail", p) < 0.001)).alias("blocked_email"),
        (solo & (d.uniform("blockeddom", p) < 0.002)).alias("blocked_domain"),
        (solo & (d.uniform("allowed", p) < 0.0008)).alias("allowlisted"),
        ((solo & (d.uniform("disposable", p) < 0.004)) | (is_ring & (d.uniform("ringdisp", a) < 0.3))).alias(
            "disposable"
        ),
        (d.uniform("dnt", a) < 0.05).alias("do_not_text"),
        F.when(is_ring, d.uniform("conf", a) < 0.2).otherwise(d.uniform("conf", a) < 0.85).alias("phone_confirmed"),
    )
    # exclusive email plantings: the first flag that applies wins
    df = (
        df.withColumn("blocked_domain", F.col("blocked_domain") & ~F.col("blocked_email"))
        .withColumn("allowlisted", F.col("allowlisted") & ~F.col("blocked_email") & ~F.col("blocked_domain"))
        .withColumn(
            "disposable",
            F.col("disposable") & ~F.col("blocked_email") & ~F.col("blocked_domain") & ~F.col("allowlisted"),
        )
    )
    # Materialise the flags: every later column reads them, and inlining them everywhere makes
    # generated code too large to compile.
    df = df.localCheckpoint(eager=False)
    df = df.transform(_phones(d)).transform(_emails(d)).transform(_devices(d, n_rings))
    df = df.transform(_preferences(d, campaign)).transform(_registration_time(d))
    return df


def _phones(d: _Draw):
    def transform(df: DataFrame) -> DataFrame:
        p, a = F.col("person_id"), F.col("acct")
        # Injective per person (p < 160M): an affine permutation split into area slot and local number.
        mixed = F.pmod(p * 48_271 + 7_654_321, F.lit(160_000_000))
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
            .otherwise(nanp)
        )
        country = F.when(F.col("intl"), intl_country).when(canada, "CA").otherwise("US")
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


def _emails(d: _Draw):
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
        clean = F.concat(user, F.lit("@"), domain)
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


def _devices(d: _Draw, n_rings: int):
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
            .withColumn("ip_address", ip)
            .withColumn("postal_code", postal)
        )

    return transform


def _preferences(d: _Draw, campaign: Campaign):
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
        locale = F.element_at(
            F.array(*[F.lit(m.locale) for m in campaign.markets]),
            F.array_position(F.array(*[F.lit(i) for i in ids]), F.element_at(chosen, 1)).cast("int"),
        )
        return df.withColumn("market_preferences", chosen).withColumn("locale", locale)

    return transform


def _registration_time(d: _Draw):
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


def _csv_field(col: Column, sep: str) -> Column:
    """RFC 4180 quoting when the value holds the separator, a quote or a newline."""
    text = F.coalesce(col.cast("string"), F.lit(""))
    needs = text.contains(sep) | text.contains('"')
    return F.when(needs, F.concat(F.lit('"'), F.replace(text, F.lit('"'), F.lit('""')), F.lit('"'))).otherwise(text)


MALFORMED = [
    ("bad_timestamp", "registered_at: expected an ISO-8601 timestamp with zone"),
    ("no_zone", "registered_at: expected an ISO-8601 timestamp with zone"),
    ("missing_id", "missing required field global_user_id"),
    ("no_market", "no market in market_preferences"),
    ("bad_boolean", "phone_confirmed: expected true/false/1/0/yes/no"),
    ("field_count", "wrong field count"),
]


def registration_rows(df: DataFrame, spec: SynthSpec, fmt: str) -> DataFrame:
    """Registration rows as delivered (strings), with planted malformed rows appended."""
    d = _Draw(spec.seed)
    prefs_text = F.array_join("market_preferences", "|")
    rows = df.select(
        F.lit(spec.campaign_id).alias("campaign_id"),
        "global_user_id",
        "member_id",
        "email",
        "phone",
        F.when(F.col("phone_confirmed"), "true")
        .otherwise(d.pick("false_word", ["false", "0", "no"], F.col("acct")))
        .alias("phone_confirmed"),
        "first_name",
        "last_name",
        "locale",
        "country",
        "postal_code",
        (prefs_text if fmt in ("csv", "tsv") else F.col("market_preferences")).alias("market_preferences"),
        "registered_at",
        "ip_address",
        "device_id",
        "payment_fingerprint",
        F.when(F.col("do_not_text"), d.pick("true_word", ["true", "1", "yes"], F.col("acct")))
        .otherwise("false")
        .alias("do_not_text"),
        F.col("acct").alias("_order"),
        F.lit(None).cast("string").alias("_malformed"),
    )
    return rows


def malformed_rows(spark: SparkSession, spec: SynthSpec, template: DataFrame, fmt: str) -> DataFrame:
    n_bad = max(len(MALFORMED), int(spec.registrants * spec.malformed_rate))
    kinds = F.array(*[F.lit(k) for k, _ in MALFORMED])
    bad = template.where(F.col("_order") < n_bad).withColumn(
        "_malformed", F.element_at(kinds, (F.pmod(F.col("_order"), F.lit(len(MALFORMED))) + 1).cast("int"))
    )
    k = F.col("_malformed")
    bad = (
        bad.withColumn(
            "global_user_id",
            F.when(k == "missing_id", F.lit("")).otherwise(F.concat(F.lit("X"), F.col("global_user_id"))),
        )
        .withColumn(
            "registered_at",
            F.when(k == "bad_timestamp", F.lit("2027-02-31T25:61:00Z"))
            .when(k == "no_zone", F.lit("2027-02-03T10:15:00"))
            .otherwise(F.col("registered_at")),
        )
        .withColumn(
            "market_preferences",
            F.when(k == "no_market", F.lit("") if fmt in ("csv", "tsv") else F.array().cast("array<string>")).otherwise(
                F.col("market_preferences")
            ),
        )
        .withColumn("phone_confirmed", F.when(k == "bad_boolean", F.lit("maybe")).otherwise(F.col("phone_confirmed")))
        .withColumn("_order", F.col("_order") + spec.registrants)
    )
    return bad


def _line(df: DataFrame, sep: str) -> Column:
    fields = [_csv_field(F.col(c), sep) for c in REGISTRATION_COLUMNS]
    full = F.concat_ws(sep, *fields)
    short = F.concat_ws(sep, *fields[:-1])  # one field missing
    return F.when(F.col("_malformed") == "field_count", short).otherwise(full)


def _move_parts(spark: SparkSession, tmp: str, dest_dir: str, prefix: str, ext: str) -> list[str]:
    """Rename Spark's `_f=<i>/part-*` outputs to stable names `<prefix>_<i>.<ext>`."""
    jvm = spark._jvm
    conf = spark._jsc.hadoopConfiguration()
    tmp_path = jvm.org.apache.hadoop.fs.Path(tmp)
    fs = tmp_path.getFileSystem(conf)
    moved = []
    for status in fs.listStatus(tmp_path):
        name = status.getPath().getName()
        if not name.startswith("_f="):
            continue
        idx = int(name.split("=", 1)[1])
        parts = [s for s in fs.listStatus(status.getPath()) if s.getPath().getName().startswith("part-")]
        for j, part in enumerate(sorted(parts, key=lambda s: s.getPath().getName())):
            suffix = f"_{j}" if len(parts) > 1 else ""
            target = jvm.org.apache.hadoop.fs.Path(f"{dest_dir}/{prefix}_{idx:03d}{suffix}.{ext}")
            fs.delete(target, False)
            fs.rename(part.getPath(), target)
            moved.append(target.toString())
    fs.delete(tmp_path, True)
    return sorted(moved)


def _write_text_files(
    spark: SparkSession, lines: DataFrame, dest: str, prefix: str, ext: str, n_files: int
) -> list[str]:
    """`lines` (`_f`, `_k`, `value`) → one text file per `_f`, rows ordered by `_k`."""
    tmp = f"{dest}/_tmp_{prefix}"
    (
        lines.repartition(n_files, "_f")
        .sortWithinPartitions("_f", "_k")
        .select("_f", "value")
        .write.mode("overwrite")
        .partitionBy("_f")
        .text(tmp)
    )
    return _move_parts(spark, tmp, dest, prefix, ext)


def _with_headers(rows: DataFrame, header: str, n_files: int, spark: SparkSession) -> DataFrame:
    headers = spark.range(n_files).select(
        F.col("id").cast("int").alias("_f"), F.lit(-1).cast("long").alias("_k"), F.lit(header).alias("value")
    )
    return rows.unionByName(headers)


def generate(spark: SparkSession, spec: SynthSpec, out: str) -> SynthOutput:
    """Write a synthetic campaign under `out` and return where everything is."""
    campaign = make_campaign(spec)
    root = Path(out)
    landing = root / spec.campaign_id
    truth = landing / "_truth"
    root.mkdir(parents=True, exist_ok=True)
    if landing.exists():
        import shutil

        shutil.rmtree(landing)
    landing.mkdir(parents=True)
    dest = str(landing.resolve())
    n_files = spec.registration_files or max(1, math.ceil(spec.registrants / 1_000_000))
    d = _Draw(spec.seed)

    spark.sparkContext.setJobDescription(f"synth: {spec.registrants:,} registrants")
    acc = accounts(spark, spec, campaign).persist()
    fmt = spec.registrations_format
    rows = registration_rows(acc, spec, fmt)
    bad = malformed_rows(spark, spec, rows, fmt)
    all_rows = rows.unionByName(bad).withColumn("_f", F.pmod(F.col("_order"), F.lit(n_files)).cast("int"))

    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        lines = all_rows.select("_f", F.col("_order").alias("_k"), _line(all_rows, sep).alias("value"))
        _write_text_files(
            spark,
            _with_headers(lines, sep.join(REGISTRATION_COLUMNS), n_files, spark),
            dest,
            "registrations",
            fmt,
            n_files,
        )
    elif fmt == "json":
        payload = F.to_json(F.struct(*[F.col(c) for c in REGISTRATION_COLUMNS]))
        lines = all_rows.select("_f", F.col("_order").alias("_k"), payload.alias("value"))
        _write_text_files(spark, lines, dest, "registrations", "jsonl", n_files)
    else:
        tmp = f"{dest}/_tmp_registrations"
        (
            all_rows.repartition(n_files, "_f")
            .sortWithinPartitions("_f", "_order")
            .select("_f", *REGISTRATION_COLUMNS)
            .write.mode("overwrite")
            .partitionBy("_f")
            .format(fmt)
            .save(tmp)
        )
        _move_parts(spark, tmp, dest, "registrations", fmt)

    # fan activity (Parquet): most registrants have a history; genuine fans are more active.
    a = F.col("acct")
    ring = F.col("role") == "ring"
    u = lambda name: d.uniform(name, a)  # noqa: E731
    activity = acc.where(d.uniform("has_activity", a) < 0.92).select(
        "global_user_id",
        F.when(ring, F.timestamp_seconds(F.lit(int(WINDOW_START.timestamp())) - (u("age") * 60 * 86400).cast("long")))
        .otherwise(
            F.timestamp_seconds(
                F.lit(int(dt.datetime(2008, 1, 1, tzinfo=dt.UTC).timestamp()))
                + (u("age") * 18 * 365 * 86400).cast("long")
            )
        )
        .alias("account_created_at"),
        F.when(ring, F.floor(u("tix") * 3))
        .otherwise(F.floor(u("tix") * u("tix2") * 14))
        .cast("long")
        .alias("tickets_purchased_24m"),
        F.when(ring, F.lit(0)).otherwise(F.floor(u("tix") * u("tix2") * 10)).cast("long").alias("events_attended_24m"),
        F.when(ring, F.lit(0)).otherwise(F.floor(u("atix") * 4)).cast("long").alias("artist_tickets_purchased"),
        F.when(ring, F.floor(u("streams") * 5))
        .otherwise(F.floor(F.pow(u("streams"), 3) * 5000))
        .cast("long")
        .alias("artist_streams_90d"),
        F.when(ring, F.floor(u("resale") * 50) + 10)
        .when(u("resale") < 0.92, F.lit(0))
        .otherwise(F.floor(u("resale2") * 3) + 1)
        .cast("long")
        .alias("resale_listings_24m"),
        F.when(ring, F.floor(u("cb") * 5)).otherwise(F.lit(0)).cast("long").alias("chargebacks_24m"),
    )
    tmp = f"{dest}/_tmp_fan_activity"
    activity.withColumn("_f", F.lit(0)).repartition(1).write.mode("overwrite").partitionBy("_f").parquet(tmp)
    _move_parts(spark, tmp, dest, "fan_activity", "parquet")

    # code pool (CSV): 10% more codes than capacity per market, seeded, unique.
    markets = spark.createDataFrame(
        [(m.market_id, int(m.capacity * 1.1) + 1) for m in campaign.markets], "market_id string, n int"
    )
    codes = markets.select("market_id", F.explode(F.sequence(F.lit(1), F.col("n"))).alias("i")).select(
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
    code_lines = codes.select(
        F.lit(0).alias("_f"), F.col("i").cast("long").alias("_k"), F.concat_ws(",", "code", "market_id").alias("value")
    )
    _write_text_files(spark, _with_headers(code_lines, "code,market_id", 1, spark), dest, "code_pool", "csv", 1)

    # block / allow lists
    blocked = acc.where("blocked_email").select(
        F.lit(0).alias("_f"), F.col("acct").alias("_k"), F.col("truth_email").alias("value")
    )
    comment = spark.range(1).select(
        F.lit(0).alias("_f"),
        F.lit(-1).cast("long").alias("_k"),
        F.lit("# addresses blocked by the campaign team").alias("value"),
    )
    _write_text_files(spark, blocked.unionByName(comment), dest, "blocked_emails", "txt", 1)
    (landing / "blocked_domains.txt").write_text(f"# resale operations\n{BLOCKED_DOMAIN}\n", encoding="utf-8")
    (landing / "allowed_patterns.txt").write_text(f"# partner staff\n{ALLOWED_PATTERN}\n", encoding="utf-8")
    for crc in landing.glob(".*.crc"):  # Hadoop's local checksum side files
        crc.unlink()
    for stale in landing.glob("*_000.txt"):
        stale.rename(landing / stale.name.replace("_000", ""))
    for stale in landing.glob("code_pool_000.csv"):
        stale.rename(landing / "code_pool.csv")
    for stale in landing.glob("fan_activity_000.parquet"):
        stale.rename(landing / "fan_activity.parquet")

    truth_cols = [
        "acct",
        "global_user_id",
        "person_id",
        "role",
        "ring_id",
        "linked_by",
        "intl",
        "shared_phone",
        "invalid_phone",
        "no_phone",
        "blocked_email",
        "blocked_domain",
        "allowlisted",
        "disposable",
        "do_not_text",
        "phone_confirmed",
        "truth_phone_e164",
        "truth_email",
        "truth_registered_at",
        "country",
    ]
    acc.select(*truth_cols, F.lit(None).cast("string").alias("malformed")).unionByName(
        bad.select(
            F.col("_order").alias("acct"),
            "global_user_id",
            *[F.lit(None).alias(c) for c in truth_cols[2:]],
            F.col("_malformed").alias("malformed"),
        ),
        allowMissingColumns=False,
    ).write.mode("overwrite").parquet(str(truth / "accounts"))
    acc.unpersist()

    yaml_path = root / f"{spec.campaign_id}.yaml"
    dump_campaign(campaign, yaml_path)
    return SynthOutput(str(landing), str(truth / "accounts"), str(yaml_path), campaign)
