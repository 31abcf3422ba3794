"""`campaign-pipeline validate`: everything that can be checked about a campaign before Spark starts.

Both configs (every key), every message template rendered in the sandbox with each market's
sample values (and measured against the SMS and email limits), the score bands against
`min_score`, the waves against the markets, the code pool against the capacities, and the landing
folder: each file's kind, format and required columns. No JVM and no pyspark: a second or so.
Each problem is one line naming the file and the key (or the landing file and column).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from campaign_pipeline.config import (
    Campaign,
    Environment,
    builtin_environment,
    environment_path,
    read_yaml,
    validation_problems,
)
from campaign_pipeline.errors import ConfigError
from campaign_pipeline.ingest import sources as src
from campaign_pipeline.templating import BUILTIN_TEMPLATES, compile_template, render_bounded, sms_segments

SAMPLE_FAN = {"first_name": "Maximiliana", "last_name": "Oyelaran-Whitcombe"}  # a long real-world name
MAX_COUNTED_CODES = 5_000_000  # the pool is counted up to this many rows per file; more is plenty


@dataclass(frozen=True)
class Problem:
    file: str
    key: str
    message: str

    def line(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


@dataclass
class Validation:
    campaign_file: str
    environment_file: str
    landing: str | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, file: str, key: str, message: str) -> None:
        self.problems.append(Problem(str(file), key, message))

    def verdict(self) -> str:
        if not self.problems:
            return f"ok: {self.campaign_file} and {self.environment_file} are valid"
        return f"{len(self.problems)} problem(s)"

    def as_json(self) -> dict:
        return {
            "ok": not self.problems,
            "campaign_file": self.campaign_file,
            "environment_file": self.environment_file,
            "landing": self.landing,
            "notes": self.notes,
            "problems": [{"file": p.file, "key": p.key, "message": p.message} for p in self.problems],
        }


def _load(model, path, what: str, result: Validation):
    """The model of a config file, or None with its problems recorded (every key, not the first)."""
    try:
        data = read_yaml(path, what)
    except ConfigError as exc:
        file, _, rest = str(exc).partition(": ")
        result.problem(file, "(file)", rest)
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for key, message in validation_problems(exc):
            result.problem(path, key, message)
        return None


def validate(campaign_path: str, env_name: str, landing: str | None = None) -> Validation:
    """Every check; `landing` (the --landing flag) instead of the environment's landing_root."""
    env_file = environment_path(env_name)
    result = Validation(str(campaign_path), str(env_file))
    campaign = _load(Campaign, campaign_path, "campaign config", result)
    if not isinstance(env_file, str) and not env_file.is_file():
        env = builtin_environment(env_name)
        if env is None:
            result.problem(env_file, "(file)", "environment config file not found (pass --env NAME or a YAML path)")
        else:
            result.environment_file = "the built-in local environment"
    else:
        env = _load(Environment, env_file, "environment config", result)
    if campaign is None:
        return result
    _templates(campaign, str(campaign_path), result)
    _bands(campaign, str(campaign_path), result)
    _waves(campaign, str(campaign_path), result)
    root = landing or (env.landing_root if env else None)
    if root is None:
        result.notes.append("landing: not checked (no --landing and no environment)")
        return result
    _landing(campaign, str(campaign_path), root, "--landing" if landing else "landing_root", result)
    return result


# --------------------------------------------------------------------------- templates


def _sample_values(campaign: Campaign, market, wave) -> dict[str, str]:
    notify_at = wave.notify_at if wave else dt.datetime.now(dt.UTC)
    local = notify_at.astimezone(ZoneInfo(market.timezone))
    link = campaign.messages.link.format(
        campaign_id=campaign.campaign_id, market_id=market.market_id, wave_id=wave.wave_id if wave else "wave"
    )
    return {
        "campaign_name": campaign.name,
        "artist": campaign.artist,
        "market": market.name,
        "market_id": market.market_id,
        "event_date": market.event_date.isoformat(),
        "wave_date": local.strftime("%Y-%m-%d %H:%M %Z"),
        "code": "W" * campaign.codes.length,
        "link": link,
        **SAMPLE_FAN,
    }


