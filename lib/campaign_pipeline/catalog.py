"""The table catalog: every Delta table of the warehouse as data — its schema, partitioning,
merge keys, CHECK constraints and properties.

A table's shape is decided here and nowhere else; `warehouse.Warehouse` creates, checks and
migrates tables from it, so writing a DataFrame whose columns differ from the catalog, or finding
an existing table whose columns differ, is a `SchemaError` that names the column.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

from campaign_pipeline import channels
from campaign_pipeline.errors import SchemaError
from campaign_pipeline.fan_ranges import FAN_ID

S, L, INT, D, B, TS = T.StringType(), T.LongType(), T.IntegerType(), T.DoubleType(), T.BooleanType(), T.TimestampType()


def _f(name: str, dtype: T.DataType, nullable: bool = True) -> T.StructField:
    return T.StructField(name, dtype, nullable)


def _key(name: str, dtype: T.DataType = S) -> T.StructField:
    return T.StructField(name, dtype, False)


# Columns every ingested table carries: where the row came from.
LINEAGE = [
    _key("source_file"),
    _key("source_line", L),
    _key("source_checksum"),
    _key("ingested_at", TS),
    _key("run_id"),
]


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ("campaign_id",)
    merge_keys: tuple[str, ...] = ()
    description: str = ""
    checks: tuple[tuple[str, str], ...] = ()  # Delta CHECK constraints: (name, SQL expression)
    properties: tuple[tuple[str, str], ...] = ()  # Delta table properties, e.g. the change data feed

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


def _spec(name, fields, partition_by=("campaign_id",), merge_keys=(), description="", checks=(), properties=()):
    skipping = _skipping_columns([f.name for f in fields], partition_by, merge_keys)
    if skipping:
        properties = (*properties, ("delta.dataSkippingStatsColumns", ",".join(skipping)))
    return TableSpec(
        name, T.StructType(fields), tuple(partition_by), tuple(merge_keys), description, tuple(checks),
        tuple(properties),
    )  # fmt: skip


def _skipping_columns(names: list[str], partition_by, merge_keys) -> tuple[str, ...]:
    """The columns Delta keeps per-file min/max statistics of: those rows are picked by (the fan id,
    which one fan's lookups and `maintain`'s Z-order use, and the merge keys), less the partition
    columns (pruned by their folders). Delta's default, the first 32 columns, computes statistics of
    every name, email and array on each write (a sixth of writing 2M registrants) that nothing reads."""
    wanted = ([FAN_ID] if FAN_ID in names else []) + list(merge_keys)
    return tuple(dict.fromkeys(c for c in wanted if c not in partition_by))


# Columns whose values are (nearly) all distinct: ids, contacts, codes, personalised texts, times.
# Parquet's dictionary encoding hashes each such value into a row group's dictionary, only to find
# at its end that the dictionary saves nothing and write every value again plainly; `session.py`
# turns it off for these columns (2M registrants written in about half the time, 3 % more bytes).
UNIQUE_VALUED = (
    "global_user_id",
    "member_id",
    "email",
    "email_canonical",
    "phone",
    "phone_e164",
    "identity_cluster_id",
    "ip_address",
    "device_id",
    "payment_fingerprint",
    "registered_at",
    "source_line",
    "code",
    "message_id",
    "recipient",
    "mobile_number",
    "text",
    "link",
    "raw",
)


# The tables one fan's lookups read (explain). They are written range-partitioned on the fan id,
# so each file holds a narrow range of ids and Delta's per-file min/max statistics let a one-fan
# lookup skip the other files; `maintain` Z-orders them to keep it so after many small commits.
FAN_CLUSTERED = ("registrants", "scores", "selections", "standings", "code_assignments", "wave_messages")


CHANGE_FEED = (("delta.enableChangeDataFeed", "true"),)  # downstream readers follow the table incrementally


FILE_COUNTS = T.StructType(
    [
        _f("source_file", S),
        _f("kind", S),
        _f("format", S),
        _f("checksum", S),
        _f("action", S),
        _f("rows_read", L),
        _f("rows_ingested", L),
        _f("rows_quarantined", L),
    ]
)


def _channel_counts() -> list[T.StructField]:
    """One planned-messages count column per registered channel (`sms`, `email`, ...)."""
    return [_f(c, L) for c in channels.names()]


def _channel_known() -> tuple[str, str]:
    return ("channel_known", "channel IN (" + ", ".join(f"'{c}'" for c in channels.names()) + ")")


def _tables() -> dict[str, TableSpec]:
    return {t.name: t for t in _table_specs()}


def _table_specs() -> list[TableSpec]:  # the table list, rebuilt when a channel is registered
    return [
        # ---------------------------------------------------------------- ingested inputs
        _spec(
            "registrations",
            [
                _key("campaign_id"),
                _key("global_user_id"),
                _f("member_id", S),
                _f("email", S),
                _f("phone", S),
                _f("phone_confirmed", B),
                _f("first_name", S),
                _f("last_name", S),
                _f("locale", S),
                _f("country", S),
                _f("postal_code", S),
                _key("market_preferences", T.ArrayType(S, False)),
                _key("registered_at", TS),
                _f("ip_address", S),
                _f("device_id", S),
                _f("payment_fingerprint", S),
                _f("do_not_text", B),
                *LINEAGE,
            ],
            merge_keys=("campaign_id", "source_file", "source_line"),
            description="one row per ingested registration row",
        ),
        _spec(
            "fan_activity",
            [
                _key("campaign_id"),
                _key("global_user_id"),
                _f("account_created_at", TS),
                _f("tickets_purchased_24m", L),
                _f("events_attended_24m", L),
                _f("artist_tickets_purchased", L),
                _f("artist_streams_90d", L),
                _f("resale_listings_24m", L),
                _f("chargebacks_24m", L),
                *LINEAGE,
            ],
            merge_keys=("campaign_id", "source_file", "source_line"),
            description="one row per ingested fan activity row",
        ),
        _spec(
            "external_scores",
            [
                _key("campaign_id"),
                _key("global_user_id"),
                _key("score", D),
                _f("extra", T.MapType(S, S)),
                *LINEAGE,
            ],
            merge_keys=("campaign_id", "source_file", "source_line"),
            description="the data-science scored file; extra columns carried along in `extra`",
        ),
        _spec(
            "fanlist_ranks",
            [_key("campaign_id"), _key("global_user_id"), _key("rank", L), *LINEAGE],
            merge_keys=("campaign_id", "source_file", "source_line"),
        ),
        _spec(
            "code_pool",
            [_key("campaign_id"), _key("code"), _f("market_id", S), *LINEAGE],
            merge_keys=("campaign_id", "source_file", "source_line"),
        ),
        _spec(
            "screening_lists",
            [_key("campaign_id"), _key("list_name"), _key("entry"), *LINEAGE],
            merge_keys=("campaign_id", "source_file", "source_line"),
            description="blocked_emails / blocked_domains / allowed_patterns entries from landing",
        ),
        _spec(
            "landing_files",
            [
                _key("campaign_id"),
                _key("source_file"),
                _key("kind"),
                _key("format"),
                _key("checksum"),
                _f("size_bytes", L),
                _f("rows_read", L),
                _f("rows_ingested", L),
                _f("rows_quarantined", L),
                _key("run_id"),
                _key("ingested_at", TS),
            ],
            merge_keys=("campaign_id", "source_file"),
            description="manifest of ingested landing files: path + checksum make re-ingest a no-op",
        ),
        _spec(
            "quarantine",
            [
                _key("campaign_id"),
                _key("stage"),
                _key("source_file"),
                _f("line", L),
                _f("raw", S),
                _key("reason"),
                _key("run_id"),
                _f("source_checksum", S),
                _key("quarantined_at", TS),
            ],
            merge_keys=("campaign_id", "stage", "source_file", "line"),
            description="every rejected input row with the reason",
        ),
        # ---------------------------------------------------------------- stage outputs
        _spec(
            "registrants",
            [
                _key("campaign_id"),
                _key("global_user_id"),
                _f("member_id", S),
                _f("email", S),
                _f("email_canonical", S),
                _f("phone_e164", S),
                _f("phone_country", S),
                _f("phone_type", S),
                _f("phone_confirmed", B),
                _f("do_not_text", B),
                _f("first_name", S),
                _f("last_name", S),
                _f("locale", S),
                _f("country", S),
                _key("market_preferences", T.ArrayType(S, False)),
                _key("registered_at", TS),
                _key("identity_cluster_id"),
                _key("cluster_size", L),
                # null unless weakly linked (`screening.weak_links`): the weak-link cluster, its size,
                # and the signals of the account's links
                _f("weak_cluster_id", S),
                _f("weak_cluster_size", L),
                _f("weak_signals", T.ArrayType(S, False)),
                _key("tags", T.ArrayType(S, False)),
                _key("eligible", B),
                _key("ineligible_reasons", T.ArrayType(S, False)),
                _key("run_id"),
            ],
            merge_keys=("campaign_id", "global_user_id"),
            description="one screened registrant per (campaign, fan): normalised contact, cluster, tags, eligibility",
        ),
        _spec(
            "scores",
            [
                _key("campaign_id"),
                _key("global_user_id"),
                _key("eligible", B),
                _f("raw_score", D),
                _key("score_source"),
                _f("band", S),
                _f("band_score", D),
                _f("model_version", S),
                _f("top_features", T.ArrayType(T.StructType([_f("feature", S), _f("contribution", D)]))),
                _f("extra", T.MapType(S, S)),
                _key("run_id"),
            ],
            merge_keys=("campaign_id", "global_user_id"),
            description="one score per registrant: raw score, band, in-band lottery score, explanation",
        ),
        _spec(
            "selections",
            [
                _key("campaign_id"),
                _key("global_user_id"),
                _key("verdict"),
                _f("market_id", S),
                _f("preference_rank", INT),
                _f("market_rank", L),
                _f("waitlist_position", L),
                _f("band_score", D),
                _key("reasons", T.ArrayType(S, False)),
                _key("run_id"),
            ],
            merge_keys=("campaign_id", "global_user_id", "market_id"),
            description="one verdict per registrant (per won market when single_market is false)",
        ),
        _spec(
            "standings",
            [
                _key("campaign_id"),
                _key("global_user_id"),
                _key("market_id"),
                _key("preference_rank", INT),
                _key("market_rank", L),
                _key("candidates", L),
                _key("selected", L),
                _f("lowest_selected_band_score", D),
                _key("run_id"),
            ],
            merge_keys=("campaign_id", "global_user_id", "market_id"),
            description="per scored fan and market he listed: his rank among the candidates who listed it, "
            "their number, and the market's selected count and cut-off; written by select for explain",
        ),
        _spec(
            "code_assignments",
            [
                _key("campaign_id"),
                _key("market_id"),
                _key("global_user_id"),
                _f("member_id", S),
                _f("code", S),
                _key("code_type"),
                _f("wave_id", S),
                _f("valid_from", TS),
                _f("valid_until", TS),
                _key("assigned_at", TS),
                _key("run_id"),
            ],
            merge_keys=("campaign_id", "global_user_id", "market_id"),
            description="one code per selected (fan, market); rows are only ever inserted",
            checks=(
                ("code_type_known", "code_type IN ('pool', 'generated', 'tm')"),
                ("code_unless_tm", "(code_type = 'tm' AND code IS NULL) OR (code_type <> 'tm' AND code IS NOT NULL)"),
                ("validity_ordered", "valid_from IS NULL OR valid_until > valid_from"),
            ),
        ),
        _spec(
            "waves",
            [
                _key("campaign_id"),
                _key("wave_id"),
                _key("notify_at", TS),
                _key("status"),
                _f("attempts", INT),
                _f("total", L),
                *_channel_counts(),
                _f("sent", L),
                _f("failed", L),
                _f("skipped", L),
                _f("planned_at", TS),
                _key("run_id"),
                _f("counts", T.MapType(S, L)),  # per channel: "sms:sent", "email:failed", ...
                _f("sending_at", TS),  # when the latest notify run took the wave
                _f("finished_at", TS),  # when the wave's sending ended
                # The sending run (`run_id`) holds the wave until then; it renews as it sends.
                _f("lease_until", TS),
                # Set when the sender stopped because the gateway asked it to wait (Retry-After):
                # the next run resumes then, without spending one of the wave's attempts.
                _f("deferred_until", TS),
                # A plan_waves run re-planning this scheduled wave holds it until then: no notify
                # run claims it meanwhile (its messages are being rewritten).
                _f("planning_run", S),
                _f("planning_until", TS),
            ],
            # A wave's own partition: the lease of one wave (claims, renewals every few seconds)
            # is a commit that never conflicts with another wave's.
            partition_by=("campaign_id", "wave_id"),
            merge_keys=("campaign_id", "wave_id"),
            description="one row per configured wave: schedule, status, message counts",
        ),
        _spec(
            "wave_messages",
            [
                _key("campaign_id"),
                _key("wave_id"),
                _key("message_id"),
                _key("global_user_id"),
                _f("member_id", S),
                _key("market_id"),
                _key("channel"),
                _key("recipient"),
                _f("code", S),
                _key("code_type"),
                _f("locale", S),
                _f("subject", S),
                _key("text"),
                _f("link", S),
                _f("sms_segments", INT),
                _f("sms_encoding", S),
                _f("first_name", S),
                _f("last_name", S),
                _f("email", S),
                _f("mobile_number", S),
                _f("do_not_text", B),
                _key("notify_at", TS),
                _key("run_id"),
            ],
            partition_by=("campaign_id", "wave_id"),
            merge_keys=("campaign_id", "message_id"),
            description="one row per message to send: the notifier's input",
            properties=CHANGE_FEED,
            checks=(_channel_known(),),
        ),
        _spec(
            "notification_log",
            [
                _key("campaign_id"),
                _key("message_id"),
                _key("status"),
                _f("attempts", INT),
                _f("provider_id", S),
                _f("last_error", S),
                _f("sent_at", TS),
                _f("wave_id", S),
                _f("channel", S),
                _f("logged_at", TS),  # when the outcome was committed
                _f("run_id", S),
            ],
            merge_keys=("campaign_id", "message_id"),
            description="one row per message with an outcome (sent, failed, skipped)",
            properties=CHANGE_FEED,
        ),
        # ---------------------------------------------------------------- operations
        _spec(
            "archives",
            [
                _key("campaign_id"),
                _key("run_id"),  # the maintain run that holds (or held) the archive
                _key("state"),  # archiving | archived
                _key("started_at", TS),
                _f("lease_until", TS),  # the holder renews it after each table
                _f("finished_at", TS),
                _f("root", S),  # the archive root the rows went to
                _f("moved", T.MapType(S, L)),  # table → rows moved (copied, verified, deleted)
                _f("pending", S),  # `table#tag` of a delete being made: checked again if the run dies
            ],
            merge_keys=("campaign_id",),
            description="one row per campaign whose archive started: who moves it, how far it got; never archived",
        ),
        _spec(
            "pipeline_runs",
            [
                _key("run_id"),
                _key("campaign_id"),
                _key("stage"),
                _key("started_at", TS),
                _f("finished_at", TS),
                _key("status"),
                _f("seconds", D),
                _f("counts", T.MapType(S, L)),
                _f("files", T.ArrayType(FILE_COUNTS)),
                _f("error", S),
            ],
            merge_keys=("run_id", "stage"),
            description="a stage run: a running row at its start, its outcome (counts, per-file figures, error) at its end; read with runner.stage_runs",
        ),
        _spec(
            "dq_results",
            [
                _key("run_id"),
                _key("campaign_id"),
                _key("table"),
                _key("expectation"),
                _key("success", B),
                _f("observed", S),
                _f("severity", S),  # critical (fails the stage) or warning
                _f("result", S),  # great-expectations' result JSON (counts only), for Data Docs
                _f("checked_at", TS),
            ],
            description="one row per expectation checked: the stage run, severity, observed values",
        ),
        _spec(
            "reconciliation",
            [
                _key("campaign_id"),
                _key("run_id"),
                _key("checked_at", TS),
                _key("check"),
                _key("left_label"),
                _key("left_count", L),
                _key("right_label"),
                _key("right_count", L),
                _f("parts", T.MapType(S, L)),  # the right side's terms, e.g. selected / waitlisted / rejected:<reason>
                _key("balanced", B),
            ],
            description="counts carried from table to table, per campaign and report run; a break names both counts",
        ),
        _spec(
            "campaign_stats",
            [
                _key("campaign_id"),
                _key("run_id"),
                _key("computed_at", TS),
                _f("funnel", T.MapType(S, L)),
                _f("per_market", T.MapType(S, T.MapType(S, L))),
                _f("headline", T.MapType(S, L)),  # the report's headline figures, for "since the last report"
            ],
            description="one snapshot per report run: the funnel, per-market and headline figures, for charting a campaign",
        ),
    ]


CATALOG: dict[str, TableSpec] = _tables()


def _channels_changed() -> None:
    """A channel registered or removed: `waves` and `wave_messages` follow the registry."""
    CATALOG.update(_tables())


channels.on_change(_channels_changed)


# A registrant's key, and a (registrant, market) key: every stage joins on these.
FAN: list[str] = list(CATALOG["registrants"].merge_keys)
# The tables ingest lands landing-file lines in: each row names its file and line.
LANDED: tuple[str, ...] = tuple(n for n, t in CATALOG.items() if "source_line" in t.columns)
# The fan keys in the order to sort (window, sort-merge join) by: a sort compares an 8-byte prefix
# of its first key before whole rows, and the campaign id is the same in every row of a campaign.
FAN_SORT: list[str] = [FAN_ID, *[k for k in FAN if k != FAN_ID]]
FAN_MARKET: list[str] = list(CATALOG["code_assignments"].merge_keys)


def columns(name: str, without: tuple[str, ...] = ()) -> list[str]:
    """The catalog's columns of table `name`, in order, less `without`."""
    return [c for c in spec(name).columns if c not in without]


def spec(name: str) -> TableSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise SchemaError(f"unknown table {name!r}; known tables: {', '.join(sorted(CATALOG))}") from None
