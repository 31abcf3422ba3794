"""Phone normalisation speed, and the JVM parser held to the Python port on a messy corpus.

    python benchmarks/phones_bench.py [--corpus 100000] [--rows 2000000] [--repeats 3]

1. Builds `--corpus` messy (number, region) pairs (`campaign_pipeline.synth.phone_corpus`) and
   compares, pair by pair, what the JVM class (`PhoneDetails`) returns through Spark with what
   the Python port (`parse_phone`) returns. Any difference fails the benchmark.
2. Times both parsers through Spark (`local[*]`) on `--rows` rows drawn from the corpus (the
   Python port on a tenth of them): numbers per second, median of `--repeats`.
"""

from __future__ import annotations

import argparse
import sys

from throughput import throughput_table, timed_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from campaign_pipeline.config import load_environment
    from campaign_pipeline.screening.phones import parse_phone, phone_details
    from campaign_pipeline.session import build_session
    from campaign_pipeline.synth.phone_corpus import messy_phones

    spark = build_session(load_environment("local"), app_name="campaign-pipeline phones bench")
    spark.sparkContext.setLogLevel("ERROR")
    corpus = messy_phones(args.corpus)
    pairs = spark.createDataFrame(
        [(i, p, c) for i, (p, c) in enumerate(corpus)], "i long, phone string, country string"
    ).cache()
    pairs.count()

    # 1. Identical results, pair by pair.
    region = F.coalesce(F.nullif(F.upper(F.trim("country")), F.lit("")), F.lit("US"))
    jvm = pairs.select(
        "i", region.alias("region"), phone_details(F.col("phone"), F.col("country"), "US", "jvm").alias("p")
    )
    differences, valid = 0, 0
    for row in jvm.toLocalIterator():
        phone, _ = corpus[row.i]
        expected = parse_phone(phone, row.region)
        valid += bool(expected[3])
        if tuple(row.p) != expected:
            differences += 1
            if differences <= 10:
                print(f"  differs: {phone!r} region {row.region!r}: jvm {tuple(row.p)} python {expected}")
    print(f"corpus: {len(corpus):,} pairs, {valid:,} valid, JVM vs Python port: {differences} differences")

    # 2. Throughput through Spark.
    def parsed(parser_name: str, rows: int):
        drawn = spark.range(rows).select((F.col("id") % len(corpus)).alias("i")).join(F.broadcast(pairs), "i")
        out = drawn.select(phone_details(F.col("phone"), F.col("country"), "US", parser_name).alias("p"))
        return out.agg(F.count_if("p.valid"), F.sum(F.crc32(F.coalesce("p.e164", F.lit("")))))

    sizes = (("jvm", args.rows), ("python", args.rows // 10))
    rows = [(name, n, timed_runs(parsed(name, n).collect, args.repeats)) for name, n in sizes]
    print("\n" + throughput_table("parser", "numbers", rows))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
