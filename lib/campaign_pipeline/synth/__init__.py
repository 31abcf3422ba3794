"""Synthetic campaigns: seeded, realistic landing files with known ground truth.

- `synth.spec`: what is generated — the population, every planted case (duplicate accounts,
  scalper rings, phones with no/invalid/shared/foreign numbers, blocked/disposable/allow-listed
  emails, do-not-text, malformed rows) with its rate and the tags or quarantine reason it must
  produce;
- `synth.accounts`: how the accounts' columns are drawn (seeded hashes, no driver memory);
- `synth.stealth`: stealth rings (scalper operations sharing no exact identifier, only weak
  signals) and decoys (honest fans sharing single weak signals), carved from would-be genuine
  single accounts so every other account stays as it was;
- `synth.writers`: the landing files and the truth.

Output under `<out>/`: `<campaign_id>/` (landing files), `<campaign_id>/_truth/accounts`
(Parquet ground truth with `expected_tags` per account, ignored by ingest) and
`<campaign_id>.yaml` (a matching campaign config).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from pyspark.sql import SparkSession

from campaign_pipeline.config import dump_campaign
from campaign_pipeline.synth import writers as w
from campaign_pipeline.synth.accounts import Draw, accounts, code_pool, fan_activity, make_campaign
from campaign_pipeline.synth.spec import ALLOWED_PATTERN, BLOCKED_DOMAIN, MALFORMED, SynthOutput, SynthSpec

__all__ = ["MALFORMED", "SynthOutput", "SynthSpec", "generate", "output_paths"]


def output_paths(spec: SynthSpec, out: str) -> tuple[Path, Path, Path]:
    """(landing folder, ground-truth folder, campaign config) of `spec`'s campaign under `out`."""
    landing = Path(out) / spec.campaign_id
    return landing, landing / "_truth" / "accounts", Path(out) / f"{spec.campaign_id}.yaml"


def _tidy_landing(landing: Path) -> None:
    """Drop Hadoop's checksum side files and give single files their plain names."""
    for crc in landing.glob(".*.crc"):
        crc.unlink()
    for stale in landing.glob("*_000.txt"):
        stale.rename(landing / stale.name.replace("_000", ""))
    for single, name in (("code_pool_000.csv", "code_pool.csv"), ("fan_activity_000.parquet", "fan_activity.parquet")):
        if (landing / single).exists():
            (landing / single).rename(landing / name)


def generate(spark: SparkSession, spec: SynthSpec, out: str) -> SynthOutput:
    """Write a synthetic campaign under `out` and return where everything is."""
    campaign = make_campaign(spec)
    landing, truth, yaml_path = output_paths(spec, out)
    Path(out).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    dest = str(landing.resolve())
    n_files = spec.registration_files or max(1, math.ceil(spec.registrants / 1_000_000))
    d = Draw(spec.seed)

    spark.sparkContext.setJobDescription(f"synth: {spec.registrants:,} registrants")
    acc = accounts(spark, spec, campaign).persist()
    bad = w.write_registrations(spark, spec, acc, dest, n_files)
    w.write_parquet_file(spark, fan_activity(d, acc), dest, "fan_activity")
    w.write_code_pool(spark, code_pool(spark, d, campaign), dest)
    w.write_blocked_emails(spark, acc, dest)
    (landing / "blocked_domains.txt").write_text(f"# resale operations\n{BLOCKED_DOMAIN}\n", encoding="utf-8")
    (landing / "allowed_patterns.txt").write_text(f"# partner staff\n{ALLOWED_PATTERN}\n", encoding="utf-8")
    _tidy_landing(landing)
    w.write_truth(acc, bad, str(truth))
    acc.unpersist()

    dump_campaign(campaign, yaml_path)
    return SynthOutput(str(landing), str(truth), str(yaml_path), campaign)
