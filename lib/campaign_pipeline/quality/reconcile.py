"""Reconciliation across stages: the counts carried from one table to the next must balance.

Each check compares a count read from one table (left) with the sum of terms read from the next
(right); `parts` holds the right side's terms. A check that does not balance is a break, and the
report stage fails on it with both counts named. The checks, per campaign:

- `landing:<file>` — rows read from a landing file (the manifest, `landing_files`) = rows
  ingested into its table + rows quarantined, per reason (values stripped);
- `registrations→registrants` — registration rows = registrants + duplicate registrations merged
  (a fan who registered more than once keeps his latest registration);
- `registrants→verdicts` — registrants = selected + waitlisted + rejected (per first reason listed);
- `selected→codes` — selected (fan, market) pairs = code rows + `NO_CODE_AVAILABLE` (selected, no
  code); a code held by a pair that is not selected unbalances it;
- `codes→waves` — code rows = coded fans per configured wave + not yet in a wave;
- `messages→outcomes:<channel>` — planned messages = sent + failed + skipped (by their own log
  rows) + pending (no outcome yet); an outcome of a message that is no longer planned unbalances it.

All counts come from aggregates computed by Spark; only the figures reach the driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from campaign_pipeline.catalog import FAN, FAN_MARKET, LANDED
from campaign_pipeline.config import Campaign


@dataclass
class Balance:
    check: str
    left_label: str
    left_count: int
    right_label: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def right_count(self) -> int:
        return sum(self.parts.values())

    @property
    def balanced(self) -> bool:
        return self.left_count == self.right_count

    def line(self) -> str:
        terms = " + ".join(f"{v:,} {k}" for k, v in self.parts.items()) or "0"
        sign = "=" if self.balanced else "≠"
        text = f"{self.check}: {self.left_count:,} {self.left_label} {sign} {self.right_count:,} {self.right_label}"
        return text + ("" if self.balanced else f" ({terms}); difference {self.left_count - self.right_count:+,}")

    def row(self) -> dict:
        return {
            "check": self.check,
            "left_label": self.left_label,
            "left_count": self.left_count,
            "right_label": self.right_label,
            "right_count": self.right_count,
            "parts": dict(self.parts),
            "balanced": self.balanced,
        }


def _counts(df: DataFrame, *keys) -> dict:
    rows = df.groupBy(*keys).agg(F.count(F.lit(1)).alias("n")).collect()
    if len(keys) == 1:
        return {r[0]: r["n"] for r in rows}
    return {tuple(r[k] for k in range(len(keys))): r["n"] for r in rows}


def reason_category(reason):
    """`registered_at: expected ..., got '2026-13-01'` → `registered_at: expected ...` (no values)."""
    return F.regexp_replace(F.regexp_replace(reason, r", got .*$", ""), r" in '.*'$", "")


def landing_balances(read) -> list[Balance]:
    files = [r.asDict() for r in read("landing_files").select("source_file", "kind", "rows_read").collect()]
    if not files:
        return []
    names = [f["source_file"] for f in files]
    ingested: dict[str, int] = {}
    for table in LANDED:
        for name, n in _counts(read(table).where(F.col("source_file").isin(names)), "source_file").items():
            ingested[name] = ingested.get(name, 0) + n
    held = read("quarantine").where(F.col("stage") == "ingest")
    quarantined = _counts(held.select("source_file", reason_category(F.col("reason")).alias("r")), "source_file", "r")
    out = []
    for f in sorted(files, key=lambda f: f["source_file"]):
        name = f["source_file"]
        parts = {"ingested": ingested.get(name, 0)}
        for (file, reason), n in sorted(quarantined.items()):
            if file == name:
                parts[f"quarantined: {reason}"] = n
        short = name.rsplit("/", 1)[-1]
        out.append(Balance(f"landing:{short}", "rows read", f["rows_read"] or 0, "ingested + quarantined", parts))
    return out


def registration_balance(read, registrants: int) -> Balance:
    row = read("registrations").agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(*FAN).alias("fans")).first()
    rows, fans = row["rows"] or 0, row["fans"] or 0
    return Balance(
        "registrations→registrants",
        "registration rows",
        rows,
        "registrants + duplicates merged",
        {"registrants": registrants, "duplicates merged": rows - fans},
    )


def verdict_balance(read, registrants: int) -> Balance:
    verdicts = (
        read("selections")
        .groupBy(*FAN)
        .agg(F.min("verdict").alias("verdict"), F.min(F.try_element_at("reasons", F.lit(1))).alias("reason"))
        .select(F.when(F.col("verdict") == "rejected", F.concat(F.lit("rejected: "), F.coalesce("reason", F.lit("?"))))
                .otherwise(F.col("verdict")).alias("v"))
    )  # fmt: skip
    counts = _counts(verdicts, "v")
    order = ["selected", "waitlisted"]
    parts = {k: counts.get(k, 0) for k in order}
    parts.update({k: counts[k] for k in sorted(counts) if k not in order})
    return Balance("registrants→verdicts", "registrants", registrants, "selected + waitlisted + rejected", parts)


def code_balance(read) -> Balance:
    selected = read("selections").where(F.col("verdict") == "selected").select(*FAN_MARKET).distinct()
    codes = read("code_assignments").select(*FAN_MARKET)
    n_selected = selected.count()
    n_codes = codes.count()
    no_code = selected.join(codes, FAN_MARKET, "left_anti").count()
    return Balance(
        "selected→codes", "selected (fan, market)", n_selected, "coded + NO_CODE_AVAILABLE",
        {"coded": n_codes, "NO_CODE_AVAILABLE": no_code},
    )  # fmt: skip


def wave_balance(campaign: Campaign, read) -> Balance:
    configured = [w.wave_id for w in campaign.waves]
    codes = read("code_assignments")
    per_wave = _counts(codes.where(F.col("wave_id").isin(*configured) | F.col("wave_id").isNull()), "wave_id")
    parts = {f"in {w}": per_wave.get(w, 0) for w in configured}
    parts["not yet in a wave"] = per_wave.get(None, 0)
    return Balance("codes→waves", "code rows", codes.count(), "in a configured wave + not yet in a wave", parts)


def outcome_balances(read) -> list[Balance]:
    messages = read("wave_messages").select("message_id", "channel")
    log = read("notification_log").select("message_id", "channel", "status")
    planned = _counts(messages, "channel")
    logged = _counts(log, "channel", "status")
    pending = _counts(messages.join(log.select("message_id"), "message_id", "left_anti"), "channel")
    out = []
    for channel in sorted(set(planned) | {c for c, _ in logged}):
        parts = {s: logged.get((channel, s), 0) for s in ("sent", "failed", "skipped")}
        parts.update({s: n for (c, s), n in logged.items() if c == channel and s not in parts})
        parts["pending"] = pending.get(channel, 0)
        out.append(
            Balance(
                f"messages→outcomes:{channel}",
                f"{channel} messages planned",
                planned.get(channel, 0),
                "sent + failed + skipped + pending",
                parts,
            )  # fmt: skip
        )
    return out


def reconcile(campaign: Campaign, read) -> list[Balance]:
    """Every check for one campaign; `read(table)` gives the campaign's rows of a table."""
    registrants = read("registrants").count()  # both registrant checks use this one count
    return [
        *landing_balances(read),
        registration_balance(read, registrants),
        verdict_balance(read, registrants),
        code_balance(read),
        wave_balance(campaign, read),
        *outcome_balances(read),
    ]


def breaks(balances: list[Balance]) -> list[Balance]:
    return [b for b in balances if not b.balanced]
