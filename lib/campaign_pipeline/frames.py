"""DataFrame helpers shared by the stages: small frames from driver-side rows (by catalog column
name), SQL literals, column checks at the start of a pure function, unions by name."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.catalog import spec
from campaign_pipeline.errors import SchemaError


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


def sql_literal(value: str) -> str:
    """A Spark SQL string literal for `value` (paths may contain quotes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_value(value, dtype: T.DataType) -> str:
    """A Spark SQL literal of `value` typed as `dtype`."""
    if value is None:
        return f"CAST(NULL AS {dtype.simpleString()})"
    if isinstance(dtype, T.ArrayType):
        items = ", ".join(sql_value(v, dtype.elementType) for v in value)
        return f"CAST(array({items}) AS {dtype.simpleString()})"
    if isinstance(dtype, T.MapType):
        if not value:
            return f"CAST(map() AS {dtype.simpleString()})"
        items = ", ".join(f"{sql_value(k, dtype.keyType)}, {sql_value(v, dtype.valueType)}" for k, v in value.items())
        return f"map({items})"
    if isinstance(dtype, T.StructType):
        items = [value.get(f.name) for f in dtype.fields] if isinstance(value, dict) else list(value)
        args = [
            x for f, v in zip(dtype.fields, items, strict=True) for x in (sql_literal(f.name), sql_value(v, f.dataType))
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
        "(" + ", ".join(sql_value(v, f.dataType) for v, f in zip(tuple(row), schema.fields, strict=True)) + ")"
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
