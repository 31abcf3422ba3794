"""The campaign report's figures: small aggregates of the campaign's tables, computed by Spark.

Only counts reach the driver (a few hundred numbers at most, whatever the campaign's size): no
phone number, email, code or fan id is ever collected here, so nothing the report renders can
leak one.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN
from campaign_pipeline.config import Campaign
from campaign_pipeline.quality.reconcile import Balance

SCORE_BINS = 20
# Identity-cluster sizes, grouped: a size-1 cluster is an account that shares nothing.
CLUSTER_BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 5, "3–5"), (6, 10, "6–10"), (11, 50, "11–50"), (51, None, "51+"))


@dataclass
class Figures:
    campaign_id: str
    campaign_name: str
    generated_at: dt.datetime
    run_id: str
    funnel: dict[str, int] = field(default_factory=dict)
    bands: list[str] = field(default_factory=list)  # highest first
    score_histogram: list[dict] = field(default_factory=list)  # {bin, band, fans}
    markets: list[dict] = field(default_factory=list)  # {market_id, name, capacity, selected, ...}
    band_rates: list[dict] = field(default_factory=list)  # {band, candidates, selected, rate}
    reasons: dict[str, int] = field(default_factory=dict)
    clusters: list[dict] = field(default_factory=list)  # {size, clusters, accounts}
    delivery: list[dict] = field(default_factory=list)  # {hour, channel, status, messages}
    quality: list[dict] = field(default_factory=list)  # latest result per expectation of every table
    balances: list[Balance] = field(default_factory=list)

    def stats_row(self) -> dict:
        """The `campaign_stats` snapshot of this report."""
        per_market = {
            m["market_id"]: {k: int(v) for k, v in m.items() if isinstance(v, int) and not isinstance(v, bool)}
            for m in self.markets
        }
        return {
            "campaign_id": self.campaign_id,
            "run_id": self.run_id,
            "computed_at": self.generated_at,
            "funnel": dict(self.funnel),
            "per_market": per_market,
        }

    def headline(self) -> dict[str, int]:
        f = self.funnel
        critical = sum(1 for q in self.quality if not q["success"] and q["severity"] == "critical")
        warned = sum(1 for q in self.quality if not q["success"] and q["severity"] != "critical")
        return {
            "registrants": f.get("registrants", 0),
            "eligible": f.get("eligible", 0),
            "selected": f.get("selected", 0),
            "coded": f.get("coded", 0),
            "messages sent": f.get("messages sent", 0),
            "messages failed": f.get("messages failed", 0),
            "critical checks failed": critical,
            "warnings": warned,
            "reconciliation breaks": sum(not b.balanced for b in self.balances),
        }


def fan_facts(read):
    """One row per registrant: eligibility, band, first choice, selected or not (no personal data)."""
    registrants = read("registrants").select(
        *FAN, "eligible", F.try_element_at("market_preferences", F.lit(1)).alias("first_choice")
    )
    scores = read("scores").select(*FAN, "band", F.col("raw_score").isNotNull().alias("scored"))
    verdicts = read("selections").groupBy(*FAN).agg(F.max((F.col("verdict") == "selected").cast("int")).alias("sel"))
    return registrants.join(scores, FAN, "left").join(verdicts, FAN, "left")


def compute(campaign: Campaign, read, run_id: str, generated_at: dt.datetime, balances: list[Balance]) -> Figures:
    """Every figure of the report; `read(table)` gives the campaign's rows of a table."""
    fig = Figures(campaign.campaign_id, campaign.name, generated_at, run_id, balances=balances)
    fig.bands = [b.name for b in sorted(campaign.scoring.bands, key=lambda b: -b.min)]

    facts = (
        fan_facts(read)
        .groupBy("eligible", "band", "first_choice", "scored", "sel")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    )
    registrants = sum(r["n"] for r in facts)
    eligible = sum(r["n"] for r in facts if r["eligible"])
    scored = sum(r["n"] for r in facts if r["eligible"] and r["scored"])
    selected_fans = sum(r["n"] for r in facts if r["sel"])

    by = {b.check: b for b in balances}
    registrations = by.get("registrations→registrants")
    codes = by.get("selected→codes")
    waves = by.get("codes→waves")
    outcomes = [b for b in balances if b.check.startswith("messages→outcomes:")]
    fig.funnel = {
        "registration rows": registrations.left_count if registrations else read("registrations").count(),
        "registrants": registrants,
        "eligible": eligible,
        "eligible and scored": scored,
        "selected": selected_fans,
        "coded": codes.parts.get("coded", 0) if codes else 0,
        "in a wave": sum(v for k, v in waves.parts.items() if k.startswith("in ")) if waves else 0,
        "messages planned": sum(b.left_count for b in outcomes),
        "messages sent": sum(b.parts.get("sent", 0) for b in outcomes),
        "messages failed": sum(b.parts.get("failed", 0) for b in outcomes),
    }

    for band in [*fig.bands, None]:
        rows = [r for r in facts if r["eligible"] and r["scored"] and r["band"] == band]
        candidates = sum(r["n"] for r in rows)
        if band is None and not candidates:
            continue
        chosen = sum(r["n"] for r in rows if r["sel"])
        fig.band_rates.append(
            {"band": band or "below every band", "candidates": candidates, "selected": chosen,
             "rate": chosen / candidates if candidates else 0.0}
        )  # fmt: skip

    selections = read("selections")
    per_market = {
        (r["market_id"], r["verdict"]): r["n"]
        for r in selections.groupBy("market_id", "verdict").agg(F.countDistinct(*FAN).alias("n")).collect()
    }
    coded = {
        r["market_id"]: r["n"]
        for r in read("code_assignments").groupBy("market_id").count().withColumnRenamed("count", "n").collect()
    }
    for m in campaign.markets:
        first = [r for r in facts if r["first_choice"] == m.market_id]
        first_eligible = sum(r["n"] for r in first if r["eligible"])
        first_selected = sum(r["n"] for r in first if r["sel"])
        fig.markets.append(
            {
                "market_id": m.market_id,
                "name": m.name,
                "capacity": m.capacity,
                "selected": per_market.get((m.market_id, "selected"), 0),
                "waitlisted": per_market.get((m.market_id, "waitlisted"), 0),
                "coded": coded.get(m.market_id, 0),
                "first_choice": sum(r["n"] for r in first),
                "first_choice_eligible": first_eligible,
                "first_choice_selected": first_selected,
                "rate": first_selected / first_eligible if first_eligible else 0.0,
            }
        )

    fig.score_histogram = [
        {"bin": r["bin"], "band": r["band"] or "below every band", "fans": r["n"]}
        for r in read("scores")
        .where(F.col("raw_score").isNotNull())
        .groupBy(
            F.least(F.floor(F.col("raw_score") * SCORE_BINS), F.lit(SCORE_BINS - 1)).cast("int").alias("bin"), "band"
        )
        .agg(F.count(F.lit(1)).alias("n"))
        .orderBy("bin", "band")
        .collect()
    ]

    reasons = read("registrants").select(F.explode("ineligible_reasons").alias("r")).groupBy("r").count().collect()
    fig.reasons = dict(sorted(((r["r"], r["count"]) for r in reasons), key=lambda kv: (-kv[1], kv[0])))

    sizes = {r["cluster_size"]: r["count"] for r in read("registrants").groupBy("cluster_size").count().collect()}
    for low, high, label in CLUSTER_BUCKETS:
        accounts = sum(n for s, n in sizes.items() if s is not None and s >= low and (high is None or s <= high))
        clusters = sum(n // s for s, n in sizes.items() if s and s >= low and (high is None or s <= high))
        fig.clusters.append({"size": label, "clusters": clusters, "accounts": accounts})

    when = F.date_trunc("hour", F.coalesce("sent_at", "logged_at"))
    fig.delivery = [
        {"hour": r["hour"], "channel": r["channel"] or "?", "status": r["status"], "messages": r["n"]}
        for r in read("notification_log")
        .groupBy(when.alias("hour"), "channel", "status")
        .agg(F.count(F.lit(1)).alias("n"))
        .where(F.col("hour").isNotNull())
        .orderBy("hour", "channel", "status")
        .collect()
    ]
    fig.quality = latest_quality(read)
    return fig


def latest_quality(read) -> list[dict]:
    """Each table's latest checked run (one row per expectation), as `dq_results` holds it."""
    from pyspark.sql import Window

    dq = read("dq_results").withColumn("at", F.coalesce("checked_at", F.to_timestamp(F.lit("1970-01-01"))))
    latest = dq.groupBy("table").agg(F.max_by("run_id", F.struct("at", "run_id")).alias("latest"))
    rows = (
        dq.join(latest, "table")
        .where(F.col("run_id") == F.col("latest"))
        .withColumn("k", F.row_number().over(Window.partitionBy("table", "expectation").orderBy(F.col("at").desc())))
        .where("k = 1")
        .select("table", "expectation", "severity", "success", "observed", "result", "run_id", "checked_at")
        .orderBy("table", "expectation")
        .collect()
    )
    out = []
    for r in rows:
        try:
            observed = json.loads(r["observed"] or "{}")
        except ValueError:
            observed = {}
        out.append(
            {
                "table": r["table"],
                "expectation": r["expectation"],
                "severity": r["severity"] or "critical",
                "success": bool(r["success"]),
                "observed": observed,
                "run_id": r["run_id"],
                "checked_at": r["checked_at"],
                "result": r["result"],  # great-expectations' JSON, for Data Docs (counts only)
            }
        )
    return out