def _templates(campaign: Campaign, file: str, result: Validation) -> None:
    """Every template (the campaign's and the built-in one its fans may fall back to) rendered for
    every market with sample values: it must render, and stay within the SMS and email limits."""
    try:
        campaign.messages.link.format(campaign_id="c", market_id="m", wave_id="w")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        what = f"unknown placeholder {exc}" if isinstance(exc, KeyError) else f"cannot fill it ({exc})"
        result.problem(file, "messages.link", f"{what} (use {{campaign_id}}, {{market_id}}, {{wave_id}})")
        return
    templates = {
        f"messages.templates.{locale}": {"sms": t.sms, "email_subject": t.email_subject, "email_body": t.email_body}
        for locale, t in campaign.messages.templates.items()
    }
    templates["built-in template"] = dict(BUILTIN_TEMPLATES)
    limits = campaign.messages
    rendered = 0
    for key, fields in templates.items():
        compiled = {}
        for name, source in fields.items():
            try:
                compiled[name] = compile_template(name, source)
            except Exception as exc:  # noqa: BLE001 - whatever a template raises is a config problem
                result.problem(file, f"{key}.{name}", f"{type(exc).__name__}: {str(exc).strip()[:300]}")
        for market in campaign.markets:
            wave = next((w for w in campaign.waves if not w.markets or market.market_id in w.markets), None)
            values = _sample_values(campaign, market, wave)
            texts = {}
            for name, template in compiled.items():
                try:
                    texts[name] = render_bounded(template, values)
                    rendered += 1
                except Exception as exc:  # noqa: BLE001
                    result.problem(
                        file, f"{key}.{name}", f"fails for market {market.market_id}: {type(exc).__name__}: {exc}"
                    )
            if "sms" in texts:
                segments, encoding = sms_segments(texts["sms"])
                if segments > limits.max_sms_segments:
                    result.problem(
                        file, f"{key}.sms", f"{segments} {encoding} segments for market {market.market_id} with sample "
                        f"values, more than messages.max_sms_segments ({limits.max_sms_segments}): such messages are quarantined",
                    )  # fmt: skip
            if "email_subject" in texts and "email_body" in texts:
                size = len(texts["email_subject"].encode()) + len(texts["email_body"].encode())
                if size > limits.max_email_bytes:
                    result.problem(
                        file, f"{key}.email_body", f"{size:,} bytes for market {market.market_id} with sample values, "
                        f"more than messages.max_email_bytes ({limits.max_email_bytes:,})",
                    )  # fmt: skip
    result.notes.append(
        f"templates: {len(templates)} rendered for {len(campaign.markets)} market(s) ({rendered} renderings)"
    )
    known = set(campaign.messages.templates)
    for i, market in enumerate(campaign.markets):
        if known and market.locale not in known and campaign.messages.default_locale not in known:
            result.notes.append(
                f"markets[{i}].locale {market.locale}: no template for it nor for messages.default_locale; its fans "
                "without a template of their own get the built-in English one"
            )


# --------------------------------------------------------------------------- bands and waves


def _bands(campaign: Campaign, file: str, result: Validation) -> None:
    bands = sorted(campaign.scoring.bands, key=lambda b: b.min)
    lowest, top = bands[0], bands[-1]
    result.notes.append(
        "bands: " + " · ".join(f"{b.name} [{b.min:g}, {b.max:g})" for b in reversed(bands))
        + f"; scores below {lowest.min:g} have no band and are never selected"
    )  # fmt: skip
    if campaign.options.min_score >= top.max:
        result.problem(
            file, "options.min_score", f"{campaign.options.min_score:g} is at or above the top band's max ({top.max:g}): "
            "no fan can be selected",
        )  # fmt: skip


def _waves(campaign: Campaign, file: str, result: Validation) -> None:
    if not campaign.waves:
        result.notes.append("waves: none declared; plan_waves has nothing to plan")
        return
    for i, market in enumerate(campaign.markets):
        if not any(not w.markets or market.market_id in w.markets for w in campaign.waves):
            result.problem(
                file, f"markets[{i}]", f"{market.market_id} is in no wave: its selected fans get codes but no message"
            )


# --------------------------------------------------------------------------- landing


