"""Message rendering speed: Spark's string functions against the Jinja2 pandas UDF, same templates.

    python benchmarks/render_bench.py [--messages 1000000] [--repeats 3]

Renders `--messages` messages (SMS and email alternately, the example campaign's templates, names
with accents, HTML characters and emoji) with the engine plan_waves picks for text-and-variable
templates (`spark`), and a tenth of them with the Jinja2 UDF every other template uses (`jinja`);
prints messages/s (median of `--repeats`) and checks that both engines agree on the rows both
rendered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from throughput import throughput_table, timed_runs

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from campaign_pipeline.config import load_campaign, load_environment
    from campaign_pipeline.session import build_session
    from campaign_pipeline.templating import VARIABLES
    from campaign_pipeline.waves.render import with_rendered

    spark = build_session(load_environment("local"), app_name="campaign-pipeline render bench")
    spark.sparkContext.setLogLevel("ERROR")
    campaign = load_campaign(str(ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml"))
    names = F.array(*[F.lit(n) for n in ("Ada", "Zoë", "O'Brien & <Sons>", "Łukasz", "Ana 🎸", "Jean-Luc")])

    def messages(n: int):
        i = F.col("id")
        values = {
            "campaign_name": F.lit(campaign.name), "artist": F.lit(campaign.artist),
            "market": F.concat(F.lit("Market "), (i % 50).cast("string")), "market_id": F.lit("NYC-01"),
            "event_date": F.lit("2027-05-01"), "wave_date": F.lit("2027-04-01"),
            "code": F.upper(F.substring(F.sha2(i.cast("string"), 256), 1, 10)),
            "link": F.lit("https://presale.example.com/c"),
            "first_name": F.element_at(names, (i % 6 + 1).cast("int")), "last_name": F.lit("Lee"),
        }  # fmt: skip
        return spark.range(n).select(
            "id",
            F.lit("en_US").alias("key"),
            F.when(i % 2 == 0, "sms").otherwise("email").alias("channel"),
            F.struct(*[values[v].alias(v) for v in VARIABLES]).alias("vars"),
        )

    def rendered(n: int, engine: str):
        m = messages(n)
        return with_rendered(m, campaign, "r", F.col("key"), F.col("channel"), F.col("vars"), engine).select("id", "r")

    sample = args.messages // 10
    a, b = rendered(sample, "spark").alias("a"), rendered(sample, "jinja").alias("b")
    differing = a.join(b, "id").where(~F.col("a.r").eqNullSafe(F.col("b.r"))).count()
    print(f"engines agree: {sample - differing:,} of {sample:,} messages identical")

    def totals(n: int, engine: str):
        return rendered(n, engine).agg(F.sum(F.length("r.text")), F.sum("r.sms_segments"), F.count("r.subject"))

    sizes = (("spark", args.messages), ("jinja", sample))
    # A fresh DataFrame each run: collecting one twice reuses its finished shuffle stages.
    rows = [
        (engine, n, timed_runs(lambda n=n, engine=engine: totals(n, engine).collect(), args.repeats))
        for engine, n in sizes
    ]
    print("\n" + throughput_table("engine", "messages", rows))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
