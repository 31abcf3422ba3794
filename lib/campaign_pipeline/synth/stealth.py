"""Stealth rings and decoys: who they are and the columns that make them (what: `synth.spec`).

**Carving.** Stealth-ring and decoy accounts are carved from accounts that would otherwise be
genuine single-account people, so every other account (duplicates, FRAUD_RING rings, every
planted case) is generated exactly as without them. The carved account numbers are whole blocks
of 8, one block every `stride` blocks (spread over the campaign). Numbered consecutively, the
carved positions form regions (stealth, then each decoy kind), each cut into slots of
`Region.slot` positions, one slot per ring or group (a new-fan slot is one block whose every
would-be single account is a new fan). A slot's members are its first `size` (drawn per group)
would-be single accounts: positions 3-7 of their block of 8 that are not FRAUD_RING accounts; the
rest of the slot stays as it was. A member's rank is counted from the seeded draws of the slot's
earlier positions, so everything stays a column expression of the account number (no driver
memory, no shuffle).

**Uniqueness.** Emails of catchall rings and companies: a distinct name per rank. Pattern rings:
(name, digits) is a bijection of ring * 32 + rank, unique across rings below 576 * 10^3 (18,000
rings). Phones: a person's number is an affine permutation of its person number (`phone_of`), and
the numbers of person numbers at or above the campaign size are free. A ring without
`number_block` gives each member a free number of its own (in `[n, reserved)`, US area codes only);
a `number_block` ring takes a run inside one block of 100 numbers whose persons are all at or
above `reserved`, trying hundred-blocks no other ring tries (always found below about 12M
registrants, where every ring may try 128). Decoys keep their own person's number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.synth.spec import (
    AREAS,
    CA_AREAS,
    DECOY_RATE,
    DECOYS,
    FIRST,
    LAST,
    PATTERN_TEMPLATES,
    PROVIDERS,
    RING_RATE,
    STEALTH_RING_SIZE,
    STEALTH_TACTICS,
    STEALTH_TACTICS_PER_RING,
    SynthSpec,
)

if TYPE_CHECKING:
    from campaign_pipeline.synth.accounts import Draw

# Person number → phone: mixed = (p * PHONE_MUL + PHONE_ADD) mod PHONE_SPACE, area slot = mixed mod
# 20, local number = mixed div 20 (exchange = local div 10000 + 200, line = local mod 10000).
PHONE_SPACE = 160_000_000
PHONE_MUL = 48_271
PHONE_ADD = 7_654_321
PHONE_INV = pow(PHONE_MUL, -1, PHONE_SPACE)
HUNDRED_BLOCKS = PHONE_SPACE // 100  # (area slot, local div 100)
US_AREA_SLOTS = [i for i, area in enumerate(AREAS) if area not in CA_AREAS]
BLOCK_TRIES = 128  # hundred-blocks a number_block ring may try (fewer when rings * tries > HUNDRED_BLOCKS)
RING_SLOT = 64  # carved positions per stealth ring: 40 possible single accounts, for up to 30 members
RING_STRIDE = 32  # ring * RING_STRIDE + rank: a member's number among all rings' members
NAMES = len(FIRST) * len(LAST)
NAME_STEP = 175  # coprime with NAMES (576) and 1 + NAME_STEP * 10^d is too: distinct names per rank
CATCHALL_WORDS = ["tix", "fanbox", "inbox", "mailer", "passes"]
COMPANY_WORDS = ["northwind", "contoso", "fabrikam", "initech", "globex", "tailspin", "wideworld", "lakeshore"]
COMPANY_SUFFIXES = ["labs", "group", "systems", "health", "logistics", "partners"]
ACCENTS = ("éöëüÉÖËÜ", "eoeuEOEU")


def idiv(col: Column, k: int | Column) -> Column:
    """Integer division of a non-negative long."""
    return ((col - F.pmod(col, k if isinstance(k, Column) else F.lit(k))) / k).cast("long")


@dataclass(frozen=True)
class Region:
    kind: str  # "stealth" or a decoy kind
    start: int  # first carved position
    groups: int
    slot: int  # carved positions per group
    size: tuple[int, int]  # members per group, drawn per group

    @property
    def end(self) -> int:
        return self.start + self.groups * self.slot


@dataclass(frozen=True)
class Layout:
    registrants: int
    regions: tuple[Region, ...]
    blocks: int  # carved blocks of 8 accounts
    stride: int  # one carved block every `stride` blocks ...
    offset: int  # ... at this block of each stride

    def region(self, kind: str) -> Region | None:
        return next((r for r in self.regions if r.kind == kind), None)

    @property
    def rings(self) -> int:
        stealth = self.region("stealth")
        return stealth.groups if stealth else 0


def layout(spec: SynthSpec) -> Layout:
    n = spec.registrants
    regions: list[Region] = []
    start = 0
    rings = min(spec.stealth_ring_count(), math.ceil(n / 8) // (RING_SLOT // 8))  # no more than fit
    if rings:
        regions.append(Region("stealth", 0, rings, RING_SLOT, STEALTH_RING_SIZE))
        start = rings * RING_SLOT
    if spec.decoys:
        for kind in DECOYS:
            mean = (kind.size[0] + kind.size[1]) / 2 * (0.96 if kind.kind == "new_fan" else 1)
            wanted = DECOY_RATE * n / mean
            groups = max(1, math.ceil(wanted) if kind.kind == "new_fan" else round(wanted))
            regions.append(Region(kind.kind, start, groups, kind.slot, kind.size))
            start += groups * kind.slot
    blocks = start // 8
    stride = max(1, math.ceil(n / 8) // blocks) if blocks else 1
    return Layout(n, tuple(regions), blocks, stride, stride // 2)


def single_candidate(d: Draw, a: Column) -> Column:
    """Whether account `a` would be a genuine single-account person (as `accounts` draws roles)."""
    return (F.pmod(a, F.lit(8)) >= 3) & (d.uniform("ring", a) >= RING_RATE)


def carve(d: Draw, lay: Layout):
    """Adds, from `acct`: `carve_kind` ("stealth" or a decoy kind, null when not carved),
    `carve_group` (ring or group number within its kind), `carve_rank` (rank in it) and
    `carve_size` (its drawn size)."""

    def transform(df: DataFrame) -> DataFrame:
        if not lay.blocks:
            return df.select(
                "*",
                F.lit(None).cast("string").alias("carve_kind"),
                F.lit(None).cast("long").alias("carve_group"),
                F.lit(None).cast("int").alias("carve_rank"),
                F.lit(None).cast("int").alias("carve_size"),
            )
        a = F.col("acct")
        rel = idiv(a, 8) - lay.offset
        k = idiv(rel, lay.stride)
        carved = (rel >= 0) & (F.pmod(rel, F.lit(lay.stride)) == 0) & (k < lay.blocks)
        x = k * 8 + F.pmod(a, F.lit(8))

        def by_region(value) -> Column:
            out = None
            for r in lay.regions:
                cond = carved & (x >= r.start) & (x < r.end)
                out = F.when(cond, value(r)) if out is None else out.when(cond, value(r))
            return out

        located = df.select(
            "*",
            by_region(lambda r: F.lit(r.kind)).alias("_kind"),
            by_region(lambda r: idiv(x - r.start, r.slot)).alias("_group"),
            by_region(lambda r: idiv(x - r.start, 8) - F.pmod(idiv(x - r.start, 8), F.lit(r.slot // 8)) + r.start // 8)
            .cast("long")
            .alias("_first_block"),
            F.when(carved, idiv(x, 8)).alias("_block"),
            F.when(carved, F.pmod(x, F.lit(8))).alias("_pos"),
        )
        # the rank among the slot's would-be single accounts: those of its earlier blocks and of
        # this block's earlier positions (slots of whole blocks; one draw per position, 3-7 only)
        block, own = F.col("_block"), F.col("_pos")

        def in_block(acc: Column, b: Column) -> Column:
            first = (b * lay.stride + lay.offset) * 8
            earlier = [((b < block) | (own > i)) & (d.uniform("ring", first + i) >= RING_RATE) for i in range(3, 8)]
            return acc + sum(e.cast("int") for e in earlier)

        rank = F.aggregate(F.sequence(F.col("_first_block"), block), F.lit(0), in_block)
        positioned = located.select(
            *df.columns,
            "_kind",
            "_group",
            F.when(F.col("_kind").isNotNull() & single_candidate(d, a), rank).alias("_rank"),
        )
        size = F.lit(0)
        for r in lay.regions:
            drawn = d.below(f"{r.kind}_size", r.size[1] - r.size[0] + 1, F.col("_group")) + r.size[0]
            size = F.when(F.col("_kind") == r.kind, drawn).otherwise(size)
        member = F.col("_rank") < size
        return positioned.select(
            *df.columns,
            F.when(member, F.col("_kind")).alias("carve_kind"),
            F.when(member, F.col("_group")).alias("carve_group"),
            F.when(member, F.col("_rank")).alias("carve_rank"),
            F.when(member, size).alias("carve_size"),
        )

    return transform


def tactics(d: Draw, ring: Column) -> Column:
    """The ring's tactics (array, in STEALTH_TACTICS order): 2-4 per ring. Two neighbours in a
    rotation (ring r starts at 2r + a seeded offset, so any three rings hold all five) plus
    seeded extras; catchall_domain and pattern_local exclude each other (the later one is dropped)."""
    n = len(STEALTH_TACTICS)
    lo, hi = STEALTH_TACTICS_PER_RING
    start = F.pmod(d.below("stealth_rotation", n, F.lit(0)) + ring * 2, F.lit(n))
    count = d.below("stealth_tactic_count", hi - lo + 1, ring) + lo
    must = [(start == i) | (F.pmod(start + 1, F.lit(n)) == i) for i in range(n)]
    prio = [d.uniform("stealth_tactic", ring, F.lit(i)) for i in range(n)]
    chosen = []
    for i in range(n):
        before = sum(
            ((~must[j]) & (prio[j] < prio[i])).cast("int") for j in range(n) if j != i
        )  # extras drawn before this one
        chosen.append(must[i] | (before < count - lo))
    ci, pi = STEALTH_TACTICS.index("catchall_domain"), STEALTH_TACTICS.index("pattern_local")
    both = chosen[ci] & chosen[pi]
    drop_c = both & (must[pi] | (~must[ci] & (prio[ci] > prio[pi])))
    drop_p = both & ~drop_c
    final = [c & ~drop_c if i == ci else c & ~drop_p if i == pi else c for i, c in enumerate(chosen)]
    # (concatenated, not compacted: a projection holding a lambda is not compiled)
    none = F.array().cast("array<string>")
    return F.concat(
        *[F.when(f, F.array(F.lit(t))).otherwise(none) for f, t in zip(final, STEALTH_TACTICS, strict=True)]
    )


def has(tactic: str) -> Column:
    return F.coalesce(F.array_contains(F.col("stealth_tactics"), tactic), F.lit(False))


def _pick(values: list, idx: Column) -> Column:
    # (under ANSI, element_at of a literal array counts as never null, even for a null index)
    return F.when(idx.isNotNull(), F.element_at(F.array(*[F.lit(v) for v in values]), (idx + 1).cast("int")))


def name_columns(d: Draw) -> tuple[Column, Column]:
    """(first, last) overrides: distinct names per rank for catchall and pattern rings and company
    staff; one last name per family; null otherwise (the genuine draw stays)."""
    kind, g, rank = F.col("carve_kind"), F.col("carve_group"), F.col("carve_rank")
    # pattern rings: (name, digits) distinct across all rings (v = ring * 32 + rank < 576 * 10^digits)
    v = g * RING_STRIDE + rank
    digits = _pick([dd for _, dd in PATTERN_TEMPLATES], d.below("stealth_template", len(PATTERN_TEMPLATES), g))
    q = idiv(v, F.pow(F.lit(10), digits).cast("long"))
    pattern_idx = F.pmod(q + v * NAME_STEP, F.lit(NAMES))
    per_rank_idx = F.pmod(d.below("names", NAMES, kind, g) + rank * NAME_STEP, F.lit(NAMES))
    idx = F.when(
        kind == "stealth", F.when(has("pattern_local"), pattern_idx).when(has("catchall_domain"), per_rank_idx)
    ).when(kind == "company", per_rank_idx)
    first = _pick(FIRST, F.pmod(idx, F.lit(len(FIRST))))
    last = F.when(idx.isNotNull(), _pick(LAST, idiv(idx, len(FIRST)))).when(
        kind == "family", d.pick("family_last", LAST, g)
    )
    return first, last


def fold(name: Column) -> Column:
    """A name as an email's local part writes it: ascii letters, lower case."""
    return F.lower(F.regexp_replace(F.translate(name, *ACCENTS), r"[^A-Za-z]", ""))


