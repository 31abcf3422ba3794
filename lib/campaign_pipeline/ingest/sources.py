"""The landing contract: which files a campaign may deliver and what each holds.

A landing file's kind comes from its name prefix (`registrations_2027-03.csv` is a registrations
file) and its format from its extension (`.csv`, `.tsv`, `.json`/`.jsonl`/`.ndjson`, `.parquet`,
`.avro`, `.txt` for one-entry-per-line lists; text formats may be gzip-compressed, `.csv.gz`).
"""

from __future__ import annotations

from dataclasses import dataclass

# Field types understood by the parser (see parse.py).
STRING, ID, UPPER, BOOL, LONG, SCORE, RANK, COUNT, TIMESTAMP, MARKETS = (
    "string",
    "id",
    "upper",
    "bool",
    "long",
    "score",
    "rank",
    "count",
    "timestamp",
    "markets",
)


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = STRING
    required: bool = False


@dataclass(frozen=True)
class FileKind:
    name: str
    prefixes: tuple[str, ...]
    table: str
    fields: tuple[Field, ...] = ()
    carries_extra: bool = False  # unknown columns kept in an `extra` map (scored files)
    entry_list: bool = False  # one entry per line, no header (block/allow lists)
    formats: tuple[str, ...] = ("csv", "tsv", "json", "parquet", "avro")

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.fields if f.required]

    @property
    def has_campaign_column(self) -> bool:
        return "campaign_id" in self.field_names


REGISTRATIONS = FileKind(
    "registrations",
    ("registrations",),
    "registrations",
    (
        Field("campaign_id", ID, True),
        Field("global_user_id", ID, True),
        Field("member_id"),
        Field("email"),
        Field("phone"),
        Field("phone_confirmed", BOOL),
        Field("first_name"),
        Field("last_name"),
        Field("locale"),
        Field("country", UPPER),
        Field("postal_code"),
        Field("market_preferences", MARKETS, True),
        Field("registered_at", TIMESTAMP, True),
        Field("ip_address"),
        Field("device_id"),
        Field("payment_fingerprint"),
        Field("do_not_text", BOOL),
    ),
)

FAN_ACTIVITY = FileKind(
    "fan_activity",
    ("fan_activity",),
    "fan_activity",
    (
        Field("global_user_id", ID, True),
        Field("account_created_at", TIMESTAMP),
        Field("tickets_purchased_24m", COUNT),
        Field("events_attended_24m", COUNT),
        Field("artist_tickets_purchased", COUNT),
        Field("artist_streams_90d", COUNT),
        Field("resale_listings_24m", COUNT),
        Field("chargebacks_24m", COUNT),
    ),
)

SCORED = FileKind(
    "scored",
    ("scored",),
    "external_scores",
    (Field("campaign_id", ID, True), Field("global_user_id", ID, True), Field("score", SCORE, True)),
    carries_extra=True,
)

FANLIST_RANKS = FileKind(
    "fanlist_ranks",
    ("fanlist_ranks",),
    "fanlist_ranks",
    (Field("global_user_id", ID, True), Field("rank", RANK, True)),
)

CODE_POOL = FileKind(
    "code_pool",
    ("code_pool",),
    "code_pool",
    (Field("code", ID, True), Field("market_id", ID)),
)

BLOCKED_EMAILS = FileKind(
    "blocked_emails", ("blocked_emails",), "screening_lists", entry_list=True, formats=("txt", "csv")
)
BLOCKED_DOMAINS = FileKind(
    "blocked_domains", ("blocked_domains",), "screening_lists", entry_list=True, formats=("txt", "csv")
)
ALLOWED_PATTERNS = FileKind(
    "allowed_patterns", ("allowed_patterns",), "screening_lists", entry_list=True, formats=("txt", "csv")
)

KINDS: tuple[FileKind, ...] = (
    REGISTRATIONS,
    FAN_ACTIVITY,
    SCORED,
    FANLIST_RANKS,
    CODE_POOL,
    BLOCKED_EMAILS,
    BLOCKED_DOMAINS,
    ALLOWED_PATTERNS,
)

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".avro": "avro",
    ".txt": "txt",
}
TEXT_FORMATS = {"csv", "tsv", "json", "txt"}


def kind_of(file_name: str) -> FileKind | None:
    """The file kind named by the file's prefix, or None for a file that is not part of the contract."""
    lowered = file_name.lower()
    for kind in KINDS:
        if any(lowered.startswith(p) for p in kind.prefixes):
            return kind
    return None


def format_of(file_name: str) -> str | None:
    """`csv`, `tsv`, `json`, `parquet`, `avro` or `txt` from the extension (`.gz` allowed on text)."""
    lowered = file_name.lower()
    if lowered.endswith(".gz"):
        lowered = lowered[:-3]
        compressed = True
    else:
        compressed = False
    for ext, fmt in EXTENSIONS.items():
        if lowered.endswith(ext):
            if compressed and fmt not in TEXT_FORMATS:
                return None
            return fmt
    return None
