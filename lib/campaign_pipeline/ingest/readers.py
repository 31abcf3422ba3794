"""Readers that turn one landing file into rows of text fields with their physical line numbers.

Every reader returns the same shape, whatever the format: `source_file`, `source_line`, `raw`
(the row as it was delivered), `shape_problem` (null, or why the row's shape is wrong) and one
string column per field of the file kind (plus `extra` for kinds that carry unknown columns).
Typing happens afterwards in `parse.py`, once for all formats.

CSV/TSV and JSON lines are read as text so that a broken line is kept whole with its line
number instead of being silently dropped or merged by a lenient CSV parser. A quoted field may
not span lines (one record per physical line); a line with an unbalanced double quote is
quarantined, never guessed at. Text is UTF-8 unless the campaign sets `ingest.encoding.<kind>`;
a UTF-8 line with invalid bytes is quarantined (never silently turned into U+FFFD). JSON keys are
matched case-insensitively, so a line holding the same key twice (`"Email"` and `"email"`) is
quarantined. A folder of part files (Spark output) is one logical file: its rows are numbered
across the parts in name order.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.errors import InputError
from campaign_pipeline.ingest import sources as src
from campaign_pipeline.ingest.parse import takes_typed

_BOM = "\ufeff"


def number_rows(df: DataFrame) -> DataFrame:
    """Add `source_line`: the 1-based physical position of each row inside its file.

    `df` must carry `_file` and `_block` (the file split's start offset, from `_metadata`). A row's
    position is its offset inside the split plus the rows of the splits before it in the same
    file. The offset inside a split comes from the scan's row counter, which follows file order
    within a split; the result is the physical line number, independent of how Spark split or
    scheduled the file, so it is stable across runs and cluster sizes.
    """
    # Row counter of the scan, used only to number rows in file order (never to decide an outcome).
    counted = df.withColumn("_pos", F.monotonically_increasing_id())
    splits = counted.groupBy("_file", "_block").agg(F.count(F.lit(1)).alias("_n"), F.min("_pos").alias("_first"))
    # One logical file may be a folder of parts: number across the parts in path order (a tiny window).
    earlier = Window.orderBy("_file", "_block").rowsBetween(Window.unboundedPreceding, -1)
    splits = splits.withColumn("_before", F.coalesce(F.sum("_n").over(earlier), F.lit(0)))
    return (
        counted.join(F.broadcast(splits.select("_file", "_block", "_first", "_before")), ["_file", "_block"])
        .withColumn("source_line", (F.col("_before") + F.col("_pos") - F.col("_first") + 1).cast("long"))
        .drop("_pos", "_first", "_before", "_block")
    )


def read_text_lines(spark: SparkSession, path: str, kind_name: str = "", encoding: str = "UTF-8") -> DataFrame:
    """Non-blank lines of a text file: `source_file`, `source_line`, `value` (decoded, BOM stripped)
    and `encoding_problem` (null, or why the line's bytes are not text in the file's encoding)."""
    lines = spark.read.text(path).select(
        "value", F.col("_metadata.file_path").alias("_file"), F.col("_metadata.file_block_start").alias("_block")
    )
    numbered = number_rows(lines)
    if encoding == "UTF-8":
        # Spark keeps a line's bytes as they are: check them instead of letting U+FFFD in.
        valid = F.is_valid_utf8(F.col("value"))
        text = F.when(valid, F.col("value")).otherwise(F.make_valid_utf8(F.col("value")))
        problem = F.when(
            ~valid,
            F.lit(
                "invalid UTF-8 bytes (if the file is in another encoding, set "
                f"ingest.encoding.{kind_name or '<kind>'} in the campaign config)"
            ),
        )
    else:
        text, problem = F.decode(F.col("value").cast("binary"), encoding), F.lit(None).cast("string")
    value = F.regexp_replace(text, f"^{_BOM}", "")
    return numbered.select(
        F.lit(path).alias("source_file"), "source_line", value.alias("value"), problem.alias("encoding_problem")
    ).where(F.length(F.trim(F.col("value"))) > 0)


def read_first_line(spark: SparkSession, path: str, encoding: str = "UTF-8") -> str:
    """The first line of a (possibly gzip-compressed) text file, read in the JVM without a Spark job."""
    jvm = spark._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    conf = spark._jsc.hadoopConfiguration()
    fs = hpath.getFileSystem(conf)
    stream = fs.open(hpath)
    try:
        codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(hpath)
        if codec is not None:
            stream = codec.createInputStream(stream)
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, encoding))
        line = reader.readLine()
    finally:
        stream.close()
    return (line or "").lstrip(_BOM).rstrip("\r")


def _header_names(header: str, sep: str, path: str) -> list[str]:
    import csv

    names = [h.strip().lower() for h in next(csv.reader([header], delimiter=sep, quotechar='"'))] if header else []
    if not any(names):
        raise InputError(f"{path}: line 1: expected a header row naming the columns, found an empty line")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{path}: line 1: column {dupes[0]!r} appears more than once in the header")
    return names


def _require_columns(kind: src.FileKind, present: list[str], path: str, where: str) -> None:
    missing = [c for c in kind.required if c not in present]
    if missing:
        raise InputError(
            f"{path}: {where}: required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} missing (a {kind.name} file needs {', '.join(kind.required)}; "
            f"found {', '.join(present) or 'none'})"
        )


def _field_count(line: Column, sep: str) -> Column:
    """Fields on a delimited line: separators outside double-quoted sections, plus one."""
    unquoted = F.regexp_replace(line, r'"(?:[^"]|"")*"', "")
    return F.size(F.split(unquoted, "\t" if sep == "\t" else sep, -1))


def _extra_map(names: list[str], columns: list[Column]) -> Column:
    if not names:
        return F.create_map().cast(T.MapType(T.StringType(), T.StringType()))
    return F.map_from_arrays(F.array(*[F.lit(n) for n in names]), F.array(*columns))


def read_delimited(spark: SparkSession, path: str, kind: src.FileKind, sep: str, encoding: str = "UTF-8") -> DataFrame:
    """A CSV (`,`) or TSV (tab) file with a header row; quotes per RFC 4180 (`""` inside quotes)."""
    names = _header_names(read_first_line(spark, path, encoding), sep, path)
    _require_columns(kind, names, path, "line 1 (header)")
    positional = ", ".join(f"c{i} STRING" for i in range(len(names)))
    parsed = F.from_csv(
        F.col("value"),
        positional,
        {"sep": sep, "quote": '"', "escape": '"', "mode": "PERMISSIVE", "ignoreLeadingWhiteSpace": "false"},
    )
    lines = read_text_lines(spark, path, kind.name, encoding).where(F.col("source_line") > 1)
    count = _field_count(F.col("value"), sep)
    quotes = F.length(F.col("value")) - F.length(F.replace(F.col("value"), F.lit('"'), F.lit("")))
    shape = F.coalesce(
        F.col("encoding_problem"),
        F.when(
            F.pmod(quotes, F.lit(2)) == 1,
            F.lit("unbalanced double quote: a quoted field is not closed on this line (a field may not span lines)"),
        ),
        F.when(
            count != len(names),
            F.concat(F.lit(f"wrong field count: expected {len(names)}, got "), count.cast("string")),
        ),
    )
    index = {n: i for i, n in enumerate(names)}
    fields = [
        (parsed.getField(f"c{index[f]}") if f in index else F.lit(None).cast("string")).alias(f)
        for f in kind.field_names
    ]
    extra = []
    if kind.carries_extra:
        others = [n for n in names if n not in kind.field_names]
        extra = [_extra_map(others, [parsed.getField(f"c{index[n]}") for n in others]).alias("extra")]
    return lines.select(
        "source_file", "source_line", F.col("value").alias("raw"), shape.alias("shape_problem"), *fields, *extra
    )


def read_json_lines(spark: SparkSession, path: str, kind: src.FileKind, encoding: str = "UTF-8") -> DataFrame:
    """One JSON object per line; keys matched case-insensitively; arrays kept as JSON text."""
    lines = read_text_lines(spark, path, kind.name, encoding)
    # Each line is parsed once, into a map that keeps every key as written (a key given twice is
    # two entries), in a projection of its own that the next ones read as a column: written as one
    # expression, Spark would copy the parse into every field that reads it.
    parsed = lines.withColumn("_parsed", F.from_json(F.col("value"), "map<string,string>", {"mode": "PERMISSIVE"}))
    keyed_lines = parsed.withColumn("_keys", F.transform(F.map_keys(F.col("_parsed")), lambda k: F.lower(F.trim(k))))
    folded = F.col("_keys")
    # Keys are compared before the map is folded: folding a key given twice would stop the whole job.
    keyed_lines = keyed_lines.withColumn(
        "_twice", F.coalesce(F.size(F.array_distinct(folded)) < F.size(folded), F.lit(False))
    )
    twice = F.col("_twice")
    first_repeated = F.element_at(
        F.filter(F.array_distinct(folded), lambda k: F.size(F.filter(folded, lambda x: x == k)) > 1), 1
    )
    mapped = keyed_lines.withColumn(
        "_map", F.when(~twice, F.transform_keys(F.col("_parsed"), lambda k, v: F.lower(F.trim(k))))
    )
    keyed = F.col("_map")
    shape = F.coalesce(
        F.col("encoding_problem"),
        F.when(
            twice,
            F.concat(
                F.lit("duplicate key '"),
                first_repeated,
                F.lit("' (keys are matched case-insensitively)"),
            ),
        ),
        F.when(keyed.isNull(), F.lit("not a JSON object")),
    )
    fields = [keyed.getItem(f).alias(f) for f in kind.field_names]
    extra = []
    if kind.carries_extra:
        known = F.array(*[F.lit(f) for f in kind.field_names])
        extra = [F.map_filter(keyed, lambda k, v: ~F.array_contains(known, k)).alias("extra")]
    return mapped.select(
        "source_file", "source_line", F.col("value").alias("raw"), shape.alias("shape_problem"), *fields, *extra
    )


def _as_text(col: Column, dtype: T.DataType) -> Column:
    if isinstance(dtype, (T.ArrayType, T.MapType, T.StructType)):
        return F.to_json(col)
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        return F.date_format(col, "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX")
    return col.cast("string")


def read_columnar(spark: SparkSession, path: str, kind: src.FileKind, fmt: str) -> DataFrame:
    """A Parquet or Avro file; `source_line` is the row's position in the file. Whole numbers and
    timestamps also come as they are typed (`_v_<field>`), for `parse.py` to take without text."""
    df = spark.read.format(fmt).load(path)
    columns = {c.name.strip().lower(): c for c in df.schema.fields}
    _require_columns(kind, list(columns), path, "schema")
    rows = df.select(
        "*", F.col("_metadata.file_path").alias("_file"), F.col("_metadata.file_block_start").alias("_block")
    )
    numbered = number_rows(rows)
    original = [F.col(f"`{c.name}`") for c in df.schema.fields]
    fields = [
        (
            _as_text(F.col(f"`{columns[f].name}`"), columns[f].dataType) if f in columns else F.lit(None).cast("string")
        ).alias(f)
        for f in kind.field_names
    ]
    extra = []
    if kind.carries_extra:
        others = [n for n in columns if n not in kind.field_names]
        extra = [
            _extra_map(others, [_as_text(F.col(f"`{columns[n].name}`"), columns[n].dataType) for n in others]).alias(
                "extra"
            )
        ]
    typed = [
        F.col(f"`{columns[f.name].name}`").alias(f"_v_{f.name}")
        for f in kind.fields
        if f.name in columns and takes_typed(f.kind, columns[f.name].dataType)
    ]
    return numbered.select(
        F.lit(path).alias("source_file"),
        "source_line",
        F.to_json(F.struct(*original)).alias("raw"),
        F.lit(None).cast("string").alias("shape_problem"),
        *fields,
        *extra,
        *typed,
    )


def read_entries(spark: SparkSession, path: str, kind_name: str = "", encoding: str = "UTF-8") -> DataFrame:
    """A one-entry-per-line list; `#` starts a comment line."""
    lines = read_text_lines(spark, path, kind_name, encoding).where(~F.trim(F.col("value")).startswith("#"))
    return lines.select(
        "source_file",
        "source_line",
        F.col("value").alias("raw"),
        F.col("encoding_problem").alias("shape_problem"),
        F.col("value").alias("entry"),
    )


def read_landing_file(
    spark: SparkSession, path: str, kind: src.FileKind, fmt: str, encoding: str = "UTF-8"
) -> DataFrame:
    if kind.entry_list:
        return read_entries(spark, path, kind.name, encoding)
    if fmt == "csv":
        return read_delimited(spark, path, kind, ",", encoding)
    if fmt == "tsv":
        return read_delimited(spark, path, kind, "\t", encoding)
    if fmt == "json":
        return read_json_lines(spark, path, kind, encoding)
    if fmt in ("parquet", "avro"):
        return read_columnar(spark, path, kind, fmt)
    raise InputError(f"{path}: format {fmt!r} is not supported for {kind.name} files (use {', '.join(kind.formats)})")
