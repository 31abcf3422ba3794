"""Where `explain` reads a fan's rows from: the Delta tables at their latest versions (named in the
answer, so it can be reproduced with time travel), through one of two readers that give the same
rows. `DeltaTables` reads them with delta-rs (the `deltalake` package) without a JVM — partition
pruning on `campaign_id` and the fan id filter pushed into the Parquet scan, so one lookup takes
about a second; `SparkTables` (`explain --spark`) reads them through Spark. Only the fans' own rows
reach the process."""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from campaign_pipeline.errors import InputError

TABLES = ("registrants", "scores", "selections", "standings", "code_assignments", "wave_messages", "notification_log")
FAN_TABLES = TABLES[:-1]  # notification_log is keyed by message id


class FanNotFound(InputError):
    """The fan id is not a registrant of the campaign (exit code 3)."""


class Tables(Protocol):
    def version(self, table: str) -> int | None: ...

    def rows(self, table: str, campaign_id: str, column: str, values: list[str]) -> list[dict]: ...

    def near_misses(self, campaign_id: str, fan: str) -> list[str]: ...


def _key(fan: str) -> str:
    return "".join(fan.split()).casefold()


def _plain(value: Any) -> Any:
    """Values as both readers return them: UTC-aware datetimes, dicts for maps, lists for arrays."""
    if isinstance(value, dt.datetime):
        # Spark hands back naive local times, delta-rs aware UTC ones: both become aware UTC
        return (value if value.tzinfo else value.astimezone()).astimezone(dt.UTC)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            return {k: _plain(v) for k, v in value}  # an Arrow map
        return [_plain(v) for v in value]
    return value


class SparkTables:
    """The tables read through Spark (`explain --spark`)."""

    def __init__(self, warehouse):
        self.wh = warehouse

    def version(self, table: str) -> int | None:
        return self.wh.version(table)

    def rows(self, table: str, campaign_id: str, column: str, values: list[str]) -> list[dict]:
        from pyspark.sql import functions as F

        if not values or not self.wh.exists(table):
            return []
        df = self.wh.read(table, campaign_id)
        if column not in df.columns:
            return []
        return [_plain(r.asDict(recursive=True)) for r in df.where(F.col(column).isin(values)).collect()]

    def near_misses(self, campaign_id: str, fan: str) -> list[str]:
        from pyspark.sql import functions as F

        if not self.wh.exists("registrants"):
            return []
        ids = self.wh.read("registrants", campaign_id).select("global_user_id")
        key = F.lower(F.regexp_replace("global_user_id", r"\s+", ""))
        return sorted(r[0] for r in ids.where(key == _key(fan)).limit(5).collect())


class DeltaTables:
    """The tables read with delta-rs: no JVM, one fan's rows by a filtered Parquet scan."""

    def __init__(self, warehouse_root: str):
        self.root = warehouse_root.rstrip("/")
        self._tables: dict[str, Any] = {}

    def _table(self, table: str):
        if table not in self._tables:
            from deltalake import DeltaTable
            from deltalake.exceptions import TableNotFoundError

            try:
                self._tables[table] = DeltaTable(f"{self.root}/{table}", storage_options=_storage_options(self.root))
            except TableNotFoundError:
                self._tables[table] = None
        return self._tables[table]

    def version(self, table: str) -> int | None:
        t = self._table(table)
        return None if t is None else t.version()

    def _dataset(self, table: str, campaign_id: str, column: str | None = None, values: list[str] | None = None):
        """The campaign's Parquet files of the table's current version, scanned by pyarrow itself.

        delta-rs resolves the files: the log replay, partition pruning on `campaign_id`, and file
        skipping on the Delta statistics of `column` (min/max per file: Z-ordered tables keep one
        fan's rows in few files); pyarrow reads them, the filter pushed into row-group statistics. (Scanning through
        delta-rs's own filesystem layer leaves runtime threads that abort the process at exit.)"""
        import pyarrow.dataset as ds

        t = self._table(table)
        if t is None:
            return None
        predicate = [("campaign_id", "=", campaign_id)]
        if column and values and column in t.schema().to_arrow().names:
            predicate.append((column, "in", list(values)))
        files = t.file_uris(file_pruning_predicate=predicate)
        if not files:
            return None
        root, filesystem = self._filesystem()
        files = [f.removeprefix("file://") for f in files]
        if root.startswith("s3"):
            files = [f.split("://", 1)[1] for f in files]
        return ds.dataset(
            files,
            format="parquet",
            filesystem=filesystem,
            partitioning=ds.partitioning(flavor="hive"),
            partition_base_dir=f"{root.split('://', 1)[-1] if root.startswith('s3') else root}/{table}",
        )

    def _filesystem(self):
        if not self.root.startswith(("s3://", "s3a://")):
            return self.root, None
        import os

        from pyarrow import fs

        opts = _storage_options(self.root) or {}
        endpoint = opts.get("AWS_ENDPOINT_URL")
        return self.root, fs.S3FileSystem(
            region=opts.get("AWS_REGION"),
            endpoint_override=endpoint,
            scheme="http" if endpoint and endpoint.startswith("http:") else "https",
            access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )

    def rows(self, table: str, campaign_id: str, column: str, values: list[str]) -> list[dict]:
        import pyarrow.compute as pc

        dataset = self._dataset(table, campaign_id, column, values) if values else None
        if dataset is None or column not in dataset.schema.names:
            return []
        match = pc.field(column) == values[0] if len(values) == 1 else pc.field(column).isin(values)
        return [_plain(r) for r in _utc_times(dataset.to_table(filter=match)).to_pylist()]

    def campaign_rows(self, table: str, campaign_id: str) -> list[dict]:
        """Every row of the campaign in the table (small tables only: `pipeline_runs`)."""
        dataset = self._dataset(table, campaign_id)
        return [] if dataset is None else [_plain(r) for r in _utc_times(dataset.to_table()).to_pylist()]

    def near_misses(self, campaign_id: str, fan: str) -> list[str]:
        import pyarrow.compute as pc

        dataset = self._dataset("registrants", campaign_id)
        if dataset is None:
            return []
        ids = dataset.to_table(columns=["global_user_id"])
        keys = pc.utf8_lower(pc.replace_substring_regex(ids.column("global_user_id"), r"\s+", ""))
        return sorted(ids.filter(pc.equal(keys, _key(fan))).column("global_user_id").to_pylist())[:5]


def _utc_times(table):
    """Parquet timestamps (Spark writes them UTC-normalised, INT96 or micros) as UTC microseconds."""
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields), safe=False)


def _storage_options(root: str) -> dict[str, str] | None:
    """delta-rs on S3 takes the region and endpoint boto3 would use (AWS_ENDPOINT_URL in tests)."""
    if not root.startswith(("s3://", "s3a://")):
        return None
    import os

    opts = {"AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if os.environ.get("AWS_ENDPOINT_URL"):
        opts |= {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true"}
    return opts
