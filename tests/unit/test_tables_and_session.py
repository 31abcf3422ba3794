"""Table catalog guarantees and the version check."""

import datetime as dt

import pytest
from pyspark.sql import functions as F

from campaign_pipeline.errors import SchemaError, VersionError
from campaign_pipeline.session import check_versions
from campaign_pipeline.tables import CATALOG


def _quarantine_row(spark, campaign_id="c1", line=1):
    return spark.createDataFrame(
        [
            (
                campaign_id,
                "ingest",
                "f.csv",
                line,
                "raw",
                "reason",
                "run-1",
                None,
                dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
            )
        ],
        CATALOG["quarantine"].schema,
    )


def test_writing_data_with_a_missing_or_extra_column_names_the_column(spark, warehouse):
    with pytest.raises(SchemaError) as missing:
        warehouse.append("quarantine", _quarantine_row(spark).drop("reason"))
    assert "column 'reason' (string) is missing" in str(missing.value)
    with pytest.raises(SchemaError) as extra:
        warehouse.append("quarantine", _quarantine_row(spark).withColumn("surprise", F.lit(1)))
    assert "column 'surprise' is not in the table catalog" in str(extra.value)
    assert not warehouse.exists("quarantine") or warehouse.read("quarantine").count() == 0


def test_an_existing_table_that_drifted_from_the_catalog_is_refused(spark, warehouse):
    drifted = _quarantine_row(spark).withColumn("line", F.col("line").cast("string"))
    drifted.write.format("delta").save(warehouse.path("quarantine"))
    with pytest.raises(SchemaError) as info:
        warehouse.read("quarantine")
    assert "column 'line' is string, expected bigint" in str(info.value)


def test_replace_touches_one_campaign_and_merge_never_doubles(spark, warehouse):
    warehouse.append("quarantine", _quarantine_row(spark, "c1").unionByName(_quarantine_row(spark, "c2")))
    warehouse.replace("quarantine", _quarantine_row(spark, "c1", line=7), "c1")
    assert sorted((r["campaign_id"], r["line"]) for r in warehouse.read("quarantine").collect()) == [
        ("c1", 7),
        ("c2", 1),
    ]
    warehouse.merge("quarantine", _quarantine_row(spark, "c2"))
    warehouse.merge("quarantine", _quarantine_row(spark, "c2"))
    assert warehouse.read("quarantine", "c2").count() == 1


def test_reading_a_table_never_written_gives_an_empty_frame_and_creates_nothing(warehouse):
    assert warehouse.read("registrants", "c1").count() == 0
    assert not warehouse.exists("registrants")


def test_mismatched_pyspark_and_delta_versions_fail_naming_both():
    check_versions("4.0.2", "4.0.1")
    with pytest.raises(VersionError) as info:
        check_versions("4.0.2", "3.3.2")
    assert "Delta Lake 3.3.2 does not work with Spark/pyspark 4.0.2" in str(info.value)
    with pytest.raises(VersionError):
        check_versions("4.0.2", None)


def _assignment(spark, code_type):
    from campaign_pipeline.tables import catalog_rows

    row = {"campaign_id": "c1", "market_id": "NYC-01", "global_user_id": "F1", "code": "C-1",
           "code_type": code_type, "assigned_at": dt.datetime(2027, 1, 1, tzinfo=dt.UTC), "run_id": "r"}  # fmt: skip
    return catalog_rows(spark, "code_assignments", [row])


def test_a_table_is_created_with_its_check_constraints_and_an_older_table_is_given_them(spark, warehouse, tmp_path):
    from campaign_pipeline.tables import Warehouse

    warehouse.append("code_assignments", _assignment(spark, "pool"))
    with pytest.raises(Exception, match="code_type_known"):  # Delta's CHECK constraint violation
        warehouse.append("code_assignments", _assignment(spark, "bogus"))
    assert warehouse.read("code_assignments").count() == 1
    # a table created without the constraints (as an older release did) is given them when opened
    older = Warehouse(spark, str(tmp_path / "older"))
    _assignment(spark, "pool").limit(0).write.format("delta").save(older.path("code_assignments"))
    older.ensure("code_assignments")
    table = f"delta.`{older.path('code_assignments')}`"
    properties = {r["key"] for r in spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}
    assert {"delta.constraints.code_type_known", "delta.constraints.code_unless_tm"} <= properties
    with pytest.raises(Exception, match="code_type_known"):
        older.append("code_assignments", _assignment(spark, "bogus"))
