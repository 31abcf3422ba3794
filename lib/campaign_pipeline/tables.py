"""The table catalog: every Delta table of the warehouse, its schema, partitioning and merge keys.

Every read and write of the pipeline goes through `Warehouse`, so a table's shape is decided here
and nowhere else. Tables live at `<warehouse_root>/<name>` and are created with their catalog
schema on first write. Writing a DataFrame whose columns differ from the catalog, or finding an
existing table whose columns differ, is a `SchemaError` that names the column.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.errors import SchemaError, WriteConflictError
from campaign_pipeline.fan_ranges import FAN_ID, RANGE, ROWS_PER_RANGE, by_fan_range, fan_bounds

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

CATALOG: dict[str, TableSpec] = {
    t.name: t
    for t in [
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
                _f("sms", L),
                _f("email", L),
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
            checks=(("channel_known", "channel IN ('sms', 'email')"),),
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
            ],
            description="one snapshot per report run: the funnel and per-market figures, for charting a campaign",
        ),
    ]
}


# A registrant's key, and a (registrant, market) key: every stage joins on these.
FAN: list[str] = list(CATALOG["registrants"].merge_keys)
# The fan keys in the order to sort (window, sort-merge join) by: a sort compares an 8-byte prefix
# of its first key before whole rows, and the campaign id is the same in every row of a campaign.
FAN_SORT: list[str] = [FAN_ID, *[k for k in FAN if k != FAN_ID]]
FAN_MARKET: list[str] = list(CATALOG["code_assignments"].merge_keys)


def columns(name: str, without: tuple[str, ...] = ()) -> list[str]:
    """The catalog's columns of table `name`, in order, less `without`."""
    return [c for c in spec(name).columns if c not in without]


def require_columns(df: DataFrame, needed, where: str) -> None:
    """Fail at the start of a pure function when its input lacks columns, naming the missing ones."""
    have = set(df.columns)
    missing = [c for c in needed if c not in have]
    if missing:
        raise SchemaError(f"{where} needs column(s) {', '.join(missing)}; the input has {', '.join(df.columns)}")


def union_all(frames: list[DataFrame]) -> DataFrame:
    """The frames' rows in one frame, columns matched by name."""
    out = frames[0]
    for more in frames[1:]:
        out = out.unionByName(more)
    return out


