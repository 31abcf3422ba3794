"""`campaign-pipeline explain`: one fan's story through every table, with personal data masked.

From `registrants`, `scores`, `selections`, `standings`, `code_assignments`, `wave_messages` and
`notification_log` (read by `readers.py`): tags, cluster, score and top features, band and
band_score, for each preferred market the fan's rank among its candidates against the capacity
cut-off (as the select stage stored it in `standings`; nothing is re-ranked here), the verdict and
reasons, the code (masked unless `--show-code`) and the messages."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from typing import Any

from campaign_pipeline.channels import all_channels
from campaign_pipeline.config import Campaign
from campaign_pipeline.ops.explain.readers import FAN_TABLES, TABLES, FanNotFound, SparkTables, Tables
from campaign_pipeline.privacy import mask_code, mask_email, mask_phone

# ------------------------------------------------------------------------------------------ story


def fan_stories(tables: Tables, campaign: Campaign, fans: list[str], show_code: bool = False) -> list[dict]:
    """The story of each fan as data (masked: contact details always, access codes unless
    `show_code`, an operator's `--show-code`), in the order given; one read per table for all fans.
    A fan id that is not a registrant raises FanNotFound (with near misses) when it is the only
    one asked for, and gives `{"fan": id, "error": …}` in a batch."""
    cid = campaign.campaign_id
    versions = {t: tables.version(t) for t in TABLES}
    wanted = list(dict.fromkeys(fans))
    by_fan: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for table in FAN_TABLES:
        for row in tables.rows(table, cid, "global_user_id", wanted):
            by_fan[row["global_user_id"]][table].append(row)
    message_ids = [m["message_id"] for f in by_fan.values() for m in f["wave_messages"]]
    log = {r["message_id"]: r for r in tables.rows("notification_log", cid, "message_id", message_ids)}
    capacity = {m.market_id: m.capacity for m in campaign.markets}
    stories = []
    for fan in fans:
        rows = by_fan.get(fan)
        if not rows or not rows["registrants"]:
            near = tables.near_misses(cid, fan)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            message = f"--fan {fan}: no registrant {fan!r} in campaign {cid}{hint}"
            if len(fans) == 1:
                raise FanNotFound(message)
            stories.append({"fan": fan, "campaign_id": cid, "error": message, "did_you_mean": near})
            continue
        stories.append(_story(fan, cid, versions, rows, log, capacity, show_code))
    return stories


def _story(fan: str, cid: str, versions: dict, rows: dict, log: dict, capacity: dict, show_code: bool = False) -> dict:
    r = rows["registrants"][0]
    story: dict[str, Any] = {
        "fan": fan,
        "campaign_id": cid,
        "table_versions": {t: v for t, v in versions.items() if v is not None},
        "contact": {
            "email": mask_email(r["email"]),
            "phone": mask_phone(r["phone_e164"]),
            "phone_country": r["phone_country"],
            "phone_type": r["phone_type"],
            "locale": r["locale"],
        },
        "screening": {
            "eligible": r["eligible"],
            "tags": list(r["tags"] or []),
            "ineligible_reasons": list(r["ineligible_reasons"] or []),
            "identity_cluster_id": r["identity_cluster_id"],
            "cluster_size": r["cluster_size"],
            # weakly linked (screening.weak_links): the cluster, its size and the signals of its links
            # (absent from a registrants table screened before weak links existed)
            "weak_cluster_id": r.get("weak_cluster_id"),
            "weak_cluster_size": r.get("weak_cluster_size"),
            "weak_signals": list(r.get("weak_signals") or []),
        },
        "preferences": list(r["market_preferences"] or []),
        "score": None,
        "standing": [],
        "verdicts": [],
        "codes": [],
        "messages": [],
    }
    if rows["scores"]:
        s = rows["scores"][0]
        story["score"] = {
            "raw_score": s["raw_score"],
            "source": s["score_source"],
            "model_version": s["model_version"],
            "top_features": [
                {"feature": c["feature"], "contribution": c["contribution"]} for c in s["top_features"] or []
            ],
            "extra": dict(sorted((s["extra"] or {}).items())),
            "band": s["band"],
            "band_score": s["band_score"],
        }
    if rows["selections"]:
        for st in sorted(rows["standings"], key=lambda x: x["preference_rank"]):
            story["standing"].append(
                {
                    "choice": st["preference_rank"],
                    "market_id": st["market_id"],
                    "rank": st["market_rank"],
                    "candidates": st["candidates"],
                    "capacity": capacity.get(st["market_id"], 0),
                    "selected": st["selected"],
                    "lowest_selected_band_score": st["lowest_selected_band_score"],
                }
            )
    for s in sorted(rows["selections"], key=lambda x: x["market_id"] or ""):
        story["verdicts"].append(
            {k: s[k] for k in ("verdict", "market_id", "preference_rank", "market_rank", "waitlist_position", "run_id")}
            | {"reasons": list(s["reasons"] or [])}
        )
    for c in sorted(rows["code_assignments"], key=lambda x: x["market_id"]):
        story["codes"].append(
            {k: c[k] for k in ("market_id", "code_type", "wave_id", "valid_from", "valid_until")}
            | {"code": None if c["code_type"] == "tm" else c["code"] if show_code else mask_code(c["code"])}
        )
    for m in sorted(rows["wave_messages"], key=lambda m: (m["wave_id"], m["channel"])):
        sent = log.get(m["message_id"])
        story["messages"].append(
            {
                "message_id": m["message_id"],
                "wave_id": m["wave_id"],
                "channel": m["channel"],
                "to": _masked_recipient(m["channel"], m["recipient"]),
                "status": sent["status"] if sent else None,
                "attempts": sent["attempts"] if sent else 0,
            }
        )
    return story


def _masked_recipient(name: str, recipient: str | None) -> str | None:
    """The recipient masked the way its channel masks it (fully, for a channel no longer registered)."""
    known = {c.name: c for c in all_channels()}
    return known[name].mask(recipient) if name in known else (None if recipient is None else "***")


def story_lines(story: dict) -> list[str]:
    """The story as support reads it."""
    if "error" in story:
        return [story["error"]]
    fan, cid = story["fan"], story["campaign_id"]
    out = [f"fan {fan} · campaign {cid}"]
    out.append(
        "tables read: "
        + ", ".join(f"{t}@v{v}" for t, v in story["table_versions"].items())
        + " (Delta versions; read them back with versionAsOf)"
    )
    c = story["contact"]
    out.append(
        f"contact: email {c['email']} · phone {c['phone']}"
        f" ({c['phone_country'] or '?'}, {c['phone_type'] or 'no phone'}) · locale {c['locale'] or '-'}"
    )
    sc = story["screening"]
    out.append(
        f"screening: {'eligible' if sc['eligible'] else 'INELIGIBLE'} · tags {', '.join(sc['tags']) or 'none'}"
        + (f" · reasons {', '.join(sc['ineligible_reasons'])}" if sc["ineligible_reasons"] else "")
    )
    out.append(f"identity cluster {sc['identity_cluster_id']} of {sc['cluster_size']} account(s)")
    if sc.get("weak_cluster_id"):
        out.append(
            f"weak-link cluster {sc['weak_cluster_id']} of {sc['weak_cluster_size']} fresh account(s),"
            f" linked by {', '.join(sc['weak_signals']) or '-'}"
        )
    out.append(f"preferences: {' > '.join(story['preferences'])}")
    s = story["score"]
    if s:
        raw = "none" if s["raw_score"] is None else f"{s['raw_score']:.4f}"
        out.append(f"score: {raw} from {s['source']} ({s['model_version'] or '-'})")
        if s["top_features"]:
            out.append(
                "  top features: " + ", ".join(f"{c['feature']} {c['contribution']:+.3f}" for c in s["top_features"])
            )
        if s["extra"]:
            out.append("  carried along: " + ", ".join(f"{k}={v}" for k, v in s["extra"].items()))
        out.append(
            f"band: {s['band'] or 'below every band'}"
            + (
                ""
                if s["band_score"] is None
                else f" · band_score {s['band_score']:.6f} (seeded lottery inside the band)"
            )
        )
    else:
        out.append("score: not scored yet")
    if story["standing"]:
        out.append("standing per preferred market (candidates who listed it, ranked by band_score):")
        for st in story["standing"]:
            low = st["lowest_selected_band_score"]
            cut = "no one selected" if low is None else f"lowest selected band_score {low:.6f}"
            out.append(
                f"  choice {st['choice']}: {st['market_id']} · rank {st['rank']:,} of {st['candidates']:,} candidates"
                f" who listed it at any position · capacity {st['capacity']:,}, {st['selected']:,} selected, {cut}"
            )
    for v in story["verdicts"]:
        detail = {
            "selected": f"market {v['market_id']} (choice {v['preference_rank']}, market rank {v['market_rank']})",
            "waitlisted": f"for {v['market_id']} at position {v['waitlist_position']}",
            "rejected": "",
        }[v["verdict"]]
        reasons = f" · reasons {', '.join(v['reasons'])}" if v["reasons"] else ""
        out.append(f"verdict: {v['verdict'].upper()} {detail}{reasons} (run {v['run_id']})")
    if not story["verdicts"]:
        out.append("verdict: not selected yet")
    for c in story["codes"]:
        code = "(TM account unlock, no code)" if c["code_type"] == "tm" else c["code"]
        if c["wave_id"] is None:
            when = "in no wave yet, so no validity dates (no open wave had room for him)"
        else:
            when = f"wave {c['wave_id']}, valid {_utc(c['valid_from'])} → {_utc(c['valid_until'])} UTC"
        out.append(f"code: {code} for {c['market_id']} ({c['code_type']}), {when}")
    for m in story["messages"]:
        status = f"{m['status']} ({m['attempts']} attempt(s))" if m["status"] else "not sent yet"
        out.append(f"message {m['message_id'][:12]}… wave {m['wave_id']} · {m['channel']} to {m['to']} · {status}")
    return out


def _utc(value) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else str(value)


def story_json(story: dict) -> str:
    """One JSON line (times as ISO-8601 UTC)."""
    return json.dumps(story, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v), sort_keys=False)


def explain_fan(warehouse, campaign: Campaign, fan: str, show_code: bool = False) -> list[str]:
    """One fan's story read through Spark (the notebook and `--spark` path)."""
    return story_lines(fan_stories(SparkTables(warehouse), campaign, [fan], show_code)[0])