def _landing(campaign: Campaign, file: str, root: str, key: str, result: Validation) -> None:
    if "://" in root and not root.startswith("file:"):
        result.notes.append(f"landing: {root} is not a local folder; not checked")
        return
    base = Path(root.removeprefix("file://").removeprefix("file:")).expanduser()
    folder = next((f for f in (base / campaign.campaign_id, base) if f.is_dir()), None)
    if folder is None:
        result.problem(
            result.environment_file if key == "landing_root" else "(command line)", key,
            f"neither {base / campaign.campaign_id} nor {base} is a folder (campaign "
            f"{campaign.campaign_id}); pass --landing DIR or set landing_root in the environment config",
        )  # fmt: skip
        return
    result.landing = str(folder)
    kinds: Counter[str] = Counter()
    pool: Counter[str | None] = Counter()
    ignored = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")):
            continue
        kind = src.kind_of(path.name)
        if kind is None:
            ignored.append(path.name + ("/" if path.is_dir() else ""))
            continue
        fmt = src.format_of(path.name)
        if path.is_dir():
            parts = [p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_"))]
            fmt = fmt or next(iter({src.format_of(p.name) for p in parts}), None)
            if not parts:
                result.problem(str(path), "landing", f"an empty folder named like a {kind.name} file")
                continue
        else:
            parts = [path]
        if fmt is None or fmt not in kind.formats:
            result.problem(
                str(path), "landing", f"a {kind.name} file must be one of "
                f"{', '.join('.' + f for f in kind.formats)} (optionally .gz for text), got {path.name!r}",
            )  # fmt: skip
            continue
        kinds[kind.name] += 1
        for part in sorted(parts):
            columns = _columns(part, fmt, kind, result)
            if columns is None or kind.entry_list:
                continue
            missing = [c for c in kind.required if c not in columns]
            if missing:
                result.problem(
                    str(part), "columns", f"a {kind.name} file without required column(s) {', '.join(missing)}"
                )
            elif kind.name == "code_pool":
                _count_codes(part, fmt, campaign, pool, result)
    listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no contract file"
    result.notes.append(f"landing {folder}: {listed}" + (f"; ignored: {', '.join(ignored)}" if ignored else ""))
    _needs(campaign, file, folder, kinds, result)
    if campaign.codes.source == "pool" and kinds["code_pool"]:
        _capacities(campaign, file, pool, result)


def _needs(campaign: Campaign, file: str, folder: Path, kinds: Counter, result: Validation) -> None:
    if not kinds["registrations"]:
        result.problem(
            str(folder), "landing", "no registrations file (registrations*.csv, .tsv, .json, .parquet, .avro)"
        )
    wanted = {"external": ("scoring.source", "scored"), "fanlist": ("scoring.source", "fanlist_ranks")}
    if campaign.scoring.source in wanted:
        key, kind = wanted[campaign.scoring.source]
        if not kinds[kind]:
            result.problem(
                file, key, f"{campaign.scoring.source} scores need a {kind}* file in {folder}; there is none"
            )
    if campaign.codes.source == "pool" and not kinds["code_pool"]:
        result.problem(file, "codes.source", f"pool codes need a code_pool* file in {folder}; there is none")


def _text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def _column(name) -> str:
    """A header's or JSON key's column name as ingest reads it: trimmed, any case, no byte-order mark."""
    return str(name).lstrip("\ufeff").strip().lower()


def _columns(path: Path, fmt: str, kind: src.FileKind, result: Validation) -> list[str] | None:
    """The file's column names (its header, first JSON object or schema), or None when unreadable."""
    try:
        if fmt in ("csv", "tsv"):
            with _text(path) as f:
                header = next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","), [])
            return [_column(c) for c in header]
        if fmt == "json":
            with _text(path) as f:
                line = next((x for x in f if x.strip()), "{}")
            first = json.loads(line)
            return [_column(k) for k in first] if isinstance(first, dict) else []
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if fmt == "avro":
            try:
                import fastavro
            except ImportError:
                result.notes.append(f"{path.name}: Avro columns not checked (needs the fastavro package)")
                return None
            with open(path, "rb") as f:
                return [x["name"] for x in fastavro.reader(f).writer_schema.get("fields", [])]
        return []  # txt lists: one entry per line, nothing to check
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one problem line
        result.problem(str(path), "landing", f"cannot read it as {fmt} ({type(exc).__name__}: {str(exc)[:200]})")
        return None


