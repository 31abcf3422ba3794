"""`campaign-pipeline synth`: write a synthetic campaign (landing files, ground truth, campaign YAML)."""

from __future__ import annotations

import argparse

from campaign_pipeline.cli import Verb, spark_session
from campaign_pipeline.config import load_environment


def _arguments(synth: argparse.ArgumentParser) -> None:
    synth.add_argument(
        "--out", required=True, help="output root: writes <out>/<campaign_id>/ and <out>/<campaign_id>.yaml"
    )
    synth.add_argument("--registrants", type=int, default=200_000)
    synth.add_argument("--markets", type=int, default=12)
    synth.add_argument("--campaign-id", default="demo-tour")
    synth.add_argument("--seed", type=int, default=20270301)
    synth.add_argument("--files", type=int, default=0, help="registration files (default: one per million rows)")
    synth.add_argument(
        "--registrations-format",
        default="csv",
        choices=["csv", "tsv", "json", "parquet", "avro", "mixed"],
        help="mixed: half the files CSV, half JSON lines",
    )
    synth.add_argument(
        "--stealth-rings",
        type=int,
        default=None,
        help="stealth rings to plant (default: one per 1,000 registrants, at least one; 0: none)",
    )
    synth.add_argument(
        "--no-decoys",
        dest="decoys",
        action="store_false",
        help="plant no decoys (companies, campuses, families and new fans that must stay eligible)",
    )


def _run(args) -> int:
    from campaign_pipeline.synth import SynthSpec, generate

    env = load_environment(args.env)
    spark = spark_session(env, "campaign-pipeline synth")
    spec = SynthSpec(
        campaign_id=args.campaign_id,
        registrants=args.registrants,
        markets=args.markets,
        seed=args.seed,
        registration_files=args.files,
        registrations_format=args.registrations_format,
        stealth_rings=args.stealth_rings,
        decoys=args.decoys,
    )
    out = generate(spark, spec, args.out)
    print(f"landing files: {out.landing}\ncampaign config: {out.campaign_yaml}\nground truth: {out.truth}")
    return 0


SYNTH = Verb("synth", "generate a synthetic campaign (landing files, ground truth, YAML)", _arguments, _run)
