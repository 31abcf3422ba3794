"""Times the pipeline compares across processes: the real clock, in UTC, and timestamps read back
from Delta (leases, holds, ends of waves)."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import types as T

from campaign_pipeline.frames import sql_value


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A timestamp read back from Spark as an aware UTC time. PySpark gives naive datetimes in the
    Python process's local time zone (whatever the session's), so a naive value is read as local."""
    if value is None:
        return None
    return value.astimezone(dt.UTC)


def ts(value: dt.datetime | None) -> str:
    """A Spark SQL timestamp literal of an instant (NULL for None)."""
    return sql_value(aware(value) if value is not None else None, T.TimestampType())
