"""Parsing helpers: every bad value becomes null plus a reason, never an ANSI cast error."""

import datetime as dt

from chispa import assert_column_equality
from pyspark.sql import functions as F

from campaign_pipeline.ingest import sources as src
from campaign_pipeline.ingest.parse import (
    clean_string,
    parse_boolean,
    parse_landing_rows,
    parse_list_entries,
    parse_long,
    parse_markets,
    parse_timestamp,
)


def test_clean_string_trims_and_turns_blank_into_null(spark):
    df = spark.createDataFrame(
        [("  ann ", "ann"), ("   ", None), ("", None), (None, None), ("b\t", "b")], "raw string, expected string"
    ).withColumn("got", clean_string(F.col("raw")))
    assert_column_equality(df, "got", "expected")


def test_booleans_accept_true_false_1_0_yes_no_in_any_case(spark):
    rows = [
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("1", True),
        ("Y", True),
        ("false", False),
        ("No", False),
        ("0", False),
        ("f", False),
        ("maybe", None),
        ("", None),
        (None, None),
        ("2", None),
    ]
    df = spark.createDataFrame(rows, "raw string, expected boolean").withColumn("got", parse_boolean(F.col("raw")))
    assert_column_equality(df, "got", "expected")


def test_timestamps_need_a_zone_and_bad_ones_are_null_not_errors(spark):
    utc = dt.UTC
    rows = [
        ("2027-02-03T10:15:00Z", dt.datetime(2027, 2, 3, 10, 15, tzinfo=utc)),
        ("2027-02-03T11:15:00+01:00", dt.datetime(2027, 2, 3, 10, 15, tzinfo=utc)),
        ("2027-02-03 05:15:00-0500", dt.datetime(2027, 2, 3, 10, 15, tzinfo=utc)),
        ("2027-02-03T10:15:00.250Z", dt.datetime(2027, 2, 3, 10, 15, 0, 250000, tzinfo=utc)),
        ("2027-02-03", dt.datetime(2027, 2, 3, tzinfo=utc)),
        ("2027-02-03T10:15:00", None),  # no zone: ambiguous
        ("2027-02-31T25:61:00Z", None),
        ("yesterday", None),
        ("", None),
    ]
    df = spark.createDataFrame(rows, "raw string, expected timestamp").withColumn("got", parse_timestamp(F.col("raw")))
    assert_column_equality(df, "got", "expected")


def test_whole_numbers_accept_spreadsheet_decimals_and_reject_text(spark):
    rows = [
        ("12", 12),
        (" 7 ", 7),
        ("3.0", 3),
        ("-2", -2),
        ("1.5", None),
        ("abc", None),
        ("", None),
        ("99999999999999999999", None),
    ]
    df = spark.createDataFrame(rows, "raw string, expected long").withColumn("got", parse_long(F.col("raw")))
    assert_column_equality(df, "got", "expected")


def test_market_preferences_from_pipe_text_or_json_array_keep_order_and_drop_repeats(spark):
    rows = [
        ("NYC|LAX", ["NYC", "LAX"]),
        (" LAX | NYC |LAX", ["LAX", "NYC"]),
        ('["CHI","NYC"]', ["CHI", "NYC"]),
        ("NYC||", ["NYC"]),
        ("", None),
    ]
    df = spark.createDataFrame(rows, "raw string, expected array<string>").withColumn(
        "got", parse_markets(F.col("raw"))
    )
    assert_column_equality(df, "got", "expected")


def _registration(**values):
    base = {f: None for f in src.REGISTRATIONS.field_names}
    base.update(
        campaign_id="tour-test", global_user_id="U1", market_preferences="NYC-01", registered_at="2027-02-01T00:00:00Z"
    )
    base.update(values)
    return base


def _parse(spark, rows, campaign_id="tour-test"):
    cols = ["source_file", "source_line", "raw", "shape_problem", *src.REGISTRATIONS.field_names]
    data = [
        tuple(["f.csv", i + 1, "raw", r.pop("shape_problem", None)] + [r[c] for c in cols[4:]])
        for i, r in enumerate(rows)
    ]
    schema = "source_file string, source_line long, raw string, shape_problem string, " + ", ".join(
        f"{c} string" for c in cols[4:]
    )
    df = spark.createDataFrame(data, schema)
    return {
        r["source_line"]: r
        for r in df.transform(parse_landing_rows(src.REGISTRATIONS, campaign_id, ["NYC-01", "LAX-02"])).collect()
    }


def test_registration_reasons_name_the_field_and_what_was_expected(spark):
    out = _parse(
        spark,
        [
            _registration(),
            _registration(global_user_id="  "),
            _registration(registered_at="03/02/2027"),
            _registration(market_preferences=""),
            _registration(market_preferences="PARIS|ROME"),
            _registration(phone_confirmed="maybe"),
            _registration(campaign_id="other-tour"),
            _registration(shape_problem="wrong field count: expected 17, got 16"),
        ],
    )
    assert out[1]["reasons"] == []
    assert out[2]["reasons"] == ["missing required field global_user_id"]
    assert out[3]["reasons"] == ["registered_at: expected an ISO-8601 timestamp with zone, got '03/02/2027'"]
    assert out[4]["reasons"] == ["no market in market_preferences"]
    assert out[5]["reasons"] == ["market_preferences: no market of this campaign in 'PARIS|ROME'"]
    assert out[6]["reasons"] == ["phone_confirmed: expected true/false/1/0/yes/no, got 'maybe'"]
    assert out[7]["reasons"] == ["campaign_id: 'other-tour' is not this campaign ('tour-test')"]
    assert out[8]["reasons"] == ["wrong field count: expected 17, got 16"]


def test_unknown_markets_are_dropped_and_preferences_cut_to_four(spark):
    out = _parse(spark, [_registration(market_preferences="ROME|NYC-01|LAX-02|NYC-01")])
    assert out[1]["market_preferences"] == ["NYC-01", "LAX-02"]
    assert out[1]["reasons"] == []


def test_country_is_upper_cased_and_strings_trimmed(spark):
    out = _parse(spark, [_registration(country=" ca ", email="  Ann@Example.com ")])
    assert out[1]["country"] == "CA"
    assert out[1]["email"] == "Ann@Example.com"  # lower-casing is screening's job


def test_list_entries_are_validated_and_lower_cased(spark):
    df = spark.createDataFrame(
        [("f", 1, "x", None, "Bad@Example.COM"), ("f", 2, "x", None, "not-an-email")],
        "source_file string, source_line long, raw string, shape_problem string, entry string",
    )
    rows = {r["source_line"]: r for r in df.transform(parse_list_entries(src.BLOCKED_EMAILS)).collect()}
    assert rows[1]["entry"] == "bad@example.com" and rows[1]["reasons"] == []
    assert rows[2]["reasons"] == ["blocked_emails: expected an email address, got 'not-an-email'"]
