"""A corpus of messy typed phone numbers, for holding the JVM phone parser to the Python port.

Every format `synth` writes (the eight North American layouts, international numbers typed
nationally, with `+cc ` or in E.164), plus what fans really type: `00` and `011` dialling prefixes,
`+` followed by spaces or dots, extensions, vanity letters, Unicode digits and spaces, garbage,
blanks, very long input, and default regions that are lower case, unknown or missing.
Deterministic for a seed; plain Python (a few hundred thousand pairs a second).
"""

from __future__ import annotations

import random

from campaign_pipeline.synth.spec import AREAS, CA_AREAS, INTL

REGIONS = ["US", "CA", "GB", "DE", "FR", "MX", "AU", "IN", "BR", "JP", "IE", "NL", "us", "gb", "ZZ", "XX", "", None]
# Country calling code, national significant number lengths and a plausible leading digit.
ABROAD = [
    ("44", "7", 10), ("44", "20", 10), ("49", "15", 11), ("49", "30", 10), ("33", "6", 9), ("33", "1", 9),
    ("52", "55", 10), ("61", "4", 9), ("91", "9", 10), ("55", "11", 11), ("81", "90", 10), ("353", "8", 9),
    ("31", "6", 9), ("1", "212", 10), ("1", "800", 10), ("7", "9", 10), ("86", "13", 11), ("971", "5", 9),
]  # fmt: skip
SPACES = [" ", "  ", "\t", "\u00a0", "\u2007", "\u3000", ""]
SEPARATORS = [" ", "-", ".", "", "/", " - "]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _nanp(rng: random.Random) -> str:
    area = rng.choice(AREAS + ["800", "555", "011", "123"])
    a, e, line = area, str(rng.randint(100, 999)), _digits(rng, 4)
    fmt = rng.randrange(12)
    return [
        f"({a}) {e}-{line}", f"{a}-{e}-{line}", f"{a}.{e}.{line}", f"+1 {a} {e} {line}", f"1-{a}-{e}-{line}",
        f"{a}{e}{line}", f"+1{a}{e}{line}", f" {a} {e} {line} ", f"1 ({a}) {e}-{line} x{rng.randint(1, 9999)}",
        f"{a}-{e}-{line} ext. {rng.randint(1, 999)}", f"{a}{e}{line[:2]}", f"{a}{e}{line}{rng.randint(0, 99)}",
    ][fmt]  # fmt: skip


def _synth_intl(rng: random.Random) -> tuple[str, str]:
    country, prefix, digits, trunk = rng.choice(INTL)
    e164 = prefix + _digits(rng, digits)
    national = e164[3:]
    return rng.choice([trunk + national, e164[:3] + " " + national, e164]), country


def _abroad(rng: random.Random) -> str:
    cc, lead, length = rng.choice(ABROAD)
    nsn = lead + _digits(rng, max(0, length - len(lead) + rng.choice([0, 0, 0, -1, 1])))
    sep = rng.choice(SEPARATORS)
    body = sep.join(nsn[i : i + 3] for i in range(0, len(nsn), 3))
    prefix = rng.choice(["+", "00", "011", "+ ", "+.", "00 ", "011-", "(+", "+(", "0", ""])
    text = f"{prefix}{cc}{rng.choice(SEPARATORS)}{body}"
    return text + (")" if prefix.endswith("(") else "")


def _mangle(rng: random.Random, text: str) -> str:
    kind = rng.randrange(10)
    if kind == 0:  # Unicode digits: Arabic-Indic, fullwidth, Devanagari
        base = rng.choice([0x0660, 0xFF10, 0x0966])
        return "".join(chr(base + int(c)) if c.isdigit() and rng.random() < 0.7 else c for c in text)
    if kind == 1:  # vanity letters
        return "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") if c.isdigit() and rng.random() < 0.3 else c for c in text
        )
    if kind == 2:
        return rng.choice(SPACES) + text + rng.choice(SPACES)
    if kind == 3:
        return text.replace(" ", rng.choice(SPACES))
    if kind == 4:
        return text + rng.choice([" ext 12", " x1234", ";ext=55", " extension 7", "#22", " (mobile)", " / home"])
    if kind == 5:
        return text[: rng.randrange(len(text) + 1)]
    return text


def _garbage(rng: random.Random) -> str | None:
    return rng.choice(
        [None, "", " ", "\u00a0", "\t\n", "n/a", "none", "12345", "555-01", "000-000-0000", "+", "00", "011", "+ ",
         "tel:+1-212-555-0199", "+1 (212) 555-0199;phone-context=+1", "1" * 300, "+" + "9" * 40, "@@@", "0" * 10,
         "+1\u200b212\u200b555\u200b0199", "+-+1-2-1-2", "()", "ph: 212 555 0199", "212 555 0199 or 212 555 0198"]
    )  # fmt: skip


def messy_phones(n: int, seed: int = 7) -> list[tuple[str | None, str | None]]:
    """`n` pairs (typed phone, default region) the way fans and registration forms produce them."""
    rng = random.Random(seed)
    out: list[tuple[str | None, str | None]] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.40:
            text, region = _nanp(rng), rng.choice(["US", "US", "CA", "us", None, "GB"])
            if text[:3] in CA_AREAS and region == "US":
                region = "CA"
        elif kind < 0.55:
            text, region = _synth_intl(rng)
            region = rng.choice([region, region, "US", None])
        elif kind < 0.85:
            text, region = _abroad(rng), rng.choice(REGIONS)
        else:
            text, region = _garbage(rng), rng.choice(REGIONS)
        if text is not None and rng.random() < 0.35:
            text = _mangle(rng, text)
        out.append((text, region))
    return out
