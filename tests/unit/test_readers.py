"""Readers keep every delivered row with its physical line number, whatever the format."""

import json

import pytest
from pyspark.sql import functions as F

from campaign_pipeline.errors import InputError
from campaign_pipeline.ingest import sources as src
from campaign_pipeline.ingest.readers import read_landing_file

HEADER = ",".join(src.REGISTRATIONS.field_names)


def _row(uid, prefs="NYC-01|LAX-02", last="Smith", ts="2027-02-01T10:00:00Z"):
    return f"tour-test,{uid},M1,a@b.com,212-555-0101,true,Ann,{last},en_US,US,10001,{prefs},{ts},1.2.3.4,d1,p1,false"


def test_csv_keeps_line_numbers_quoted_commas_and_flags_wrong_field_counts(spark, tmp_path):
    path = tmp_path / "registrations_a.csv"
    lines = [
        HEADER,
        _row("U1"),
        _row("U2", last='"Smith, Jr."'),
        "",  # blank line: not a row, but line numbers keep counting
        _row("U3", last='"O""Brien"'),
        _row("U4").rsplit(",", 1)[0],  # one field short
        _row("U5") + ",extra",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = {r["source_line"]: r for r in read_landing_file(spark, str(path), src.REGISTRATIONS, "csv").collect()}
    assert sorted(rows) == [2, 3, 5, 6, 7]
    assert rows[2]["global_user_id"] == "U1" and rows[2]["shape_problem"] is None
    assert rows[3]["last_name"] == "Smith, Jr."
    assert rows[5]["last_name"] == 'O"Brien'
    assert rows[6]["shape_problem"] == "wrong field count: expected 17, got 16"
    assert rows[7]["shape_problem"] == "wrong field count: expected 17, got 18"
    assert rows[6]["raw"] == lines[5]


def test_columns_may_come_in_any_order_and_case(spark, tmp_path):
    path = tmp_path / "fan_activity.csv"
    path.write_text("Tickets_Purchased_24m,GLOBAL_USER_ID\n3,U1\n", encoding="utf-8")
    row = read_landing_file(spark, str(path), src.FAN_ACTIVITY, "csv").first()
    assert (row["global_user_id"], row["tickets_purchased_24m"], row["chargebacks_24m"]) == ("U1", "3", None)


def test_a_file_without_a_required_column_is_refused_before_anything_is_read(spark, tmp_path):
    path = tmp_path / "registrations_b.csv"
    path.write_text("campaign_id,global_user_id,email\ntour-test,U1,a@b.com\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_landing_file(spark, str(path), src.REGISTRATIONS, "csv")
    assert str(info.value).startswith(
        f"{path}: line 1 (header): required columns market_preferences, registered_at missing"
    )


def test_tsv_scores_carry_unknown_columns_along(spark, tmp_path):
    path = tmp_path / "scored_v2.tsv"
    path.write_text(
        "campaign_id\tglobal_user_id\tscore\tmodel\tsegment\ntour-test\tU1\t0.97\tgbm-3\tsuperfan\n", encoding="utf-8"
    )
    row = read_landing_file(spark, str(path), src.SCORED, "tsv").first()
    assert (row["score"], row["extra"]) == ("0.97", {"model": "gbm-3", "segment": "superfan"})


def test_json_lines_take_arrays_and_report_broken_lines(spark, tmp_path):
    path = tmp_path / "registrations_c.jsonl"
    good = {
        "campaign_id": "tour-test",
        "global_user_id": "U1",
        "market_preferences": ["LAX-02", "NYC-01"],
        "registered_at": "2027-02-01T10:00:00Z",
        "phone_confirmed": True,
        "Email": "x@y.z",
    }
    path.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    rows = {r["source_line"]: r for r in read_landing_file(spark, str(path), src.REGISTRATIONS, "json").collect()}
    assert json.loads(rows[1]["market_preferences"]) == ["LAX-02", "NYC-01"]
    assert (rows[1]["phone_confirmed"], rows[1]["email"]) == ("true", "x@y.z")
    assert rows[2]["shape_problem"] == "not a JSON object" and rows[2]["raw"] == "{not json"


def _one_file(df, target, fmt: str):
    """`df` written by Spark as one `fmt` file at `target` (a landing file, not a folder of parts)."""
    out = target.parent / f"{target.name}.out"
    df.coalesce(1).write.format(fmt).save(str(out))
    next(p for p in out.iterdir() if p.name.startswith("part-")).rename(target)
    return target


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_columnar_files_number_rows_and_turn_typed_values_into_text(spark, tmp_path, fmt):
    import datetime as dt

    df = spark.createDataFrame(
        [
            ("tour-test", "U1", ["NYC-01"], dt.datetime(2027, 2, 1, 10, tzinfo=dt.UTC), True),
            ("tour-test", "U2", ["LAX-02", "NYC-01"], dt.datetime(2027, 2, 2, 10, tzinfo=dt.UTC), None),
        ],
        "campaign_id string, global_user_id string, market_preferences array<string>, registered_at timestamp, do_not_text boolean",
    )
    target = _one_file(df, tmp_path / f"registrations_d.{fmt}", fmt)
    rows = {r["source_line"]: r for r in read_landing_file(spark, str(target), src.REGISTRATIONS, fmt).collect()}
    assert rows[1]["registered_at"] == "2027-02-01T10:00:00.000000Z"
    assert json.loads(rows[2]["market_preferences"]) == ["LAX-02", "NYC-01"]
    assert (rows[1]["do_not_text"], rows[2]["do_not_text"]) == ("true", None)
    assert json.loads(rows[2]["raw"])["global_user_id"] == "U2"


def test_line_numbers_are_physical_even_when_spark_splits_the_file(spark, tmp_path):
    path = tmp_path / "fanlist_ranks.csv"
    n = 5000
    path.write_text("global_user_id,rank\n" + "".join(f"U{i:06d},{i}\n" for i in range(1, n + 1)), encoding="utf-8")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8k")
    try:
        df = read_landing_file(spark, str(path), src.FANLIST_RANKS, "csv")
        assert df.rdd.getNumPartitions() > 5
        wrong = df.where(F.col("source_line") != F.col("rank").cast("long") + 1).count()
        assert (df.count(), wrong) == (n, 0)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")


def test_gzip_compressed_csv_is_read(spark, tmp_path):
    import gzip

    path = tmp_path / "code_pool.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("code,market_id\nAAAA1111,NYC-01\nBBBB2222,\n")
    rows = sorted(
        (r["source_line"], r["code"], r["market_id"])
        for r in read_landing_file(spark, str(path), src.CODE_POOL, "csv").collect()
    )
    assert rows == [(2, "AAAA1111", "NYC-01"), (3, "BBBB2222", None)]


def test_latin1_bytes_are_quarantined_as_utf8_and_decoded_when_the_campaign_names_the_encoding(spark, tmp_path):
    path = tmp_path / "registrations_latin1.csv"
    lines = [HEADER, _row("U1", last="M\xfcller"), _row("U2", last="Smith")]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    utf8 = {r["source_line"]: r for r in read_landing_file(spark, str(path), src.REGISTRATIONS, "csv").collect()}
    assert utf8[2]["shape_problem"].startswith("invalid UTF-8 bytes (if the file is in another encoding, set ")
    assert utf8[3]["shape_problem"] is None and utf8[3]["last_name"] == "Smith"
    latin1 = read_landing_file(spark, str(path), src.REGISTRATIONS, "csv", "ISO-8859-1").collect()
    assert {r["source_line"]: (r["last_name"], r["shape_problem"]) for r in latin1} == {
        2: ("Müller", None),
        3: ("Smith", None),
    }


def test_json_keys_given_twice_quarantine_the_line_instead_of_stopping_the_file(spark, tmp_path):
    path = tmp_path / "registrations_dup.jsonl"
    path.write_text(
        '{"global_user_id": "U1", "email": "a@b.com"}\n'
        '{"global_user_id": "U2", "Email": "a@b.com", "email": "c@d.com"}\n'
        '{"global_user_id": "U3", "email": "a@b.com", "email": "c@d.com"}\n'
        "[1, 2]\n"
        # single quotes and NaN are JSON Spark reads; the key given twice is still found
        "{'global_user_id': 'U5', 'EMAIL': 'a@b.com', 'email': 'c@d.com'}\n"
        '{"global_user_id": "U6", "Phone": NaN, " phone ": "1"}\n'
    )
    rows = {r["source_line"]: r for r in read_landing_file(spark, str(path), src.REGISTRATIONS, "json").collect()}
    assert rows[1]["shape_problem"] is None and rows[1]["email"] == "a@b.com"
    assert rows[2]["shape_problem"] == "duplicate key 'email' (keys are matched case-insensitively)"
    assert rows[3]["shape_problem"] == "duplicate key 'email' (keys are matched case-insensitively)"
    assert rows[4]["shape_problem"] == "not a JSON object"
    assert rows[5]["shape_problem"] == "duplicate key 'email' (keys are matched case-insensitively)"
    assert rows[6]["shape_problem"] == "duplicate key 'phone' (keys are matched case-insensitively)"


def test_a_quoted_field_left_open_at_the_end_of_a_line_is_never_ingested_truncated(spark, tmp_path):
    path = tmp_path / "registrations_open.csv"
    path.write_text("\n".join([HEADER, _row("U1")[: -len("false")] + '"fal', 'se"', _row("U2")]) + "\n")
    rows = {
        r["source_line"]: r["shape_problem"]
        for r in read_landing_file(spark, str(path), src.REGISTRATIONS, "csv").collect()
    }
    assert rows[2].startswith("unbalanced double quote") and rows[3].startswith("unbalanced double quote")
    assert rows[4] is None


def test_a_folder_of_parquet_parts_is_one_file_numbered_across_its_parts(spark, tmp_path):
    folder = tmp_path / "fan_activity.parquet"
    spark.range(10).selectExpr("format_string('U%d', id) AS global_user_id").repartition(3).write.parquet(str(folder))
    rows = read_landing_file(spark, str(folder), src.FAN_ACTIVITY, "parquet").collect()
    assert sorted(r["source_line"] for r in rows) == list(range(1, 11))
    assert {r["source_file"] for r in rows} == {str(folder)}


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_typed_numbers_and_times_of_a_columnar_file_parse_as_their_text_would(spark, tmp_path, fmt):
    """Whole numbers and timestamps of Parquet/Avro are taken as typed, not read back from text: the
    rows, reasons included, are the ones the text gives, at the edges of what the text takes too."""
    import datetime as dt

    from campaign_pipeline.ingest.parse import parse_landing_rows

    largest, utc = 10**18 - 1, dt.UTC
    values = [
        (dt.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=utc), 0, 3, largest),
        (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc), -largest, -1, largest + 1),
        (dt.datetime(999, 1, 1, tzinfo=utc), -(2**63), 2**31 - 1, 2**63 - 1),
        (dt.datetime(1000, 1, 1, tzinfo=utc), None, -(2**31), -largest - 1),
        (None, 12, 0, -3),
    ]
    df = spark.createDataFrame(
        [(f"U{i}", *v) for i, v in enumerate(values)],
        "global_user_id string, account_created_at timestamp, tickets_purchased_24m long, "
        "events_attended_24m int, chargebacks_24m long",
    )
    target = _one_file(df, tmp_path / f"fan_activity_t.{fmt}", fmt)
    raw = read_landing_file(spark, str(target), src.FAN_ACTIVITY, fmt)
    assert {"_v_account_created_at", "_v_tickets_purchased_24m", "_v_chargebacks_24m"} <= set(raw.columns)
    parse = parse_landing_rows(src.FAN_ACTIVITY, "tour-test", ["NYC-01"])
    as_typed = raw.transform(parse).orderBy("source_line").collect()
    as_text = raw.drop(*[c for c in raw.columns if c.startswith("_v_")]).transform(parse).orderBy("source_line")
    assert as_typed == as_text.collect()
    assert [r["account_created_at"] for r in as_typed][:2] == [v[0].replace(tzinfo=None) for v in values[:2]]
    assert [bool(r["reasons"]) for r in as_typed] == [False, True, True, True, True]  # the last: a count < 0
