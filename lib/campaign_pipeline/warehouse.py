"""`Warehouse`: every read and write of a Delta table under one warehouse root.

Tables live at `<warehouse_root>/<name>` and are created with their catalog schema (`catalog.py`)
on first write; a newer catalog's nullable columns are added to an existing table, any other
difference is a `SchemaError`. Writes that meet a concurrent commit are told apart
(`is_write_conflict`) and, where repeating them is safe, retried (`retry_on_conflict`).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.catalog import FAN_CLUSTERED, spec
from campaign_pipeline.errors import SchemaError, WriteConflictError
from campaign_pipeline.fan_ranges import FAN_ID, RANGE, ROWS_PER_RANGE, by_fan_range, fan_bounds
from campaign_pipeline.frames import sql_literal


def absolute_root(root: str) -> str:
    """A local folder made absolute (Delta cannot take `./warehouse`); URIs such as s3:// kept."""
    if "://" in root or root.startswith("file:"):
        return root.rstrip("/")
    from pathlib import Path

    return str(Path(root).expanduser().resolve())


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


def _same_sql(a: str, b: str) -> bool:
    """The same constraint expression, up to case and spaces (Delta may keep either form)."""
    return "".join(a.lower().split()) == "".join(b.lower().split())


def _in_list(expression: str) -> tuple[str, frozenset[str]] | None:
    """`channel IN ('sms', 'email')` → ("channel", {"sms", "email"}); None for any other expression."""
    import re

    m = re.fullmatch(r"\s*(\w+)\s+IN\s*\((.*)\)\s*", expression, re.IGNORECASE | re.DOTALL)
    if m is None:
        return None
    return m.group(1).lower(), frozenset(re.findall(r"'((?:[^']|'')*)'", m.group(2)))


def _covers(held: str, wanted: str) -> bool:
    """Whether the table's constraint `held` already allows all that `wanted` allows: the same
    expression, or an IN-list on the same column with at least the wanted values."""
    if _same_sql(held, wanted):
        return True
    a, b = _in_list(held), _in_list(wanted)
    return a is not None and b is not None and a[0] == b[0] and a[1] >= b[1]


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
                held = present.get(_constraint_property(check))
                if held is None or not _covers(held, expression):
                    self._set_constraint(table, check, expression)
            missing = [(k, v) for k, v in t.properties if present.get(k) != v]
            if missing:
                settings = ", ".join(f"'{k}' = '{v}'" for k, v in missing)
                self.spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({settings})")
        self._checked.add(name)

    def _set_constraint(self, table: str, check: str, expression: str) -> None:
        """Add the CHECK constraint, or widen it (a channel was added: Delta cannot alter one, so it
        is dropped and added again, retried on a concurrent commit). Never narrowed: a table that
        already allows more (a newer version registered more channels) keeps its constraint. Were
        a run killed between the drop and the add, the next `ensure` adds it."""

        def held() -> str | None:
            rows = self.spark.sql(f"SHOW TBLPROPERTIES {table}").collect()
            return {r["key"]: r["value"] for r in rows}.get(_constraint_property(check))

        def change() -> None:
            now = held()
            if now is not None and _covers(now, expression):
                return  # another process did it first
            if now is not None:
                self.spark.sql(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}")
            self.spark.sql(f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({expression})")

        try:
            retry_on_conflict(self.spark, change, f"setting the CHECK constraint {check} of {table}")
        except Exception:
            now = held()  # a concurrent ADD of the same constraint fails here, and is fine
            if now is None or not _covers(now, expression):
                raise

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