def email_column(d: Draw) -> Column:
    """The email (clean, lower case) of catchall and pattern rings and company staff; else null."""
    kind, g, rank, a = F.col("carve_kind"), F.col("carve_group"), F.col("carve_rank"), F.col("acct")
    first, last = fold(F.col("first_name")), fold(F.col("last_name"))
    base36 = lambda c: F.lower(F.conv(c.cast("string"), 10, 36))  # noqa: E731
    ring_domain = F.concat(
        F.lower(F.hex(d.hash("stealth_domain", g))).substr(1, 4),
        base36(g),
        F.lit("-"),
        d.pick("stealth_domain_word", CATCHALL_WORDS, g),
        F.lit(".com"),
    )
    catchall = F.concat(first, F.lit("."), last, F.lpad(d.below("stealth_dd", 100, a).cast("string"), 2, "0"))
    template = d.below("stealth_template", len(PATTERN_TEMPLATES), g)
    v = g * RING_STRIDE + rank
    n_digits = _pick([dd for _, dd in PATTERN_TEMPLATES], template)
    # v -> digits is a bijection of v mod 10^digits (7919 is coprime with 10)
    digits = F.lpad(F.pmod(v * 7919 + 3, F.pow(F.lit(10), n_digits).cast("long")).cast("string"), n_digits, "0")
    fields = {"{first}": first, "{last}": last}
    shapes = []
    for text, _ in PATTERN_TEMPLATES:
        parts = [fields.get(p, F.lit(p)) for p in _split_template(text)]
        shapes.append(F.concat(*parts, digits))
    pattern = shapes[-1]
    for i in range(len(shapes) - 2, -1, -1):
        pattern = F.when(template == i, shapes[i]).otherwise(pattern)
    freemail = d.pick("stealth_provider", PROVIDERS[1:], a)  # not gmail: its canonical form drops dots
    company_domain = F.concat(
        d.pick("company_word", COMPANY_WORDS, g),
        F.lit("-"),
        d.pick("company_suffix", COMPANY_SUFFIXES, g),
        base36(g),
        F.lit(".com"),
    )
    return F.when(
        kind == "stealth",
        F.when(has("catchall_domain"), F.concat(catchall, F.lit("@"), ring_domain)).when(
            has("pattern_local"), F.concat(pattern, F.lit("@"), freemail)
        ),
    ).when(kind == "company", F.concat(first, F.lit("."), last, F.lit("@"), company_domain))