def catalog_rows(spark: SparkSession, name: str, rows: list[dict]) -> DataFrame:
    """A small frame of table `name` from driver-side rows given by column name (never by position)."""
    t = spec(name)
    for row in rows:
        unknown = sorted(set(row) - set(t.columns))
        missing = [c for c in t.columns if c not in row and not t.schema[c].nullable]
        if unknown or missing:
            raise SchemaError(
                f"row for table {name!r}: "
                + "; ".join(
                    ([f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
                    + ([f"missing column(s) {', '.join(missing)}"] if missing else [])
                )
            )
    return literal_frame(spark, [tuple(row.get(c) for c in t.columns) for row in rows], t.schema)


def absolute_root(root: str) -> str:
    """A local folder made absolute (Delta cannot take `./warehouse`); URIs such as s3:// kept."""
    if "://" in root or root.startswith("file:"):
        return root.rstrip("/")
    from pathlib import Path

    return str(Path(root).expanduser().resolve())


def sql_literal(value: str) -> str:
    """A Spark SQL string literal for `value` (paths may contain quotes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_value(value, dtype: T.DataType) -> str:
    """A Spark SQL literal of `value` typed as `dtype`."""
    if value is None:
        return f"CAST(NULL AS {dtype.simpleString()})"
    if isinstance(dtype, T.ArrayType):
        items = ", ".join(_sql_value(v, dtype.elementType) for v in value)
        return f"CAST(array({items}) AS {dtype.simpleString()})"
    if isinstance(dtype, T.MapType):
        if not value:
            return f"CAST(map() AS {dtype.simpleString()})"
        items = ", ".join(f"{_sql_value(k, dtype.keyType)}, {_sql_value(v, dtype.valueType)}" for k, v in value.items())
        return f"map({items})"
    if isinstance(dtype, T.StructType):
        items = [value.get(f.name) for f in dtype.fields] if isinstance(value, dict) else list(value)
        args = [
            x
            for f, v in zip(dtype.fields, items, strict=True)
            for x in (sql_literal(f.name), _sql_value(v, f.dataType))
        ]
        return f"named_struct({', '.join(args)})"
    if isinstance(dtype, T.StringType):
        return sql_literal(str(value))
    if isinstance(dtype, T.BooleanType):
        return "TRUE" if value else "FALSE"
    if isinstance(dtype, T.TimestampType):
        return f"TIMESTAMP {sql_literal(value.isoformat())}"
    if isinstance(dtype, T.DateType):
        return f"DATE {sql_literal(value.isoformat())}"
    return f"CAST({value!r} AS {dtype.simpleString()})"


def literal_frame(spark: SparkSession, rows: list, schema: T.StructType | str) -> DataFrame:
    """A small DataFrame from driver-side rows, as a SQL `VALUES` relation inside the JVM.

    `createDataFrame(list)` ships pickled rows through Python workers on every scan; for the
    handful of rows the pipeline builds on the driver (market capacities, wave plans) a local
    relation is read without Python, and stays cheap when scanned once per allocation round.
    """
    if isinstance(schema, str):
        schema = spark.createDataFrame([], schema).schema
    if not rows:
        return spark.createDataFrame([], schema)
    names = ", ".join(f"`{f.name}`" for f in schema.fields)
    values = ",\n".join(
        "(" + ", ".join(_sql_value(v, f.dataType) for v, f in zip(tuple(row), schema.fields, strict=True)) + ")"
        for row in rows
    )
    df = spark.sql(f"SELECT * FROM VALUES {values} AS t({names})")
    have = {f.name: f.dataType for f in df.schema.fields}
    return df.select(
        *[
            F.col(f"`{f.name}`")
            if have[f.name].simpleString() == f.dataType.simpleString()
            # a cast only where the SQL literal's type differs (never to drop nullability)
            else F.col(f"`{f.name}`").cast(f.dataType).alias(f.name)
            for f in schema.fields
        ]
    )


def spec(name: str) -> TableSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise SchemaError(f"unknown table {name!r}; known tables: {', '.join(sorted(CATALOG))}") from None


def _type_text(dtype: T.DataType) -> str:
    return dtype.simpleString()


def _strip_nullability(dtype: T.DataType) -> T.DataType:
    """Types compared without nullability: Delta enforces NOT NULL itself at write time."""
    if isinstance(dtype, T.StructType):
        return T.StructType([T.StructField(f.name, _strip_nullability(f.dataType), True) for f in dtype.fields])
    if isinstance(dtype, T.ArrayType):
        return T.ArrayType(_strip_nullability(dtype.elementType), True)
    if isinstance(dtype, T.MapType):
        return T.MapType(_strip_nullability(dtype.keyType), _strip_nullability(dtype.valueType), True)
    return dtype


def schema_differences(expected: T.StructType, actual: T.StructType) -> list[str]:
    """Human-readable differences, one per column, empty when the schemas match."""
    problems = []
    have = {f.name: f for f in actual.fields}
    want = {f.name: f for f in expected.fields}
    for name, f in want.items():
        if name not in have:
            problems.append(f"column {name!r} ({_type_text(f.dataType)}) is missing")
        elif _strip_nullability(have[name].dataType) != _strip_nullability(f.dataType):
            problems.append(f"column {name!r} is {_type_text(have[name].dataType)}, expected {_type_text(f.dataType)}")
    for name in have:
        if name not in want:
            problems.append(f"column {name!r} is not in the table catalog")
    return problems


def is_write_conflict(spark: SparkSession, exc: BaseException) -> bool:
    """Whether `exc` is Delta's optimistic-concurrency conflict (another commit won), by type.

    DeltaTable operations surface JVM errors as a bare Py4JJavaError, so the Java exception (and
    its causes) is checked against Delta's `DeltaConcurrentModificationException` class.
    """
    from delta.exceptions import DeltaConcurrentModificationException

    if isinstance(exc, DeltaConcurrentModificationException):
        return True
    java = getattr(exc, "java_exception", None)
    if java is None:
        return False
    conflict = spark._jvm.org.apache.spark.util.Utils.classForName(
        "org.apache.spark.sql.delta.DeltaConcurrentModificationException", True, False
    )
    while java is not None:
        if conflict.isInstance(java):
            return True
        java = java.getCause()
    return False


def retry_on_conflict(spark: SparkSession, action, what: str, attempts: int = 8, first_wait: float = 0.2):
    """Run `action()`; when Delta says a concurrent commit conflicted with it, run it again (up to
    `attempts` times, waiting longer each time, with jitter). For writes that are safe to repeat
    (MERGEs keyed on ids, idempotent updates, compaction): another campaign's notify, `maintain`'s
    OPTIMIZE or a report's append then delays a commit instead of failing the run."""
    import random
    import time

    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts or not is_write_conflict(spark, exc):
                if attempt > 1 and is_write_conflict(spark, exc):
                    raise WriteConflictError(
                        f"{what}: concurrent commits conflicted with it {attempts} times in a row; "
                        "nothing was written by this attempt"
                    ) from exc
                raise
            time.sleep(min(5.0, first_wait * 2 ** (attempt - 1)) * (0.5 + random.random()))
    return None


def _fingerprint(df: DataFrame) -> tuple:
    """(rows, sum of a 64-bit hash of each row): equal multisets of rows give equal fingerprints."""
    row = df.agg(F.count(F.lit(1)).alias("n"), F.sum(F.xxhash64(*df.columns).cast("decimal(38,0)")).alias("h")).first()
    return (row["n"], row["h"])


def _constraint_property(check: str) -> str:
    """The table property under which Delta keeps the CHECK constraint named `check`."""
    return f"delta.constraints.{check.lower()}"


class Warehouse:
    """Read/write helpers for the Delta tables under one warehouse root."""

    rows_per_range = ROWS_PER_RANGE  # fan-clustered tables: about this many rows per file

    def __init__(self, spark: SparkSession, root: str):
        self.spark = spark
        self.root = absolute_root(root)
        self._checked: set[str] = set()  # tables created or checked against the catalog already
        self._fan_bounds: dict[tuple[str, int], list[str] | None] = {}  # (campaign, registrations version)
        self.written: list[str] = []  # table names in write order (progress reports rows per step)

    def path(self, name: str) -> str:
        spec(name)
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.path(name))

    def ensure(self, name: str) -> None:
        """Create the table with its catalog schema if it does not exist; check it if it does."""
        from delta.tables import DeltaTable

        t = spec(name)
        if name in self._checked:
            return
        table = f"delta.`{self.path(name)}`"
        if not self.exists(name):
            builder = DeltaTable.createIfNotExists(self.spark).location(self.path(name)).addColumns(t.schema)
            if t.partition_by:
                builder = builder.partitionedBy(*t.partition_by)
            # The CHECK constraints go into the creating commit (Delta keeps them as these properties
            # and enforces them on every write) instead of one ALTER TABLE commit each.
            for key, value in (*t.properties, *((_constraint_property(c), e) for c, e in t.checks)):
                builder = builder.property(key, value)
            builder.execute()  # (if another writer created it first, the check below adds what is missing)
        else:
            actual = self.spark.read.format("delta").load(self.path(name)).schema
            added = [f for f in t.schema.fields if f.name not in actual.fieldNames()]
            problems = schema_differences(t.schema, actual)
            if added and all(f.nullable for f in added) and len(problems) == len(added):
                # A newer catalog added nullable columns: add them to the table (older rows read null).
                columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in added)
                try:
                    self.spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({columns})")
                except Exception:
                    # Another process (a run of the new version starting at the same time) may
                    # have added them first: fine if they are there now.
                    now = self.spark.read.format("delta").load(self.path(name)).schema
                    if schema_differences(t.schema, now):
                        raise
                problems = []
            if problems:
                raise SchemaError(f"Delta table {self.path(name)} does not match the catalog: " + "; ".join(problems))
        if t.checks or t.properties:
            present = {r["key"]: r["value"] for r in self.spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}
            for check, expression in t.checks:
                if _constraint_property(check) not in present:
                    self.spark.sql(f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({expression})")
            missing = [(k, v) for k, v in t.properties if present.get(k) != v]
            if missing:
                settings = ", ".join(f"'{k}' = '{v}'" for k, v in missing)
                self.spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({settings})")
        self._checked.add(name)

    def conform(self, name: str, df: DataFrame) -> DataFrame:
        """`df` with exactly the catalog columns in catalog order, or a SchemaError naming the column."""
        t = spec(name)
        problems = schema_differences(t.schema, df.schema)
        if problems:
            raise SchemaError(f"data for table {name!r} does not match the catalog: " + "; ".join(problems))
        return df.select(*t.columns)

    def read(self, name: str, campaign_id: str | None = None) -> DataFrame:
        """The table (one campaign's rows if given); an empty frame if it was never written."""
        if name not in self._checked and not self.exists(name):
            df = self.spark.createDataFrame([], spec(name).schema)
        else:
            self.ensure(name)
            df = self.spark.read.format("delta").load(self.path(name))
        if campaign_id is not None:
            df = df.where(F.col("campaign_id") == campaign_id)
        return df

    def version(self, name: str) -> int | None:
        """The latest Delta version of a table (for audit output), or None if it does not exist."""
        from delta.tables import DeltaTable

        if not self.exists(name):
            return None
        return DeltaTable.forPath(self.spark, self.path(name)).history(1).select("version").first()[0]

    def last_commit_rows(self, name: str) -> tuple[str, int | None]:
        """(operation, rows written) of the table's latest commit, from Delta's commit metrics."""
        from delta.tables import DeltaTable

        row = DeltaTable.forPath(self.spark, self.path(name)).history(1).select("operation", "operationMetrics").first()
        m = row["operationMetrics"] or {}
        for keys in (("numOutputRows",), ("numTargetRowsInserted", "numTargetRowsUpdated"), ("numDeletedRows",)):
            if any(k in m for k in keys):
                return row["operation"], sum(int(m.get(k) or 0) for k in keys)
        return row["operation"], None

    def fan_bounds(self, campaign_id: str) -> list[str] | None:
        """The fan-id bounds of the campaign's range-partitioned files, from a sample of its
        registrations (see `fan_ranges`); None when it has no registrations."""
        version = self.version("registrations")
        if version is None:
            return None
        key = (campaign_id, version)
        if key not in self._fan_bounds:
            partitions = int(self.spark.conf.get("spark.sql.shuffle.partitions") or 200)
            registrations = self.read("registrations", campaign_id)
            self._fan_bounds[key] = fan_bounds(registrations, partitions, self.rows_per_range)
        return self._fan_bounds[key]

    def _laid_out(self, name: str, df: DataFrame, campaign_id: str | None) -> DataFrame:
        """`df` with the catalog's columns (`conform`) and, for the tables one fan's lookup reads
        (FAN_CLUSTERED), split into fan-id ranges, a file each: by the campaign's registration
        bounds (on the rows' own range key when they carry one, `fan_ranges.RANGE`, which is not
        written: no shuffle where they are still laid out by it), else by Spark's range sampling."""
        columns = self.conform(name, df.drop(RANGE)).columns
        if name in FAN_CLUSTERED:
            bounds = self.fan_bounds(campaign_id) if campaign_id is not None else None
            df = df.repartitionByRange(FAN_ID) if bounds is None else by_fan_range(df, bounds)
        return df.select(*columns)

    def append(self, name: str, df: DataFrame) -> None:
        self.written.append(name)
        self.ensure(name)
        self._laid_out(name, df, None).write.format("delta").mode("append").save(self.path(name))

    def append_once(
        self, name: str, df: DataFrame, app_id: str, txn_version: int, tag: str, campaign_id: str | None = None
    ) -> bool:
        """Append `df` in a transaction carrying the application id `app_id` at `txn_version`.

        Delta skips the write when the table already records `app_id` at `txn_version` or later, and
        raises a conflict when a concurrent commit records `app_id`. Returns whether this write was
        committed (its commit carries `tag` as user metadata).
        """
        self.written.append(name)
        from delta.tables import DeltaTable

        self.ensure(name)
        (
            self._laid_out(name, df, campaign_id)
            .write.format("delta")
            .mode("append")
            .option("txnAppId", app_id)
            .option("txnVersion", txn_version)
            .option("userMetadata", tag)
            .save(self.path(name))
        )
        recent = DeltaTable.forPath(self.spark, self.path(name)).history(20)
        return not recent.where((F.col("userMetadata") == tag) & (F.col("operation") == "WRITE")).isEmpty()

    def merge_once(
        self, name: str, df: DataFrame, app_id: str, txn_version: int, tag: str, fill: tuple[str, ...] = ()
    ) -> bool:
        """MERGE `df` on the table's merge keys in a transaction carrying the application id `app_id`
        at `txn_version`: rows with a new key are inserted; for matching rows, only the `fill` columns
        are set, and only where the table's `fill[0]` is still null (nothing else ever changes).

        Delta skips the write when the table already records `app_id` at `txn_version` or later, and
        raises a conflict when a concurrent commit records `app_id`. Returns whether this write was
        committed (its commit carries `tag` as user metadata). The transaction settings are session
        settings in Delta's MERGE, so they are set on a separate session sharing this one's context:
        concurrent writers in one driver never see each other's.
        """
        self.written.append(name)
        from delta.tables import DeltaTable

        t = spec(name)
        self.ensure(name)
        source = self.conform(name, df)
        session = self.spark.newSession()
        for key, value in {"write.txnAppId": app_id, "write.txnVersion": str(txn_version),
                           "commitInfo.userMetadata": tag}.items():  # fmt: skip
            session.conf.set(f"spark.databricks.delta.{key}", value)
        on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in t.merge_keys)
        builder = DeltaTable.forPath(session, self.path(name)).alias("t").merge(source.alias("s"), on)
        if fill:
            builder = builder.whenMatchedUpdate(
                condition=f"t.`{fill[0]}` IS NULL AND s.`{fill[0]}` IS NOT NULL",
                set={c: f"s.`{c}`" for c in fill},
            )
        builder.whenNotMatchedInsertAll().execute()
        recent = DeltaTable.forPath(self.spark, self.path(name)).history(20)
        return not recent.where((F.col("userMetadata") == tag) & (F.col("operation") == "MERGE")).isEmpty()

    def replace(self, name: str, df: DataFrame, campaign_id: str, condition: str | None = None) -> None:
        """Atomically overwrite one campaign's rows (optionally narrowed by `condition`) with `df`
        (which may carry its fan-range key, see `_laid_out`)."""
        self.written.append(name)
        self.ensure(name)
        predicate = f"campaign_id = {sql_literal(campaign_id)}"
        if condition:
            predicate += f" AND ({condition})"
        (
            self._laid_out(name, df, campaign_id)
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", predicate)
            .save(self.path(name))
        )

    def replace_if_changed(
        self,
        name: str,
        df: DataFrame,
        campaign_id: str,
        ignore: tuple[str, ...] = ("run_id",),
        cut=None,
        condition: str | None = None,
    ) -> bool:
        """`replace`, unless the campaign's rows already equal `df` (ignoring `ignore` columns).
        With `condition` (SQL), only the campaign's rows matching it are compared and replaced.

        Re-running a stage on unchanged inputs then commits nothing: no new Delta version, and the
        rows keep the run id that decided them. Returns whether anything was written. When the campaign
        already has rows, `df` is materialised first with `cut(df, name)` (the stage's lineage
        policy) so the comparison and the write do not compute it twice.

        The comparison is cheap where it can be: a campaign with no rows yet is written without
        one; otherwise one aggregate per side (row count and the sum of a 64-bit hash of every row)
        tells most changes apart without a shuffle, and only equal fingerprints are confirmed
        row by row (`exceptAll` both ways), so a hash collision can never skip a write.
        """
        same, df = self.holds(name, df, campaign_id, ignore, cut, condition)
        if same:
            return False
        self.replace(name, df, campaign_id, condition)
        return True

    def holds(
        self,
        name: str,
        df: DataFrame,
        campaign_id: str,
        ignore: tuple[str, ...] = ("run_id",),
        cut=None,
        condition: str | None = None,
    ) -> tuple[bool, DataFrame]:
        """(whether the campaign's rows (matching `condition`) already equal `df`, ignoring the
        `ignore` columns; `df`, cut with `cut` when it had to be compared): `replace_if_changed`'s test."""
        if not self.exists(name):
            return False, df
        old = self.read(name, campaign_id)
        if condition:
            old = old.where(condition)
        if old.isEmpty():
            return False, df
        if cut is not None:
            df = cut(df, f"compare with {name}")
        # Set operations cannot compare maps: a map is compared as its sorted entries.
        columns = [
            F.array_sort(F.map_entries(f.name)).alias(f.name) if isinstance(f.dataType, T.MapType) else F.col(f.name)
            for f in spec(name).schema.fields
            if f.name not in ignore
        ]
        new, before = self.conform(name, df.drop(RANGE)).select(*columns), old.select(*columns)
        same = _fingerprint(new) == _fingerprint(before) and (
            new.exceptAll(before).isEmpty() and before.exceptAll(new).isEmpty()
        )
        return same, df

    def merge(
        self,
        name: str,
        df: DataFrame,
        update_existing: bool = False,
        update_condition: str | None = None,
        campaign_id: str | None = None,
    ) -> None:
        """MERGE `df` on the table's merge keys: insert new rows; update matches only if asked
        (and, with `update_condition`, only matches where it holds).

        With `campaign_id` (every caller that writes one campaign's rows), the condition names the
        campaign's partition as a literal: Delta then checks the commit against that partition
        only, so writers of other campaigns (and maintenance of them) never conflict with it."""
        self.written.append(name)
        from delta.tables import DeltaTable

        t = spec(name)
        if not t.merge_keys:
            raise SchemaError(f"table {name!r} has no merge keys in the catalog")
        self.ensure(name)
        source = self.conform(name, df)
        on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in t.merge_keys)
        if campaign_id is not None and "campaign_id" in t.partition_by:
            on = f"t.campaign_id = {sql_literal(campaign_id)} AND {on}"
        builder = DeltaTable.forPath(self.spark, self.path(name)).alias("t").merge(source.alias("s"), on)
        if update_existing:
            builder = builder.whenMatchedUpdateAll(condition=update_condition)
        builder.whenNotMatchedInsertAll().execute()

    def merge_retrying(self, name: str, df: DataFrame, campaign_id: str, update_condition: str, what: str) -> None:
        """`merge` of one campaign's rows, updating matches where `update_condition` holds, retried
        when a concurrent commit conflicts (the MERGE is keyed, so running it again is safe)."""
        retry_on_conflict(
            self.spark,
            lambda: self.merge(
                name, df, update_existing=True, update_condition=update_condition, campaign_id=campaign_id
            ),  # fmt: skip
            what,
        )

    def update(self, name: str, campaign_id: str, values: dict[str, str], where: str) -> int:
        """`UPDATE` one campaign's rows matching `where` (SQL) with `values` (column → SQL
        expression); returns the rows changed. The campaign's partition is a literal of the
        condition, so only writers of that campaign can conflict. A conditional update is how a
        run takes a state others rely on (a wave's lease, an archive): the condition is the state
        it read, and either it changes one row or another run got there first (0 rows, or Delta's
        conflict error when both commit at once)."""
        self.written.append(name)
        self.ensure(name)
        settings = ", ".join(f"`{column}` = {expression}" for column, expression in values.items())
        predicate = f"campaign_id = {sql_literal(campaign_id)} AND ({where})"
        row = self.spark.sql(f"UPDATE delta.`{self.path(name)}` SET {settings} WHERE {predicate}").first()
        return int(row[0]) if row is not None else 0

    def delete(self, name: str, condition: str | Column) -> bool:
        """Delete the rows matching `condition`; False (nothing done) when the table does not exist."""
        self.written.append(name)
        from delta.tables import DeltaTable

        if not self.exists(name):
            return False
        DeltaTable.forPath(self.spark, self.path(name)).delete(condition)
        return True
