"""Writers of a synthetic campaign: landing files as a campaign team would deliver them, and the truth.

Registration rows are strings as delivered (with planted malformed rows appended), written as
CSV / TSV / JSON lines / Parquet / Avro in stable file names; text files are written by Spark, one
file per `_f`, rows ordered by `_k`, then renamed.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from campaign_pipeline.synth.accounts import Draw
from campaign_pipeline.synth.spec import MALFORMED, REGISTRATION_COLUMNS, SynthSpec

TRUTH_COLUMNS = [
    "acct",
    "global_user_id",
    "person_id",
    "role",
    "ring_id",
    "linked_by",
    "single_account",
    "expected_tags",
    "intl",
    "shared_phone",
    "invalid_phone",
    "no_phone",
    "blocked_email",
    "blocked_domain",
    "allowlisted",
    "disposable",
    "do_not_text",
    "phone_confirmed",
    "truth_phone_e164",
    "truth_email",
    "truth_registered_at",
    "country",
    "stealth_ring_id",
    "stealth_tactics",
    "decoy",
    "decoy_group",
]


def _csv_field(col: Column, sep: str) -> Column:
    """RFC 4180 quoting when the value holds the separator, a quote or a newline."""
    text = F.coalesce(col.cast("string"), F.lit(""))
    needs = text.contains(sep) | text.contains('"')
    return F.when(needs, F.concat(F.lit('"'), F.replace(text, F.lit('"'), F.lit('""')), F.lit('"'))).otherwise(text)


def registration_rows(df: DataFrame, spec: SynthSpec, fmt: str) -> DataFrame:
    """Registration rows as delivered (strings), with planted malformed rows appended."""
    d = Draw(spec.seed)
    prefs_text = F.array_join("market_preferences", "|")
    rows = df.select(
        F.lit(spec.campaign_id).alias("campaign_id"),
        "global_user_id",
        "member_id",
        "email",
        "phone",
        F.when(F.col("phone_confirmed"), "true")
        .otherwise(d.pick("false_word", ["false", "0", "no"], F.col("acct")))
        .alias("phone_confirmed"),
        "first_name",
        "last_name",
        "locale",
        "country",
        "postal_code",
        (prefs_text if fmt in ("csv", "tsv") else F.col("market_preferences")).alias("market_preferences"),
        "registered_at",
        "ip_address",
        "device_id",
        "payment_fingerprint",
        F.when(F.col("do_not_text"), d.pick("true_word", ["true", "1", "yes"], F.col("acct")))
        .otherwise("false")
        .alias("do_not_text"),
        F.col("acct").alias("_order"),
        F.lit(None).cast("string").alias("_malformed"),
    )
    return rows


def malformed_rows(spark: SparkSession, spec: SynthSpec, template: DataFrame, fmt: str) -> DataFrame:
    # mixed: odd and even rows go to files of different formats, so each kind takes two rows in a row
    step = 2 if spec.registrations_format == "mixed" else 1
    n_bad = max(len(MALFORMED) * step, int(spec.registrants * spec.malformed_rate))
    kinds = F.array(*[F.lit(k) for k, _ in MALFORMED])
    kind = F.pmod(F.floor(F.col("_order") / step), F.lit(len(MALFORMED))) + 1
    bad = template.where(F.col("_order") < n_bad).withColumn("_malformed", F.element_at(kinds, kind.cast("int")))
    k = F.col("_malformed")
    bad = (
        bad.withColumn(
            "global_user_id",
            F.when(k == "missing_id", F.lit("")).otherwise(F.concat(F.lit("X"), F.col("global_user_id"))),
        )
        .withColumn(
            "registered_at",
            F.when(k == "bad_timestamp", F.lit("2027-02-31T25:61:00Z"))
            .when(k == "no_zone", F.lit("2027-02-03T10:15:00"))
            .otherwise(F.col("registered_at")),
        )
        .withColumn(
            "market_preferences",
            F.when(k == "no_market", F.lit("") if fmt in ("csv", "tsv") else F.array().cast("array<string>")).otherwise(
                F.col("market_preferences")
            ),
        )
        .withColumn("phone_confirmed", F.when(k == "bad_boolean", F.lit("maybe")).otherwise(F.col("phone_confirmed")))
        .withColumn("_order", F.col("_order") + spec.registrants)
    )
    if fmt not in ("csv", "tsv"):  # a field count is the delimited formats' own problem
        bad = bad.where(k != "field_count")
    return bad


def _line(df: DataFrame, sep: str) -> Column:
    fields = [_csv_field(F.col(c), sep) for c in REGISTRATION_COLUMNS]
    full = F.concat_ws(sep, *fields)
    short = F.concat_ws(sep, *fields[:-1])  # one field missing
    return F.when(F.col("_malformed") == "field_count", short).otherwise(full)


def _move_parts(spark: SparkSession, tmp: str, dest_dir: str, prefix: str, ext: str) -> list[str]:
    """Rename Spark's `_f=<i>/part-*` outputs to stable names `<prefix>_<i>.<ext>`."""
    jvm = spark._jvm
    conf = spark._jsc.hadoopConfiguration()
    tmp_path = jvm.org.apache.hadoop.fs.Path(tmp)
    fs = tmp_path.getFileSystem(conf)
    moved = []
    for status in fs.listStatus(tmp_path):
        name = status.getPath().getName()
        if not name.startswith("_f="):
            continue
        idx = int(name.split("=", 1)[1])
        parts = [s for s in fs.listStatus(status.getPath()) if s.getPath().getName().startswith("part-")]
        for j, part in enumerate(sorted(parts, key=lambda s: s.getPath().getName())):
            suffix = f"_{j}" if len(parts) > 1 else ""
            target = jvm.org.apache.hadoop.fs.Path(f"{dest_dir}/{prefix}_{idx:03d}{suffix}.{ext}")
            fs.delete(target, False)
            fs.rename(part.getPath(), target)
            moved.append(target.toString())
    fs.delete(tmp_path, True)
    return sorted(moved)