def _count_codes(path: Path, fmt: str, campaign: Campaign, pool: Counter, result: Validation) -> None:
    """Distinct-ish count of codes per market (None: campaign-wide codes), for the capacity check."""
    try:
        if fmt in ("csv", "tsv"):
            with _text(path) as f:
                for i, raw in enumerate(csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")):
                    if i >= MAX_COUNTED_CODES:
                        break
                    row = {_column(k): v for k, v in raw.items() if k is not None}
                    if (row.get("code") or "").strip():
                        pool[(row.get("market_id") or "").strip() or None] += 1
        elif fmt == "json":
            with _text(path) as f:
                for line in f:
                    if line.strip():
                        try:  # a malformed line is ingest's to quarantine, not a reason to stop counting
                            parsed = json.loads(line)
                        except ValueError:
                            continue
                        if not isinstance(parsed, dict):
                            continue
                        row = {_column(k): v for k, v in parsed.items()}
                        if str(row.get("code") or "").strip():
                            pool[str(row.get("market_id") or "").strip() or None] += 1
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=[c for c in ("code", "market_id") if c in pq.read_schema(path).names])
            markets = table.column("market_id").to_pylist() if "market_id" in table.column_names else None
            for i, code in enumerate(table.column("code").to_pylist()):
                if code and str(code).strip():
                    pool[(str(markets[i]).strip() or None) if markets and markets[i] else None] += 1
        else:
            result.notes.append(f"{path.name}: codes not counted ({fmt})")
    except Exception as exc:  # noqa: BLE001
        result.problem(str(path), "landing", f"cannot count its codes ({type(exc).__name__}: {str(exc)[:200]})")


def _capacities(campaign: Campaign, file: str, pool: Counter, result: Validation) -> None:
    codes = campaign.codes
    known = set(campaign.market_ids)
    strangers = sorted(m for m in pool if m is not None and m not in known)
    if strangers:
        result.notes.append(
            f"code pool: codes for market(s) not in the campaign, never used: {', '.join(strangers[:5])}"
        )
    short = "" if not codes.allow_partial else " (codes.allow_partial: the stage issues what there is)"
    if codes.per_market:
        for i, market in enumerate(campaign.markets):
            have = pool.get(market.market_id, 0)
            if have < market.capacity and not codes.allow_partial:
                result.problem(
                    file, f"markets[{i}].capacity", f"{market.capacity:,} for {market.market_id}, but the code pool "
                    f"holds {have:,} codes for it (codes.per_market)",
                )  # fmt: skip
        result.notes.append(f"code pool: {sum(pool.values()):,} codes for {len(known & set(pool))} market(s){short}")
        return
    total, capacity = sum(pool.values()), sum(m.capacity for m in campaign.markets)
    if total < capacity and not codes.allow_partial:
        result.problem(file, "markets[*].capacity", f"{capacity:,} in all, but the code pool holds {total:,} codes")
    result.notes.append(f"code pool: {total:,} codes campaign-wide for a capacity of {capacity:,}{short}")


def write_schemas(out: Path | None = None) -> list[Path]:
    """JSON Schema of the campaign, environment and schedules files, from their pydantic models."""
    from campaign_pipeline.config import default_conf_dir
    from campaign_pipeline.ops.deploy.schedules import SchedulesFile

    out = out or default_conf_dir() / "schemas"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model, title in (
        ("campaign", Campaign, "campaign-pipeline campaign config (conf/campaigns/<id>.yaml)"),
        ("environment", Environment, "campaign-pipeline environment config (conf/environments/<env>.yaml)"),
        ("schedules", SchedulesFile, "campaign-pipeline schedules (conf/schedules.yaml)"),
    ):
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
        schema["title"] = title
        path = out / f"{name}.schema.json"
        # written aside, then renamed: an editor (or a second run) never reads half a schema
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        part.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(part, path)
        written.append(path)
    return written
