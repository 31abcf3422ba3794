"""What a synthetic campaign holds, declared as data: the population and every planted case.

Each planted case names the accounts it applies to, its rate, the seeded draw that decides it, and
the screening tags it must produce; the ground truth carries those expected tags
(`expected_tags`), so quality reports compare the pipeline with the truth instead of re-deriving
the generator's layout. Cases in one `group` are exclusive: the first that applies wins. How the
columns are generated is in `synth.accounts`; how files are written is in `synth.writers`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from campaign_pipeline.config import Campaign

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
    registrations_format: str = "csv"  # csv, tsv, json (lines), parquet, avro; mixed: half CSV, half JSON lines
    malformed_rate: float = 0.0005
    capacity_ratio: float = 0.35  # total codes / registrants
    stealth_rings: int | None = None  # None: max(1, registrants // 1000); 0: none
    decoys: bool = True  # honest look-alikes of stealth rings (companies, campuses, families, new fans)

    def stealth_ring_count(self) -> int:
        if self.stealth_rings is None:
            return max(1, self.registrants // STEALTH_REGISTRANTS_PER_RING)
        return max(0, self.stealth_rings)


@dataclass(frozen=True)
class SynthOutput:
    landing: str
    truth: str
    campaign_yaml: str
    campaign: Campaign


@dataclass(frozen=True)
class PlantedCase:
    """A planted trait: `flag` (a truth column) is set on accounts of `population` with probability
    `rate` (a number, or a function of the campaign size), drawn from `draw` keyed by the person or
    the account; `tags` are the screening tags an account carrying the flag must get."""

    flag: str
    population: str  # "single" (a person with one account) | "ring" | "any"
    rate: float | Callable[[int], float]
    draw: str
    key: str = "person"  # "person" | "account"
    group: str = ""  # exclusive group: the first case of a group that applies wins
    tags: tuple[str, ...] = ()
    description: str = ""

    def rate_for(self, registrants: int) -> float:
        return self.rate(registrants) if callable(self.rate) else self.rate


def _call_centre_rate(n: int) -> float:
    # Enough fans behind one call-centre number to exceed max_shared (50) at any campaign size.
    return min(0.05, max(0.002, 130 / max(1, n)))


# Who the accounts are: blocks of 8 account numbers; slots 1-2 may be a person's extra accounts,
# slots 3-7 may be scalper-ring accounts (rings of about RING_MEMBERS accounts sharing a card).
DUPLICATE_RATE = 0.24  # slot 1: a second account of the person in slot 0
SECOND_DUPLICATE_RATE = 0.35  # slot 2: a third account, when slot 1 is a duplicate
RING_RATE = 0.04  # slots 3-7: a ring account
RING_MEMBERS = 14
# duplicates: exactly one per person stays
ROLE_TAGS = {"ring": ("FRAUD_RING",), "duplicate": (), "genuine": (), "stealth": ("STEALTH_RING",)}

# Stealth rings: scalper operations sharing no exact identifier (own email, phone, device, card and
# IP per account), registering across the whole window, resale under the scalper threshold; each
# ring uses 2-4 of these tactics, which screening can only link as weak signals.
STEALTH_TACTICS = (
    "proxy24",  # every account its own IPv4 address, all in the ring's /24 (some rings: two /24s)
    "catchall_domain",  # first.last<dd>@<the ring's own domain>.com
    "number_block",  # consecutive US mobile numbers: base + rank * step (step 1-3), within 100
    "pattern_local",  # a freemail local part from the ring's template (never with catchall_domain)
    "drop_postal",  # one postal code for the whole ring
)
STEALTH_REGISTRANTS_PER_RING = 1000  # the default number of rings: one per this many registrants
STEALTH_RING_SIZE = (8, 30)
STEALTH_TACTICS_PER_RING = (2, 4)
STEALTH_MAX_RESALE = 9  # resale listings stay below the scalper threshold (10)
# pattern_local templates: (the local part's fields, digits); the digits differ per account.
PATTERN_TEMPLATES = (
    ("{first}_{last}_", 4),
    ("{first}.{last}.", 3),
    ("{first}{last}_", 3),
    ("{last}.{first}", 4),
)


@dataclass(frozen=True)
class DecoyKind:
    """Honest fans sharing single weak signals, who must stay eligible: `kind` is the truth's
    `decoy`; groups of `size` accounts (drawn per group), each group owning `slot` account numbers."""

    kind: str
    size: tuple[int, int]
    slot: int
    description: str = ""


DECOY_RATE = 0.005  # share of registrants per decoy kind (at least one group of each)
DECOYS = (
    DecoyKind("family", (2, 5), 16, "one exact IP, postal code and last name; own emails and phones"),
    DecoyKind("new_fan", (5, 5), 8, "fresh account, no event, nothing shared (every single account of its slot)"),
    DecoyKind("company", (15, 60), 128, "first.last@<company>.com, one office /24, one postal code, old accounts"),
    DecoyKind("campus", (100, 300), 640, "one /24 (some exact IPs shared), one postal code, ~30% new accounts"),
)

PLANTED: tuple[PlantedCase, ...] = (
    # phones (single-account people only, so duplicates stay linked by their phone)
    PlantedCase("no_phone", "single", 0.03, "nophone", group="phone", description="no phone given"),
    PlantedCase("invalid_phone", "single", 0.005, "badphone", group="phone", tags=("INVALID_PHONE",),
                description="garbage typed as a phone"),
    PlantedCase("shared_phone", "single", _call_centre_rate, "callcentre", group="phone", tags=("SHARED_IDENTIFIER",),
                description="one call-centre number shared by many unrelated fans"),
    PlantedCase("intl", "single", 0.025, "intl", group="phone", tags=("INTL_PHONE",),
                description="a foreign mobile, typed nationally or with +"),
    # emails
    PlantedCase("blocked_email", "single", 0.001, "blockedmail", group="email", tags=("BLOCKED_EMAIL",),
                description="an address on the campaign's block list"),
    PlantedCase("blocked_domain", "single", 0.002, "blockeddom", group="email", tags=("BLOCKED_DOMAIN",),
                description="an address at the blocked resale domain"),
    PlantedCase("allowlisted", "single", 0.0008, "allowed", group="email", tags=("ALLOWLISTED",),
                description="partner staff under the blocked domain, lifted by the allow list"),
    PlantedCase("disposable", "single", 0.004, "disposable", group="email", tags=("BLOCKED_DOMAIN",),
                description="a disposable-mail domain"),
    PlantedCase("disposable", "ring", 0.3, "ringdisp", key="account", group="email", tags=("BLOCKED_DOMAIN",),
                description="ring accounts on disposable mail"),
    # contact preferences
    PlantedCase("do_not_text", "any", 0.05, "dnt", key="account", description="fans who opted out of SMS"),
)  # fmt: skip

# Malformed registration rows appended to the files: (kind, the quarantine reason ingest must give).
MALFORMED = [
    ("bad_timestamp", "registered_at: expected an ISO-8601 timestamp with zone"),
    ("no_zone", "registered_at: expected an ISO-8601 timestamp with zone"),
    ("missing_id", "missing required field global_user_id"),
    ("no_market", "no market in market_preferences"),
    ("bad_boolean", "phone_confirmed: expected true/false/1/0/yes/no"),
    ("field_count", "wrong field count"),
]