def _write_text_files(
    spark: SparkSession, lines: DataFrame, dest: str, prefix: str, ext: str, n_files: int
) -> list[str]:
    """`lines` (`_f`, `_k`, `value`) → one text file per `_f`, rows ordered by `_k`."""
    tmp = f"{dest}/_tmp_{prefix}"
    (
        lines.repartition(n_files, "_f")
        .sortWithinPartitions("_f", "_k")
        .select("_f", "value")
        .write.mode("overwrite")
        .partitionBy("_f")
        .text(tmp)
    )
    return _move_parts(spark, tmp, dest, prefix, ext)


def _with_headers(rows: DataFrame, header: str, n_files: int, spark: SparkSession) -> DataFrame:
    headers = spark.range(n_files).select(
        F.col("id").cast("int").alias("_f"), F.lit(-1).cast("long").alias("_k"), F.lit(header).alias("value")
    )
    return rows.unionByName(headers)


def write_registrations(spark: SparkSession, spec: SynthSpec, acc: DataFrame, dest: str, n_files: int) -> DataFrame:
    """Registration files in `spec.registrations_format`; returns the planted malformed rows.
    `mixed`: the even-numbered files CSV, the odd-numbered ones JSON lines (a CRM's export beside
    the web app's), at least one of each."""
    fmt = spec.registrations_format
    if fmt != "mixed":
        return _write_registrations(spark, spec, acc, dest, n_files, fmt)
    n_files = max(2, n_files)
    truth = ["_order", "global_user_id", "_malformed"]  # what `write_truth` reads (the formats' types differ)
    csv = _write_registrations(spark, spec, acc, dest, n_files, "csv", parity=0).select(truth)
    return csv.unionByName(_write_registrations(spark, spec, acc, dest, n_files, "json", parity=1).select(truth))


