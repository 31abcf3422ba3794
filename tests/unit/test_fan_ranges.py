"""Fan-range file layout: bounds from the registrations, one shuffle, range i in partition i."""

import datetime as dt

from pyspark.sql import functions as F

from campaign_pipeline.fan_ranges import by_fan_range, fan_bounds, partition_keys, spark_hash_int
from campaign_pipeline.frames import catalog_rows


def test_the_hash_port_agrees_with_sparks_hash_of_ints(spark):
    values = [*range(-300, 300), 2**31 - 1, -(2**31), 123_456_789, -987_654_321]
    df = spark.createDataFrame([(v,) for v in values], "v int")
    got = {r["v"]: r["h"] for r in df.select("v", F.hash("v").alias("h")).collect()}
    assert got == {v: spark_hash_int(v) for v in values}


def test_each_partition_key_lands_in_its_own_partition(spark):
    for n in (2, 3, 7, 16):
        keys = partition_keys(n)
        df = spark.createDataFrame([(k,) for k in keys], "k int").repartition(n, "k")
        assert sorted(df.select("k", F.spark_partition_id().alias("p")).collect()) == sorted(
            (k, p) for p, k in enumerate(keys)
        )


def test_rows_go_to_the_partition_of_their_fan_id_range(spark):
    fans = [f"fan-{i:04d}" for i in range(0, 1000, 7)]
    df = spark.createDataFrame([(f,) for f in fans] + [(None,)], "global_user_id string")
    bounds = ["fan-0200", "fan-0500", "fan-0800"]
    got = by_fan_range(df, bounds).select("global_user_id", F.spark_partition_id().alias("p")).collect()
    assert by_fan_range(df, bounds).rdd.getNumPartitions() == 4

    def expected(fan):
        return 3 if fan is None else sum(fan > b for b in bounds)

    assert all(r["p"] == expected(r["global_user_id"]) for r in got) and len(got) == len(fans) + 1


def test_bounds_split_the_fans_evenly_and_come_out_the_same_every_time(spark):
    df = spark.range(20_000).select(F.format_string("u%06d", (F.col("id") * 7919) % 20_000).alias("global_user_id"))
    bounds = fan_bounds(df, max_ranges=4, rows_per_range=5_000)
    assert bounds == fan_bounds(df, max_ranges=4, rows_per_range=5_000) and len(bounds) == 3
    sizes = [n for _, n in sorted(by_fan_range(df, bounds).groupBy(F.spark_partition_id()).count().collect())]
    assert len(sizes) == 4 and all(4_000 < n < 6_000 for n in sizes), sizes
    assert fan_bounds(df, max_ranges=4, rows_per_range=50_000) == []  # fewer fans than one range holds
    assert fan_bounds(df.limit(0), max_ranges=4) is None


def test_a_fan_lookup_table_is_written_a_range_of_fan_ids_per_file(spark, warehouse):
    t = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)
    fans = [f"fan-{(i * 37) % 400:03d}" for i in range(400)]
    lineage = {"source_file": "r.csv", "source_checksum": "x", "ingested_at": t, "run_id": "r1"}
    registrations = [
        {"campaign_id": "c1", "global_user_id": f, "market_preferences": [], "registered_at": t, "source_line": i}
        | lineage
        for i, f in enumerate(fans)
    ]
    warehouse.append("registrations", catalog_rows(spark, "registrations", registrations))
    warehouse.rows_per_range = 100
    scores = [
        {"campaign_id": "c1", "global_user_id": f, "eligible": True, "score_source": "model", "run_id": "r1"}
        for f in fans[::2]  # a later table holds some of the registered fans
    ]
    warehouse.replace("scores", catalog_rows(spark, "scores", scores).repartition(3), "c1")
    files = (
        spark.read.format("delta")
        .load(warehouse.path("scores"))
        .groupBy(F.input_file_name().alias("file"))
        .agg(F.min("global_user_id").alias("lo"), F.max("global_user_id").alias("hi"), F.count("*").alias("n"))
        .orderBy("lo")
        .collect()
    )
    bounds = warehouse.fan_bounds("c1")  # from the 400 registered fans, not from the 200 scored
    assert len(bounds) >= 1 and len(files) == len(bounds) + 1  # a file per range (shuffle partitions cap them)
    for before, after, bound in zip(files, files[1:], bounds, strict=False):
        assert before["hi"] <= bound < after["lo"]
    assert sum(f["n"] for f in files) == 200
