"""The legacy per-wave zip: `sms/{market}.csv`, `email/{market}.csv` (one row per email address),
`masterCodes/{market}.csv` (every coded fan of the wave, TM placeholders left out), with the
columns the old notifier tooling reads. Written to a local folder or to `s3://bucket/prefix`
through boto3 (which honours `AWS_ENDPOINT_URL`, e.g. a moto server in tests).

The zip is streamed: rows come to the driver one partition at a time (`toLocalIterator`), sorted
by member file, so memory stays flat whatever the wave's size. Entry timestamps are the wave's
notify time, so the same wave exports to byte-identical zips.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

# OWASP CSV injection: a cell a spreadsheet would read as a formula.
FORMULA_START = "^[=+\\-@\t\r]"


def neutralised(col: Column) -> Column:
    """Free text that begins like a formula (`=`, `+`, `-`, `@`, tab, carriage return) gets a leading `'`."""
    text = col.cast("string")
    return F.when(text.rlike(FORMULA_START), F.concat(F.lit("'"), text)).otherwise(text)


def legacy_columns():
    """(header, column) pairs of the legacy CSVs (built lazily: Columns need a running session).

    Every field that carries text from registrations or templates is neutralised; the code,
    the do-not-text flag and the E.164 mobile number (its own column, always `+` and digits) are
    written as they are.
    """
    return [
        ("code", F.coalesce(F.when(F.col("code_type") != "tm", F.col("code")), F.lit(""))),
        ("doNotText", F.when(F.coalesce(F.col("do_not_text"), F.lit(False)), "true").otherwise("false")),
        ("email", neutralised(F.col("email"))),
        ("firstName", neutralised(F.col("first_name"))),
        ("lastName", neutralised(F.col("last_name"))),
        ("link", neutralised(F.col("link"))),
        ("locale", neutralised(F.col("locale"))),
        ("marketId", neutralised(F.col("market_id"))),
        ("globalUserId", neutralised(F.col("global_user_id"))),
        ("memberId", neutralised(F.col("member_id"))),
        ("mobileNumber", F.col("mobile_number")),
        ("smsText", neutralised(F.when(F.col("channel") == "sms", F.col("text")))),
    ]


HEADER = "code,doNotText,email,firstName,lastName,link,locale,marketId,globalUserId,memberId,mobileNumber,smsText"


def _csv_field(col):
    text = F.coalesce(col.cast("string"), F.lit(""))
    needs_quotes = text.rlike('[",\r\n]')
    return F.when(needs_quotes, F.concat(F.lit('"'), F.replace(text, F.lit('"'), F.lit('""')), F.lit('"'))).otherwise(
        text
    )


def legacy_lines(messages: DataFrame) -> DataFrame:
    """(member, sort key, line) for one wave's messages."""
    line = F.concat_ws(",", *[_csv_field(c) for _, c in legacy_columns()])
    sms = messages.where(F.col("channel") == "sms").select(
        F.concat(F.lit("sms/"), F.col("market_id"), F.lit(".csv")).alias("member"),
        F.col("global_user_id").alias("k"),
        line.alias("line"),
    )
    first_per_email = Window.partitionBy("market_id", F.lower("email")).orderBy("global_user_id")
    email = (
        messages.where(F.col("channel") == "email")
        .withColumn("_n", F.row_number().over(first_per_email))
        .where("_n = 1")
        .select(
            F.concat(F.lit("email/"), F.col("market_id"), F.lit(".csv")).alias("member"),
            F.col("global_user_id").alias("k"),
            line.alias("line"),
        )
    )
    one_per_code = Window.partitionBy("market_id", "global_user_id").orderBy(F.col("channel").desc())
    master = (
        messages.where(F.col("code_type") != "tm")
        .withColumn("_n", F.row_number().over(one_per_code))
        .where("_n = 1")
        .withColumn("channel", F.lit(None).cast("string"))  # a master code row has no SMS text
        .select(
            F.concat(F.lit("masterCodes/"), F.col("market_id"), F.lit(".csv")).alias("member"),
            F.col("global_user_id").alias("k"),
            line.alias("line"),
        )
    )
    return sms.unionByName(email).unionByName(master)


def write_wave_zip(lines: DataFrame, path: str, stamp) -> int:
    """Stream `lines` into a zip at a local path; returns the number of data rows."""
    rows = 0
    date_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        current, handle = None, None
        for r in lines.orderBy("member", "k").toLocalIterator():
            if r["member"] != current:
                if handle:
                    handle.close()
                info = zipfile.ZipInfo(r["member"], date_time=date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                handle = zf.open(info, "w")
                handle.write((HEADER + "\n").encode("utf-8"))
                current = r["member"]
            handle.write((r["line"] + "\n").encode("utf-8"))
            rows += 1
        if handle:
            handle.close()
    return rows


def export_wave(lines: DataFrame, destination: str, campaign_id: str, wave_id: str, stamp) -> tuple[str, int]:
    """Write `<destination>/<campaign_id>/<wave_id>.zip` (local or s3://); returns (uri, rows)."""
    name = f"{campaign_id}/{wave_id}.zip"
    if destination.startswith("s3://"):
        from campaign_pipeline.storage import split_s3, upload

        bucket, prefix = split_s3(destination)
        key = f"{prefix}/{name}" if prefix else name
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "wave.zip")
            rows = write_wave_zip(lines, local, stamp)
            upload([(Path(local), key)], bucket, "legacy export")
        return f"s3://{bucket}/{key}", rows
    target = Path(destination.removeprefix("file:")) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".zip.partial")
    rows = write_wave_zip(lines, str(partial), stamp)
    partial.replace(target)  # readers never see a half-written zip
    return str(target), rows