def _write_registrations(
    spark: SparkSession, spec: SynthSpec, acc: DataFrame, dest: str, n_files: int, fmt: str, parity: int | None = None
) -> DataFrame:
    """The registration files of format `fmt` among `n_files` (with `parity`: only the files whose
    number has it), and the malformed rows planted in them."""
    rows = registration_rows(acc, spec, fmt)
    bad = malformed_rows(spark, spec, rows, fmt)
    file_of = F.pmod(F.col("_order"), F.lit(n_files)).cast("int")  # the file a row goes to
    all_rows = rows.unionByName(bad).withColumn("_f", file_of)
    mine = None
    if parity is not None:
        mine = F.col("_f") % 2 == parity
        all_rows = all_rows.where(mine)
        bad = bad.where(file_of % 2 == parity)
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        lines = all_rows.select("_f", F.col("_order").alias("_k"), _line(all_rows, sep).alias("value"))
        lines = _with_headers(lines, sep.join(REGISTRATION_COLUMNS), n_files, spark)
        _write_text_files(spark, lines if mine is None else lines.where(mine), dest, "registrations", fmt, n_files)
    elif fmt == "json":
        # as a web app's export writes them: arrays, and real booleans where the value is one
        payload = F.regexp_replace(
            F.to_json(F.struct(*[F.col(c) for c in REGISTRATION_COLUMNS])),
            r'"(phone_confirmed|do_not_text)":"(true|false)"',
            '"$1":$2',
        )
        lines = all_rows.select("_f", F.col("_order").alias("_k"), payload.alias("value"))
        _write_text_files(spark, lines, dest, "registrations", "jsonl", n_files)
    else:
        tmp = f"{dest}/_tmp_registrations"
        (
            all_rows.repartition(n_files, "_f")
            .sortWithinPartitions("_f", "_order")
            .select("_f", *REGISTRATION_COLUMNS)
            .write.mode("overwrite")
            .partitionBy("_f")
            .format(fmt)
            .save(tmp)
        )
        _move_parts(spark, tmp, dest, "registrations", fmt)
    return bad


def write_parquet_file(spark: SparkSession, df: DataFrame, dest: str, prefix: str) -> None:
    tmp = f"{dest}/_tmp_{prefix}"
    df.withColumn("_f", F.lit(0)).repartition(1).write.mode("overwrite").partitionBy("_f").parquet(tmp)
    _move_parts(spark, tmp, dest, prefix, "parquet")


def write_code_pool(spark: SparkSession, codes: DataFrame, dest: str) -> None:
    lines = codes.select(
        F.lit(0).alias("_f"), F.col("i").cast("long").alias("_k"), F.concat_ws(",", "code", "market_id").alias("value")
    )
    _write_text_files(spark, _with_headers(lines, "code,market_id", 1, spark), dest, "code_pool", "csv", 1)


def write_blocked_emails(spark: SparkSession, acc: DataFrame, dest: str) -> None:
    blocked = acc.where("blocked_email").select(
        F.lit(0).alias("_f"), F.col("acct").alias("_k"), F.col("truth_email").alias("value")
    )
    comment = spark.range(1).select(
        F.lit(0).alias("_f"),
        F.lit(-1).cast("long").alias("_k"),
        F.lit("# addresses blocked by the campaign team").alias("value"),
    )
    _write_text_files(spark, blocked.unionByName(comment), dest, "blocked_emails", "txt", 1)


def write_truth(acc: DataFrame, bad: DataFrame, path: str) -> None:
    """One truth row per account (with its expected tags) and per malformed row (with its kind)."""
    reasons = F.create_map(*[x for kind, reason in MALFORMED for x in (F.lit(kind), F.lit(reason))])
    accounts = acc.select(*TRUTH_COLUMNS, F.lit(None).cast("string").alias("malformed"))
    malformed = bad.select(
        F.col("_order").alias("acct"),
        "global_user_id",
        *[F.lit(None).cast(acc.schema[c].dataType).alias(c) for c in TRUTH_COLUMNS[2:]],
        F.col("_malformed").alias("malformed"),
    )
    truth = accounts.unionByName(malformed).withColumn("expected_quarantine_reason", reasons[F.col("malformed")])
    truth.write.mode("overwrite").parquet(path)
