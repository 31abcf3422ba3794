"""`campaign-pipeline explain`: one fan's story through every table, with personal data masked.

Reads `registrants`, `scores`, `selections`, `standings`, `code_assignments`, `wave_messages` and
`notification_log` at their latest versions (named in the output, so an answer can be reproduced
with Delta time travel) and tells: tags, cluster, score and top features, band and band_score,
for each preferred market the fan's rank among its candidates against the capacity cut-off (as
the select stage stored it in `standings`; nothing is re-ranked here), the verdict and reasons,
the code and the messages.

Two readers give the same rows: `DeltaTables` reads the Delta tables with delta-rs (the
`deltalake` package) without a JVM — partition pruning on `campaign_id` and the fan id filter
pushed into the Parquet scan, so one lookup takes about a second; `SparkTables` (`explain
--spark`) reads them through Spark. Only the fans' own rows reach the process.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from typing import Any, Protocol

from campaign_pipeline.config import Campaign
from campaign_pipeline.errors import InputError
from campaign_pipeline.privacy import mask_code, mask_email, mask_phone

TABLES = ("registrants", "scores", "selections", "standings", "code_assignments", "wave_messages", "notification_log")
FAN_TABLES = TABLES[:-1]  # notification_log is keyed by message id


class FanNotFound(InputError):
    """The fan id is not a registrant of the campaign (exit code 3)."""


class Tables(Protocol):
    def version(self, table: str) -> int | None: ...

    def rows(self, table: str, campaign_id: str, column: str, values: list[str]) -> list[dict]: ...

    def near_misses(self, campaign_id: str, fan: str) -> list[str]: ...


def _key(fan: str) -> str:
    return "".join(fan.split()).casefold()


def _plain(value: Any) -> Any:
    """Values as both readers return them: UTC-aware datetimes, dicts for maps, lists for arrays."""
    if isinstance(value, dt.datetime):
        # Spark hands back naive local times, delta-rs aware UTC ones: both become aware UTC
        return (value if value.tzinfo else value.astimezone()).astimezone(dt.UTC)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            return {k: _plain(v) for k, v in value}  # an Arrow map
        return [_plain(v) for v in value]
    return value


class SparkTables:
    """The tables read through Spark (`explain --spark`)."""

    def __init__(self, warehouse):
        self.wh = warehouse

    def version(self, table: str) -> int | None:
        return self.wh.version(table)

    def rows(self, table: str, campaign_id: str, column: str, values: list[str]) -> list[dict]:
        from pyspark.sql import functions as F

        if not values or not self.wh.exists(table):
            return []
        df = self.wh.read(table, campaign_id)
        if column not in df.columns:
            return []
        return [_plain(r.asDict(recursive=True)) for r in df.where(F.col(column).isin(values)).collect()]

    def near_misses(self, campaign_id: str, fan: str) -> list[str]:
        from pyspark.sql import functions as F

        if not self.wh.exists("registrants"):
            return []
        ids = self.wh.read("registrants", campaign_id).select("global_user_id")
        key = F.lower(F.regexp_replace("global_user_id", r"\s+", ""))
        return sorted(r[0] for r in ids.where(key == _key(fan)).limit(5).collect())


class DeltaTables:
    """The tables read with delta-rs: no JVM, one fan's rows by a filtered Parquet scan."""

    def __init__(self, warehouse_root: str):
        self.root = warehouse_root.rstrip("/")
        self._tables: dict[str, Any] = {}

    def _table(self, table: str):
        if table not in self._tables:
            from deltalake import DeltaTable
            from deltalake.exceptions import TableNotFoundError

            try:
                self._tables[table] = DeltaTable(f"{self.root}/{table}", storage_options=_storage_options(self.root))
            except TableNotFoundError:
                self._tables[table] = None
        return self._tables[table]

    def version(self, table: str) -> int | None:
        t = self._table(table)
        return None if t is None else t.version()

    def _dataset(self, table: str, campaign_id: str, column: str | None = None, values: list[str] | None = None):
        """The campaign's Parquet files of the table's current version, scanned by pyarrow itself.

        delta-rs resolves the files: the log replay, partition pruning on `campaign_id`, and file
        skipping on the Delta statistics of `column` (min/max per file: Z-ordered tables keep one
        fan's rows in few files); pyarrow reads them, the filter pushed into row-group statistics. (Scanning through
        delta-rs's own filesystem layer leaves runtime threads that abort the process at exit.)"""
        import pyarrow.dataset as ds

        t = self._table(table)
        if t is None:
            return None
        predicate = [("campaign_id", "=", campaign_id)]
        if column and values and column in t.schema().to_arrow().names:
            predicate.append((column, "in", list(values)))
        files = t.file_uris(file_pruning_predicate=predicate)
        if not files:
            return None
        root, filesystem = self._filesystem()
        files = [f.removeprefix("file://") for f in files]
        if root.startswith("s3"):
            files = [f.split("://", 1)[1] for f in files]
        return ds.dataset(
            files,
            format="parquet",
            filesystem=filesystem,
            partitioning=ds.partitioning(flavor="hive"),
            partition_base_dir=f"{root.split('://', 1)[-1] if root.startswith('s3') else root}/{table}",
        )

    def _filesystem(self):
        if not self.root.startswith(("s3://", "s3a://")):
            return self.root, None
        import os

        from pyarrow import fs

        opts = _storage_options(self.root) or {}
        endpoint = opts.get("AWS_ENDPOINT_URL")
        return self.root, fs.S3FileSystem(
            region=opts.get("AWS_REGION"),
            endpoint_override=endpoint,
            scheme="http" if endpoint and endpoint.startswith("http:") else "https",
            access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )

    def rows(self, table: str, campaign_id: str, column: str, values: list[str]) -> list[dict]:
        import pyarrow.compute as pc

        dataset = self._dataset(table, campaign_id, column, values) if values else None
        if dataset is None or column not in dataset.schema.names:
            return []
        match = pc.field(column) == values[0] if len(values) == 1 else pc.field(column).isin(values)
        return [_plain(r) for r in _utc_times(dataset.to_table(filter=match)).to_pylist()]

    def near_misses(self, campaign_id: str, fan: str) -> list[str]:
        import pyarrow.compute as pc

        dataset = self._dataset("registrants", campaign_id)
        if dataset is None:
            return []
        ids = dataset.to_table(columns=["global_user_id"])
        keys = pc.utf8_lower(pc.replace_substring_regex(ids.column("global_user_id"), r"\s+", ""))
        return sorted(ids.filter(pc.equal(keys, _key(fan))).column("global_user_id").to_pylist())[:5]


def _utc_times(table):
    """Parquet timestamps (Spark writes them UTC-normalised, INT96 or micros) as UTC microseconds."""
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields), safe=False)


def _storage_options(root: str) -> dict[str, str] | None:
    """delta-rs on S3 takes the region and endpoint boto3 would use (AWS_ENDPOINT_URL in tests)."""
    if not root.startswith(("s3://", "s3a://")):
        return None
    import os

    opts = {"AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if os.environ.get("AWS_ENDPOINT_URL"):
        opts |= {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true"}
    return opts


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
                "to": mask_phone(m["recipient"]) if m["channel"] == "sms" else mask_email(m["recipient"]),
                "status": sent["status"] if sent else None,
                "attempts": sent["attempts"] if sent else 0,
            }
        )
    return story


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
