"""`campaign-pipeline explain`: one fan's story through every table, with personal data masked.

Reads `registrants`, `scores`, `selections`, `code_assignments`, `wave_messages` and
`notification_log` at their latest versions (named in the output, so an answer can be
reproduced with Delta time travel) and prints tags, cluster, score and top features, band and
band_score, for each preferred market the fan's rank against the capacity cut-off, the verdict
and reasons, the code and the messages. Only the fan's rows and per-market aggregates reach the
driver.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import InputError
from campaign_pipeline.privacy import mask_email, mask_phone
from campaign_pipeline.tables import Warehouse

TABLES = ("registrants", "scores", "selections", "code_assignments", "wave_messages", "notification_log")


def _one(wh: Warehouse, table: str, cid: str, fan: str) -> list[dict]:
    if not wh.exists(table):
        return []
    df = wh.read(table, cid)
    if "global_user_id" not in df.columns:
        return []
    return [r.asDict(recursive=True) for r in df.where(F.col("global_user_id") == fan).collect()]


def explain_fan(wh: Warehouse, campaign: Campaign, fan: str) -> list[str]:
    cid = campaign.campaign_id
    versions = {t: wh.version(t) for t in TABLES}
    reg = _one(wh, "registrants", cid, fan)
    if not reg:
        raise InputError(f"--fan {fan}: no registrant {fan!r} in campaign {cid} (warehouse {wh.root})")
    r = reg[0]
    out = [f"fan {fan} · campaign {cid}"]
    out.append(
        "tables read: "
        + ", ".join(f"{t}@v{v}" for t, v in versions.items() if v is not None)
        + " (Delta versions; read them back with versionAsOf)"
    )
    out.append(
        f"contact: email {mask_email(r['email'])} · phone {mask_phone(r['phone_e164'])}"
        f" ({r['phone_country'] or '?'}, {r['phone_type'] or 'no phone'}) · locale {r['locale'] or '-'}"
    )
    out.append(
        f"screening: {'eligible' if r['eligible'] else 'INELIGIBLE'} · tags {', '.join(r['tags']) or 'none'}"
        + (f" · reasons {', '.join(r['ineligible_reasons'])}" if r["ineligible_reasons"] else "")
    )
    out.append(f"identity cluster {r['identity_cluster_id']} of {r['cluster_size']} account(s)")
    prefs = r["market_preferences"]
    out.append(f"preferences: {' > '.join(prefs)}")

    sc = _one(wh, "scores", cid, fan)
    band_score = None
    if sc:
        s = sc[0]
        band_score = s["band_score"]
        raw = "none" if s["raw_score"] is None else f"{s['raw_score']:.4f}"
        out.append(f"score: {raw} from {s['score_source']} ({s['model_version'] or '-'})")
        if s["top_features"]:
            out.append(
                "  top features: " + ", ".join(f"{c['feature']} {c['contribution']:+.3f}" for c in s["top_features"])
            )
        if s["extra"]:
            out.append("  carried along: " + ", ".join(f"{k}={v}" for k, v in sorted(s["extra"].items())))
        out.append(
            f"band: {s['band'] or 'below every band'}"
            + ("" if band_score is None else f" · band_score {band_score:.6f} (seeded lottery inside the band)")
        )
    else:
        out.append("score: not scored yet")

    sel = _one(wh, "selections", cid, fan)
    if sel and band_score is not None and wh.exists("selections"):
        out.extend(_market_standing(wh, campaign, fan, prefs, band_score))
    for s in sorted(sel, key=lambda x: x["market_id"] or ""):
        detail = {
            "selected": f"market {s['market_id']} (choice {s['preference_rank']}, market rank {s['market_rank']})",
            "waitlisted": f"for {s['market_id']} at position {s['waitlist_position']}",
            "rejected": "",
        }[s["verdict"]]
        reasons = f" · reasons {', '.join(s['reasons'])}" if s["reasons"] else ""
        out.append(f"verdict: {s['verdict'].upper()} {detail}{reasons} (run {s['run_id']})")
    if not sel:
        out.append("verdict: not selected yet")

    for c in _one(wh, "code_assignments", cid, fan):
        code = "(TM account unlock, no code)" if c["code_type"] == "tm" else c["code"]
        if c["wave_id"] is None:
            when = "in no wave yet, so no validity dates (no open wave had room for him)"
        else:
            when = f"wave {c['wave_id']}, valid {c['valid_from']} → {c['valid_until']} UTC"
        out.append(f"code: {code} for {c['market_id']} ({c['code_type']}), {when}")
    planned = _one(wh, "wave_messages", cid, fan)
    sent = {m["message_id"]: m for m in _delivery(wh, cid, [m["message_id"] for m in planned])}
    for msg in sorted(planned, key=lambda m: (m["wave_id"], m["channel"])):
        to = mask_phone(msg["recipient"]) if msg["channel"] == "sms" else mask_email(msg["recipient"])
        log = sent.get(msg["message_id"])
        status = f"{log['status']} ({log['attempts']} attempt(s))" if log else "not sent yet"
        out.append(f"message {msg['message_id'][:12]}… wave {msg['wave_id']} · {msg['channel']} to {to} · {status}")
    return out


def _delivery(wh: Warehouse, cid: str, message_ids: list[str]) -> list[dict]:
    """The fan's `notification_log` rows (a fan has a handful of messages at most)."""
    if not message_ids or not wh.exists("notification_log"):
        return []
    log = wh.read("notification_log", cid).where(F.col("message_id").isin(message_ids))
    return [r.asDict() for r in log.collect()]


def _market_standing(wh: Warehouse, campaign: Campaign, fan: str, prefs: list[str], band_score: float) -> list[str]:
    """Per preferred market: how many candidates rank above the fan, and the capacity cut-off."""
    cid = campaign.campaign_id
    capacity = {m.market_id: m.capacity for m in campaign.markets}
    cands = (
        wh.read("selections", cid)
        .where(F.col("verdict").isin("selected", "waitlisted"))
        .select("global_user_id", "band_score")
        .distinct()
        .join(wh.read("registrants", cid).select("global_user_id", "market_preferences"), "global_user_id")
        .select("global_user_id", "band_score", F.explode("market_preferences").alias("market_id"))
        .where(F.col("market_id").isin(prefs))
    )
    ahead = (F.col("band_score") > band_score) | ((F.col("band_score") == band_score) & (F.col("global_user_id") < fan))
    ranks = {
        row["market_id"]: (row["listed"], row["ahead"])
        for row in cands.groupBy("market_id")
        .agg(F.count(F.lit(1)).alias("listed"), F.sum(ahead.cast("int")).alias("ahead"))
        .collect()
    }
    cutoffs = {
        row["market_id"]: (row["selected"], row["lowest"])
        for row in wh.read("selections", cid)
        .where((F.col("verdict") == "selected") & F.col("market_id").isin(prefs))
        .groupBy("market_id")
        .agg(F.count(F.lit(1)).alias("selected"), F.min("band_score").alias("lowest"))
        .collect()
    }
    lines = ["standing per preferred market (candidates who listed it, ranked by band_score):"]
    for i, market in enumerate(prefs, start=1):
        listed, ahead_n = ranks.get(market, (0, 0))
        selected, lowest = cutoffs.get(market, (0, None))
        cut = "no one selected" if lowest is None else f"lowest selected band_score {lowest:.6f}"
        lines.append(
            f"  choice {i}: {market} · rank {ahead_n + 1:,} of {listed:,} candidates who listed it at any position"
            f" · capacity {capacity.get(market, 0):,},"
            f" {selected:,} selected, {cut}"
        )
    return lines
