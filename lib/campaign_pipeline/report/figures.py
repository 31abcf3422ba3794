"""The campaign report's figures: small aggregates of the campaign's tables, computed by Spark.

Only counts reach the driver (a few hundred numbers at most, whatever the campaign's size): no
phone number, email, code or fan id is ever collected here, so nothing the report renders can
leak one.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN
from campaign_pipeline.config import Campaign
from campaign_pipeline.privacy import scrub_col
from campaign_pipeline.quality.reconcile import Balance, reason_category
from campaign_pipeline.times import aware

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
    weak_signals: list[dict] = field(default_factory=list)  # {signal, stealth_ring, review}: accounts per signal
    review_clusters: list[dict] = field(default_factory=list)  # {cluster, accounts, signals}: the largest REVIEW ones
    delivery: list[dict] = field(default_factory=list)  # {hour, channel, status, messages}
    quality: list[dict] = field(default_factory=list)  # latest result per expectation of every table
    balances: list[Balance] = field(default_factory=list)
    waves: list[dict] = field(default_factory=list)  # wave_rows + {channels: {channel: {planned, sent, ...}}}
    trend: list[dict] = field(default_factory=list)  # {computed_at, run_id, step, value}, this run's last
    previous: dict[str, int] | None = None  # the last report's headline figures (None: the first report)
    ingest_files: list[dict] = field(default_factory=list)  # {file, kind, lines, ingested, quarantined}
    quarantine: list[dict] = field(default_factory=list)  # {file, reason, rows}
    runs: list[dict] = field(default_factory=list)  # the last run of each stage
    failures: list[dict] = field(default_factory=list)  # {channel, reason, messages}, most frequent first

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
            "headline": self.headline(),
        }

    def deltas(self) -> dict[str, int | None]:
        """Each headline figure's change since the last report (None: no earlier report, or it did
        not record that figure)."""
        now = self.headline()
        if self.previous is None:
            return {k: None for k in now}
        return {k: (v - self.previous[k] if k in self.previous else None) for k, v in now.items()}

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


def compute(
    campaign: Campaign,
    read,
    run_id: str,
    generated_at: dt.datetime,
    balances: list[Balance],
    wave_attempts: int = 2,
    env_name: str = "local",
) -> Figures:
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

    weak_links(fig, read("registrants"))

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
    operations(fig, campaign, read, wave_attempts, env_name)
    return fig


# ---------------------------------------------------------------- what an operator runs the campaign from
# Pure transforms (DataFrames in, a small DataFrame out); `operations` collects them at the edge.

ROW_KEYS = ("rows_read", "registrants", "selected", "codes_held", "messages", "sent", "waves_sent")
TREND_STEPS = ("registrants", "eligible", "selected", "coded", "messages planned", "messages sent", "messages failed")


def wave_rows(waves: DataFrame, now: dt.datetime, wave_attempts: int, env_name: str = "local") -> DataFrame:
    """One row per wave: status, notify time, attempts, the run holding it while it sends, and
    why it needs an operator (null when it does not) with the command to run.

    A wave needs an operator when notify will not take it again by itself: failed or stopped
    mid-send after its last automatic attempt (`notify.wave_attempts`), or completed with failed
    messages (re-sending those is an operator's decision)."""
    attempts = F.coalesce(F.col("attempts"), F.lit(0))
    live_lease = F.col("lease_until").isNotNull() & (F.col("lease_until") > F.lit(now))
    paused = F.col("deferred_until").isNotNull() & (F.col("deferred_until") > F.lit(now))
    spent = attempts >= wave_attempts
    reason = (
        F.when((F.col("status") == "failed") & spent, F.format_string("failed after %d attempts", attempts))
        .when(
            # a wave the gateway paused is resumed by notify whatever its attempts
            (F.col("status") == "sending") & ~live_lease & F.col("deferred_until").isNull() & spent,
            F.format_string("stopped sending after %d attempts", attempts),
        )
        .when(
            (F.col("status") == "completed_with_failures"),
            F.format_string("%d messages failed", F.coalesce(F.col("failed"), F.lit(0))),
        )
    )
    return waves.select(
        "campaign_id",
        "wave_id",
        "notify_at",
        "status",
        attempts.alias("attempts"),
        F.when((F.col("status") == "sending") & live_lease, F.col("run_id")).alias("lease_owner"),
        F.when((F.col("status") == "sending") & live_lease, F.col("lease_until")).alias("lease_until"),
        F.when((F.col("status") == "sending") & paused, F.col("deferred_until")).alias("paused_until"),
        reason.alias("needs_operator"),
    ).withColumn("command", F.when(F.col("needs_operator").isNotNull(), retry_command(F.col("campaign_id"), env_name)))


def retry_command(campaign_id: Column, env_name: str = "local") -> Column:
    """What an operator runs for a wave notify no longer takes by itself (notify's own advice), in
    the environment the report ran in."""
    return F.concat(
        F.lit("campaign-pipeline notify --campaign conf/campaigns/"),
        campaign_id,
        F.lit(f".yaml --env {env_name} --retry-failed --wave "),
        F.col("wave_id"),
    )


def wave_channel_counts(messages: DataFrame, log: DataFrame) -> DataFrame:
    """Per (wave, channel): messages planned, and the outcomes recorded (sent, failed, skipped);
    pending = planned without an outcome."""
    planned = messages.groupBy("wave_id", "channel", "message_id").agg(F.lit(1).alias("_p"))
    outcomes = log.select("message_id", "status", F.col("wave_id").alias("_w"), F.col("channel").alias("_c"))
    joined = planned.join(outcomes, "message_id", "full_outer").select(
        F.coalesce("wave_id", "_w").alias("wave_id"),
        F.coalesce("channel", "_c", F.lit("?")).alias("channel"),
        F.col("_p").isNotNull().alias("is_planned"),
        "status",
    )
    n = lambda cond: F.sum(F.when(cond, 1).otherwise(0)).cast("long")  # noqa: E731
    return (
        joined.where(F.col("wave_id").isNotNull())
        .groupBy("wave_id", "channel")
        .agg(
            n(F.col("is_planned")).alias("planned"),
            n(F.col("status") == "sent").alias("sent"),
            n(F.col("status") == "failed").alias("failed"),
            n(F.col("status") == "skipped").alias("skipped"),
            n(F.col("is_planned") & F.col("status").isNull()).alias("pending"),
        )
    )


def funnel_trend(stats: DataFrame, steps: tuple[str, ...] = TREND_STEPS) -> DataFrame:
    """The funnel of every report run, long: (computed_at, run_id, step, value)."""
    return (
        stats.select("computed_at", "run_id", F.explode("funnel").alias("step", "value"))
        .where(F.col("step").isin(*steps))
        .select("computed_at", "run_id", "step", F.col("value").cast("long").alias("value"))
    )


def thin_snapshots(stats: DataFrame, keep_last: int = 24) -> DataFrame:
    """The snapshots a trend shows: the latest `keep_last` report runs, and before them the last of
    each UTC day (a report every 30 minutes over a season would be thousands of points)."""
    newest = Window.orderBy(F.col("computed_at").desc(), F.col("run_id").desc())
    day = F.floor(F.unix_seconds(F.col("computed_at")) / 86400)  # the UTC day, whatever the session's zone
    in_day = Window.partitionBy(day).orderBy(F.col("computed_at").desc(), F.col("run_id").desc())
    ranked = stats.withColumn("_n", F.row_number().over(newest)).withColumn("_d", F.row_number().over(in_day))
    return ranked.where((F.col("_n") <= keep_last) | (F.col("_d") == 1)).drop("_n", "_d")


def previous_snapshot(stats: DataFrame, run_id: str) -> DataFrame:
    """The latest snapshot of an earlier report run (at most one row): its headline figures, or
    for snapshots from before headlines were recorded, the funnel's figures of the same name."""
    earlier = stats.where(F.col("run_id") != run_id)
    latest = Window.orderBy(F.col("computed_at").desc(), F.col("run_id").desc())
    return (
        earlier.withColumn("_k", F.row_number().over(latest))
        .where("_k = 1")
        .select("computed_at", "run_id", F.coalesce("headline", "funnel").alias("figures"))
    )


def ingest_by_file(landing_files: DataFrame) -> DataFrame:
    """Per landing file (its name, not its path): lines read, rows ingested, rows quarantined."""
    return landing_files.select(
        F.substring_index("source_file", "/", -1).alias("file"),
        "kind",
        F.coalesce("rows_read", F.lit(0)).cast("long").alias("lines"),
        F.coalesce("rows_ingested", F.lit(0)).cast("long").alias("ingested"),
        F.coalesce("rows_quarantined", F.lit(0)).cast("long").alias("quarantined"),
    )


REVIEW_LISTED = 50


def weak_links(fig: Figures, registrants: DataFrame) -> None:
    """Weakly linked accounts per signal (STEALTH_RING or REVIEW), and the largest REVIEW clusters
    (at most `REVIEW_LISTED`, for an operator to look at)."""
    linked = registrants.where(F.col("weak_cluster_id").isNotNull()).select(
        "weak_cluster_id", "weak_signals", F.array_contains("tags", "STEALTH_RING").alias("stealth")
    )
    per_signal = (
        linked.select(F.explode("weak_signals").alias("signal"), "stealth")
        .groupBy("signal")
        .agg(
            F.sum(F.col("stealth").cast("long")).alias("stealth_ring"),
            F.sum((~F.col("stealth")).cast("long")).alias("review"),
        )
        .orderBy("signal")
        .collect()
    )
    fig.weak_signals = [r.asDict() for r in per_signal]
    review = (
        linked.where(~F.col("stealth"))
        .groupBy("weak_cluster_id")
        .agg(
            F.count(F.lit(1)).alias("accounts"),
            F.array_sort(F.array_distinct(F.flatten(F.collect_list("weak_signals")))).alias("signals"),
        )
        .orderBy(F.col("accounts").desc(), "weak_cluster_id")
        .limit(REVIEW_LISTED)
        .collect()
    )
    fig.review_clusters = [
        {"cluster": r["weak_cluster_id"], "accounts": r["accounts"], "signals": ", ".join(r["signals"])} for r in review
    ]


def quarantine_reasons(quarantine: DataFrame) -> DataFrame:
    """Quarantined rows per (stage, file, reason), the reason without the values it quoted."""
    reason = scrub_col(reason_category(F.col("reason")))
    return quarantine.groupBy(
        "stage", F.substring_index("source_file", "/", -1).alias("file"), reason.alias("reason")
    ).agg(F.count(F.lit(1)).alias("rows"))


def last_stage_runs(runs: DataFrame) -> DataFrame:
    """The last run of each stage (and of `maintain`): status, start, seconds, its main row count
    and its other figures. A run's `running` row counts only until its outcome row is written."""
    per_run = Window.partitionBy("run_id", "stage").orderBy(F.col("finished_at").desc_nulls_last(), F.col("status"))
    per_stage = Window.partitionBy("stage").orderBy(F.col("started_at").desc(), F.col("run_id").desc())
    outcome = runs.withColumn("_r", F.row_number().over(per_run)).where("_r = 1")
    figures = F.map_filter("counts", lambda k, _: ~k.startswith("ms:"))
    rows = F.coalesce(*[F.col("counts")[k] for k in ROW_KEYS])
    return (
        outcome.withColumn("_s", F.row_number().over(per_stage))
        .where("_s = 1")
        .select("stage", "run_id", "status", "started_at", "seconds", rows.alias("rows"), figures.alias("figures"),
                "error")
    )  # fmt: skip


def failure_reasons(log: DataFrame, top: int = 10) -> DataFrame:
    """The gateway's (and the queue's) most frequent reasons for failed messages, per channel,
    with contacts masked: (channel, reason, messages)."""
    failed = log.where(F.col("status") == "failed")
    reason = F.coalesce(scrub_col(F.substring("last_error", 1, 200)), F.lit("(no reason recorded)"))
    ranked = Window.orderBy(F.col("messages").desc(), F.col("channel"), F.col("reason"))
    return (
        failed.groupBy(F.coalesce("channel", F.lit("?")).alias("channel"), reason.alias("reason"))
        .agg(F.count(F.lit(1)).alias("messages"))
        .withColumn("_k", F.row_number().over(ranked))
        .where(F.col("_k") <= top)
        .drop("_k")
    )


def _utc(row) -> dict:
    """A collected row as a dict, its times aware UTC (Spark hands back naive local times)."""
    return {k: aware(v) if isinstance(v, dt.datetime) else v for k, v in row.asDict().items()}


def operations(fig: Figures, campaign: Campaign, read, wave_attempts: int, env_name: str = "local") -> None:
    """The figures an operator runs the campaign from: waves, trends, ingest, runs, failures."""
    by_wave: dict[str, dict] = {}
    for r in (
        wave_channel_counts(read("wave_messages"), read("notification_log")).orderBy("wave_id", "channel").collect()
    ):
        by_wave.setdefault(r["wave_id"], {})[r["channel"]] = {
            k: r[k] for k in ("planned", "sent", "failed", "skipped", "pending")
        }
    recorded = {
        r["wave_id"]: _utc(r) for r in wave_rows(read("waves"), fig.generated_at, wave_attempts, env_name).collect()
    }
    for w in sorted(campaign.waves, key=lambda w: (w.notify_at, w.wave_id)):
        row = recorded.pop(w.wave_id, None) or {
            "wave_id": w.wave_id, "notify_at": w.notify_at.astimezone(dt.UTC), "status": "not planned", "attempts": 0,
            "lease_owner": None, "lease_until": None, "paused_until": None, "needs_operator": None, "command": None,
        }  # fmt: skip
        fig.waves.append({**row, "channels": by_wave.get(w.wave_id, {})})
    for row in sorted(recorded.values(), key=lambda r: (r["notify_at"], r["wave_id"])):  # no longer configured
        fig.waves.append({**row, "channels": by_wave.get(row["wave_id"], {})})

    stats = read("campaign_stats")
    fig.trend = [
        _utc(r)
        for r in funnel_trend(thin_snapshots(stats.where(F.col("run_id") != fig.run_id)))
        .orderBy("computed_at", "step")
        .collect()
    ]
    fig.trend += [
        {"computed_at": fig.generated_at, "run_id": fig.run_id, "step": k, "value": v}
        for k, v in fig.funnel.items()
        if k in TREND_STEPS
    ]
    previous = previous_snapshot(stats, fig.run_id).first()
    fig.previous = dict(previous["figures"]) if previous is not None else None

    fig.ingest_files = [r.asDict() for r in ingest_by_file(read("landing_files")).orderBy("file").collect()]
    fig.quarantine = [
        r.asDict()
        for r in quarantine_reasons(read("quarantine"))
        .orderBy(F.col("rows").desc(), "file", "stage", "reason")
        .collect()
    ]
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    fig.runs = sorted(
        (_utc(r) for r in last_stage_runs(read("pipeline_runs")).collect()),
        key=lambda r: (order.get(r["stage"], len(order)), r["stage"]),
    )
    fig.failures = [
        r.asDict()
        for r in failure_reasons(read("notification_log"))
        .orderBy(F.col("messages").desc(), "channel", "reason")
        .collect()
    ]


# The stages in pipeline order (the report may not import the pipeline above it), then operations.
STAGE_ORDER = ("ingest", "screen", "score", "select", "assign_codes", "plan_waves", "notify", "report", "maintain")


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