def _split_template(text: str) -> list[str]:
    out, rest = [], text
    while rest:
        if rest.startswith("{"):
            end = rest.index("}") + 1
            out.append(rest[:end])
            rest = rest[end:]
        else:
            nxt = rest.find("{")
            out.append(rest if nxt < 0 else rest[:nxt])
            rest = "" if nxt < 0 else rest[nxt:]
    return out


def phone_of(p: Column) -> Column:
    """`mixed` of person number `p` (see PHONE_*)."""
    return F.pmod(p * PHONE_MUL + PHONE_ADD, F.lit(PHONE_SPACE))


def person_of(mixed: Column) -> Column:
    """The person number whose phone is `mixed`."""
    return F.pmod(F.pmod(mixed - PHONE_ADD, F.lit(PHONE_SPACE)) * PHONE_INV, F.lit(PHONE_SPACE))


def _e164(mixed: Column) -> Column:
    area = _pick(AREAS, F.pmod(mixed, F.lit(len(AREAS))))
    local = idiv(mixed, len(AREAS))
    exchange = (idiv(local, 10000) + 200).cast("string")
    line = F.lpad(F.pmod(local, F.lit(10000)).cast("string"), 4, "0")
    return F.concat(F.lit("+1"), area, exchange, line)


def stealth_phones(d: Draw, lay: Layout):
    """Adds `_o_e164`: the E.164 number of a stealth account (null for anyone else); see the
    module's doc."""
    n = lay.registrants
    rings = max(1, lay.rings)
    g, rank, size = F.col("carve_group"), F.col("carve_rank"), F.col("carve_size")
    # Free person numbers n + t: their area slot is (base + t * PHONE_MUL) mod 20, so of every 20
    # consecutive t, these offsets land in US area codes.
    base = (n * PHONE_MUL + PHONE_ADD) % len(AREAS)
    us_t = [t for t in range(len(AREAS)) if (base + t * PHONE_MUL) % len(AREAS) in US_AREA_SLOTS]
    members = rings * RING_STRIDE
    scramble = next(k for k in (7919, 7927, 7933, 7937) if math.gcd(k, members) == 1)
    member = F.pmod((g * RING_STRIDE + rank) * scramble, F.lit(members))  # a permutation: no runs
    t = idiv(member, len(us_t)) * len(AREAS) + _pick(us_t, F.pmod(member, F.lit(len(us_t))))
    own = _e164(phone_of(t + n))
    reserved = n + math.ceil(members / len(us_t)) * len(AREAS)
    # number_block: base + rank * step in one hundred-block whose every number is a person >= reserved;
    # ring g tries hundred-blocks perm(j * rings + g), j = 0, 1, ... (no two rings try the same one).
    free_share = len(US_AREA_SLOTS) / len(AREAS) * (1 - min(0.99, reserved / PHONE_SPACE)) ** STEALTH_RING_SIZE[1]
    wanted = math.ceil(math.log(1e-9) / math.log(1 - free_share)) if free_share < 1 else 1
    tries = max(1, min(BLOCK_TRIES, HUNDRED_BLOCKS // rings, max(8, wanted)))
    hundreds = HUNDRED_BLOCKS // len(AREAS)
    shift = (d.seed * 2_654_435_761) % HUNDRED_BLOCKS
    person_step = len(AREAS) * PHONE_INV % PHONE_SPACE  # the next number in a block: this many persons on

    def mixed(j: Column, i: Column) -> Column:
        block = F.pmod((j * rings + g) * 7919 + shift, F.lit(HUNDRED_BLOCKS))
        slot, hundred = idiv(block, hundreds), F.pmod(block, F.lit(hundreds))
        return (hundred * 100 + F.col("_nb_first") + i * F.col("_nb_step")) * len(AREAS) + slot

    def free(j: Column) -> Column:
        m = mixed(j, F.lit(0))
        p0, p_step = person_of(m), F.col("_nb_step").cast("long") * person_step
        return F.pmod(m, F.lit(len(AREAS))).isin(*US_AREA_SLOTS) & F.forall(
            F.sequence(F.lit(0), size - 1), lambda i: F.pmod(p0 + i * p_step, F.lit(PHONE_SPACE)) >= reserved
        )

    found = F.aggregate(
        F.sequence(F.lit(0), F.lit(tries - 1)),
        F.lit(-1),
        lambda acc, j: F.when(acc >= 0, acc).when(free(j), j).otherwise(F.lit(-1)),
    )
    block = _e164(mixed(F.greatest(F.col("_nb_found"), F.lit(0)), rank))
    stealth = F.col("carve_kind") == "stealth"
    step = d.below("stealth_step", 3, g) + 1

    def transform(df: DataFrame) -> DataFrame:
        # one projection per step: `_e164` reads its number four times, the search must run once
        helpers = df.select(
            "*",
            F.when(stealth, step).alias("_nb_step"),
            F.when(stealth, d.below("stealth_block_offset", 100 - (size - 1) * step, g)).alias("_nb_first"),
        )
        helpers = helpers.select("*", F.when(stealth & has("number_block"), found).alias("_nb_found"))
        phone = F.when(stealth, F.when(has("number_block"), block).otherwise(own))
        return helpers.select(*df.columns, phone.alias("_o_e164"))

    return transform


def ip_column(d: Draw) -> Column:
    """The IPv4 address of proxy24 rings, company staff, campus students and families; else null."""
    kind, g, rank, a = F.col("carve_kind"), F.col("carve_group"), F.col("carve_rank"), F.col("acct")
    size = F.col("carve_size")

    def net(name: str, *keys: Column) -> Column:  # a public-looking /24 prefix
        return F.concat_ws(
            ".",
            (d.below(f"{name}1", 112, *keys) + 11).cast("string"),
            (d.below(f"{name}2", 254, *keys) + 1).cast("string"),
            (d.below(f"{name}3", 254, *keys) + 1).cast("string"),
        )

    def host(octet: Column) -> Column:
        return (F.pmod(octet, F.lit(254)) + 1).cast("string")

    # proxy24: some rings over two /24s, each holding at least 4 members
    split = F.when(d.uniform("stealth_split", g) < 0.3, d.below("stealth_split_at", size - 7, g) + 4)
    subnet = F.coalesce((rank >= split).cast("int"), F.lit(0))
    proxy = F.concat_ws(".", net("stealth_net", g, subnet), host(d.below("stealth_host", 254, g) + rank * 37))
    office = F.concat_ws(".", net("company_net", g), host(d.below("company_host", 254, g) + rank * 37))
    nat = d.uniform("campus_nat", a) < 0.15  # some students behind one of three shared addresses
    campus_host = F.when(nat, host(d.below("campus_nat_host", 254, g) + d.below("campus_nat_pick", 3, a))).otherwise(
        host(d.below("campus_host", 254, g) + rank * 37)
    )
    campus = F.concat_ws(".", net("campus_net", g), campus_host)
    home = F.concat_ws(".", net("family_net", g), host(d.below("family_host", 254, g)))
    return (
        F.when((kind == "stealth") & has("proxy24"), proxy)
        .when(kind == "company", office)
        .when(kind == "campus", campus)
        .when(kind == "family", home)
    )


def postal_column(d: Draw) -> Column:
    """One postal code per drop_postal ring, company, campus and family; else null."""
    kind, g = F.col("carve_kind"), F.col("carve_group")
    zip_of = lambda name: F.lpad(d.below(name, 99999, g).cast("string"), 5, "0")  # noqa: E731
    return (
        F.when((kind == "stealth") & has("drop_postal"), zip_of("stealth_zip"))
        .when(kind == "company", zip_of("company_zip"))
        .when(kind == "campus", zip_of("campus_zip"))
        .when(kind == "family", zip_of("family_zip"))
    )


def preferences_column(d: Draw, market_ids: list[str], capacities: list[int]) -> Column:
    """A stealth ring's 1-2 biggest markets (by capacity); null for anyone else."""
    biggest = [m for _, m in sorted(zip(capacities, market_ids, strict=True), key=lambda cm: -cm[0])][:2]
    top = F.array(*[F.lit(m) for m in biggest])
    count = F.least(d.below("stealth_markets", 2, F.col("carve_group")) + 1, F.lit(len(biggest)))
    return F.when(F.col("carve_kind") == "stealth", F.slice(top, 1, count))
