"""Typed configuration: the campaign YAML (`conf/campaigns/<id>.yaml`) and the environment YAML
(`conf/environments/<env>.yaml`); `campaign-pipeline config schema` writes their JSON Schema.

`load_campaign` and `load_environment` turn a file into a validated model or raise a
`ConfigError` whose one-line message names the file, the key and the problem, e.g.
``conf/campaigns/x.yaml: markets[2].capacity: must be > 0, got -5``.
Secrets are never read from these files: the environment config only names the environment
variables that hold them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from campaign_pipeline import channels
from campaign_pipeline.errors import ConfigError
from campaign_pipeline.project import project_root
from campaign_pipeline.templating import template_problem

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class _Model(BaseModel):
    # Unknown keys are errors: a typo in a config key must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- campaign


class Options(_Model):
    allow_intl_phones: bool = Field(
        False,
        description="a valid phone outside `sms_countries` and the home country makes a fan ineligible (INTL_PHONE) unless true",
    )
    order_by_preference: bool = Field(
        True,
        description="round k offers every unplaced fan's k-th choice (first choices served first); false: a stable "
        "matching by fan-proposing deferred acceptance",
    )
    single_market: bool = Field(True, description="a fan holds at most one market (false: one code per market won)")
    min_score: float = Field(0.22, ge=0.0, le=1.0, description="a fan whose band_score is below this is not selectable")
    reassign: bool = Field(
        False,
        description="recompute the selection on every run, except selections that hold an issued code; false: a later "
        "run only tops up",
    )
    sms_countries: list[str] = Field(
        default_factory=lambda: ["US", "CA"],
        min_length=1,
        description="ISO 3166 alpha-2 countries SMS are sent to; a phone outside them (and the home country) is international",
    )

    @field_validator("sms_countries")
    @classmethod
    def _iso_countries(cls, value: list[str]) -> list[str]:
        out = []
        for code in value:
            if not re.fullmatch(r"[A-Za-z]{2}", code):
                raise ValueError(f"must be ISO 3166 alpha-2 country codes, got {code!r}")
            out.append(code.upper())
        return out


class Band(_Model):
    name: str = Field(description="the band's name, shown in the report and `explain`")
    min: float = Field(ge=0.0, le=1.0, description="lowest raw score of the band (included)")
    max: float = Field(ge=0.0, le=1.0, description="highest raw score (excluded, except 1.0 in the top band)")

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.min >= self.max:
            raise ValueError(f"min must be < max, got min={self.min} max={self.max}")
        return self


def _default_bands() -> list[Band]:
    return [
        Band(name="high", min=0.95, max=1.0),
        Band(name="mid", min=0.80, max=0.95),
        Band(name="low", min=0.22, max=0.80),
    ]


class FanlistFormula(_Model):
    formula: Literal["linear", "exponential"] = Field(
        "linear", description="linear: 1 − (rank − 1) / N; exponential: 0.5 ^ ((rank − 1) / half_life)"
    )
    half_life: float | None = Field(None, gt=0, description="ranks per halving of the score (required for exponential)")

    @model_validator(mode="after")
    def _half_life_for_exponential(self) -> FanlistFormula:
        if self.formula == "exponential" and self.half_life is None:
            raise ValueError("half_life is required when formula is exponential")
        return self


class ModelScoring(_Model):
    path: str | None = Field(
        None, description="a Spark ML PipelineModel saved by the training notebook; unset: the built-in weighted model"
    )
    weights: dict[str, float] = Field(
        default_factory=dict, description="built-in model weights by feature name, overriding the defaults one by one"
    )
    intercept: float | None = Field(None, description="built-in model intercept (default −2.6)")


class Scoring(_Model):
    source: Literal["model", "external", "fanlist"] = Field(
        "model", description="where raw scores come from: the model, the ingested scored file, or fanlist ranks"
    )
    model: ModelScoring = Field(default_factory=ModelScoring, description="the model source's settings")
    bands: list[Band] = Field(
        default_factory=_default_bands,
        min_length=1,
        description="score bands; they tile [lowest min, 1.0] with no gap or overlap (default high, mid, low)",
    )
    fanlist: FanlistFormula = Field(default_factory=FanlistFormula, description="how fanlist ranks become scores")

    @field_validator("bands")
    @classmethod
    def _bands_cover_the_score_range(cls, bands: list[Band]) -> list[Band]:
        """Bands tile [lowest min, 1.0] with no overlap and no gap, so every score at or above the
        lowest band's min has exactly one band (only a score below it is BELOW_LOWEST_BAND)."""
        names = [b.name for b in bands]
        if len(set(names)) != len(names):
            raise ValueError(f"band names must be unique, got {names}")
        ordered = sorted(bands, key=lambda b: b.min)
        for lower, upper in zip(ordered, ordered[1:], strict=False):
            if lower.max > upper.min:
                raise ValueError(
                    f"bands {lower.name!r} and {upper.name!r} overlap: {lower.name!r} ends at {lower.max}, "
                    f"{upper.name!r} starts at {upper.min}"
                )
            if lower.max < upper.min:
                raise ValueError(
                    f"gap between bands {lower.name!r} and {upper.name!r}: scores in [{lower.max}, {upper.min}) "
                    f"would have no band; band {upper.name!r} must start at {lower.max}"
                )
        top = ordered[-1]
        if top.max < 1.0:
            raise ValueError(
                f"the top band {top.name!r} ends at {top.max}: scores above it would have no band; its max must be 1.0"
            )
        return bands


class Velocity(_Model):
    max_registrations: int = Field(
        5, gt=0, description="more registrations than this from one IP or device in the window is VELOCITY"
    )
    window_minutes: int = Field(10, gt=0, description="the sliding window's length")


class ScalperThresholds(_Model):
    min_resale_listings: int = Field(
        10, ge=0, description="resale listings in 24 months that, without attendance, are SCALPER_SIGNALS"
    )
    min_chargebacks: int = Field(
        2, ge=0, description="chargebacks in 24 months that, without attendance, are SCALPER_SIGNALS"
    )


MAILBOX_PROVIDERS = [
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "ymail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.net",
    "mail.com",
    "zoho.com",
    "yandex.com",
    "comcast.net",
    "verizon.net",
    "att.net",
    "sbcglobal.net",
    "cox.net",
    "charter.net",
    "bellsouth.net",
    "earthlink.net",
    "optonline.net",
    "shaw.ca",
    "rogers.com",
    "sympatico.ca",
    "videotron.ca",
    "yahoo.ca",
    "yahoo.co.uk",
    "yahoo.fr",
    "yahoo.de",
    "yahoo.es",
    "hotmail.co.uk",
    "hotmail.fr",
    "hotmail.es",
    "hotmail.it",
    "live.co.uk",
    "live.fr",
    "outlook.fr",
    "outlook.de",
    "btinternet.com",
    "sky.com",
    "virginmedia.com",
    "web.de",
    "gmx.de",
    "t-online.de",
    "freenet.de",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "sfr.fr",
    "libero.it",
    "virgilio.it",
    "mail.ru",
    "yandex.ru",
    "qq.com",
    "163.com",
    "126.com",
    "naver.com",
    "daum.net",
    "uol.com.br",
    "bol.com.br",
    "terra.com.br",
    "prodigy.net.mx",
    "tutanota.com",
    "fastmail.com",
    "hey.com",
]


class WeakSignalWeights(_Model):
    """How often two accounts of one stealth ring agree on each weak signal (Fellegi–Sunter's m):
    the evidence of an agreement is log2(m / u), u being how often two fresh accounts of the
    campaign agree on that value by chance (its share of the campaign's fresh accounts)."""

    ip_range: float = Field(0.9, gt=0, le=1, description="same IPv4 /24 or IPv6 /48")
    email_domain: float = Field(0.9, gt=0, le=1, description="same email domain that is not a mailbox provider")
    phone_block: float = Field(0.9, gt=0, le=1, description="phone numbers within the same block of 100 (E.164)")
    postal_code: float = Field(0.9, gt=0, le=1, description="same country and postal code")
    email_pattern: float = Field(
        0.8, gt=0, le=1, description="same shape of the email's local part (letters, digit counts, punctuation)"
    )
    first_market: float = Field(
        0.9, gt=0, le=1, description="same first market preference (compared, never blocked on)"
    )


class WeakLinks(_Model):
    enabled: bool = Field(True, description="link fresh accounts by weak signals (STEALTH_RING, REVIEW)")
    fresh_days: int = Field(
        90,
        ge=0,
        description="an account created this many days or fewer before its registration (by its fan activity) is "
        "fresh; only fresh accounts are weakly linked",
    )
    max_block: int = Field(
        100,
        gt=1,
        description="a weak-signal value held by more fresh accounts than this pairs nobody (it is counted as a hot "
        "block in the screen's figures): the candidate pairs stay below max_block / 2 per account",
    )
    min_signals: int = Field(
        2, ge=1, description="a weak link shares at least this many weak signals (the first market never counts)"
    )
    min_weight: float = Field(
        -3.0,
        description="a candidate pair is a weak link when its evidence, in bits (log2 odds that the two accounts "
        "are one operation, with the prior 1 / fresh accounts), is at least this: -3 is odds of 1 to 8, as a ring "
        "makes its own values common; the cluster verdict (STEALTH_RING or REVIEW) is what decides",
    )
    hot_min_bits: float = Field(
        3.0,
        ge=0,
        description="a value held by more than max_block fresh accounts pairs nobody, but once two accounts are a "
        "candidate pair, such a value they both hold counts (as a shared signal and as evidence) when it still "
        "carries at least this many bits: 3 is at most 1/8 of the fresh accounts (times m), as an operation's email "
        "template among the campaign's fresh accounts; the commonest shapes carry less",
    )
    ring_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="a weak-link cluster larger than screening.ring_size is a STEALTH_RING when at least this "
        "share of its accounts attended no event (and resale_share resell); otherwise (and every smaller "
        "cluster) REVIEW",
    )
    resale_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a STEALTH_RING also needs at least this share of its accounts with resale listings (any, "
        "below the scalper threshold too); 0 decides on size and attendance alone",
    )
    mailbox_providers: list[str] = Field(
        default_factory=lambda: list(MAILBOX_PROVIDERS),
        description="email domains shared by the public (never an email_domain signal)",
    )
    m: WeakSignalWeights = Field(default_factory=WeakSignalWeights, description="per-signal agreement rates (m)")


class Screening(_Model):
    blocked_emails: list[str] = Field(
        default_factory=list, description="addresses that are BLOCKED_EMAIL (compared canonically)"
    )
    blocked_domains: list[str] = Field(
        default_factory=list, description="domains (and their subdomains) that are BLOCKED_DOMAIN"
    )
    allowed_patterns: list[str] = Field(
        default_factory=list, description="email globs that lift both blocks (ALLOWLISTED), e.g. `*@artist.example`"
    )
    rules_files: list[str] = Field(
        default_factory=list, description="block/allow list files, relative to conf/ (e.g. rules/blocked_domains.txt)"
    )
    plus_tag_providers: list[str] = Field(
        default_factory=lambda: ["gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "icloud.com"],
        description="mail providers whose `+tag` is dropped from the canonical email used for matching",
    )
    ring_size: int = Field(6, gt=1, description="an identity cluster with more accounts than this is a FRAUD_RING")
    max_shared: int = Field(
        50, gt=1, description="an identifier held by more accounts is SHARED_IDENTIFIER and links nobody"
    )
    velocity: Velocity = Field(default_factory=Velocity, description="registration bursts per IP or device")
    scalper: ScalperThresholds = Field(default_factory=ScalperThresholds, description="scalper activity thresholds")
    weak_links: WeakLinks = Field(
        default_factory=WeakLinks, description="linking fresh accounts that share no identifier (STEALTH_RING, REVIEW)"
    )


class Market(_Model):
    market_id: str = Field(pattern=_ID, description="the market's id, as registrations list it in market_preferences")
    name: str = Field(description="the market's name in messages and the report")
    capacity: int = Field(description="codes the market can give (> 0)")
    event_date: dt.date = Field(description="the show's date, for messages")
    timezone: str = Field("UTC", description="IANA time zone of the show")
    locale: str = Field("en_US", description="message locale for fans whose own locale has no template")

    @field_validator("capacity")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be > 0, got {value}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


class Codes(_Model):
    source: Literal["pool", "generated", "tm"] = Field(
        "pool", description="uploaded pool, HMAC-generated codes, or tm (inventory managed elsewhere: no code string)"
    )
    per_market: bool = Field(True, description="pool codes belong to their market_id; false: one campaign-wide pool")
    length: int = Field(10, ge=6, le=32, description="characters of a generated code (Crockford base32)")
    valid_days_before: int = Field(
        1, ge=0, description="a code is valid from this many days before its wave's notify time"
    )
    valid_days_after: int = Field(365, gt=0, description="... to this many days after it")
    allow_partial: bool = Field(
        False, description="a pool too small leaves the fans beyond it uncoded (NO_CODE_AVAILABLE) instead of failing"
    )


class Wave(_Model):
    wave_id: str = Field(pattern=_ID, description="the wave's id")
    notify_at: dt.datetime = Field(description="when the wave is sent (ISO-8601 with a time zone)")
    limit: int | None = Field(None, gt=0, description="most fans the wave takes; unset: no limit")
    markets: list[str] = Field(default_factory=list, description="markets whose coded fans it takes; empty: all")
    channels: str = Field(
        "auto",
        description="auto (SMS when the fan is textable, else email), both (every channel the fan is reachable on), "
        "or one channel's name (sms, email)",
    )

    @field_validator("channels")
    @classmethod
    def _known_channel(cls, value: str) -> str:
        known = ["auto", *channels.names(), "both"]
        if value not in known:
            quoted = [repr(k) for k in known]
            raise ValueError(f"input should be {', '.join(quoted[:-1])} or {quoted[-1]}, got {value!r}")
        return value

    @field_validator("notify_at")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone, e.g. 2027-03-01T15:00:00Z")
        return value


class Template(_Model):
    sms: str = Field(description="Jinja2 template of the SMS text")
    email_subject: str = Field(description="Jinja2 template of the email subject")
    email_body: str = Field(description="Jinja2 template of the email body (HTML markup is autoescaped)")


class Messages(_Model):
    link: str = Field(
        "https://example.com/presale/{campaign_id}", description="the link in messages; `{campaign_id}` is replaced"
    )
    default_locale: str = Field(
        "en_US", description="the locale used when neither the fan's nor the market's has a template"
    )
    templates: dict[str, Template] = Field(
        default_factory=dict, description="message templates per locale; without one, built-in English templates"
    )
    max_sms_segments: int = Field(
        6, ge=1, le=20, description="an SMS rendered longer than this many segments is quarantined, not sent"
    )
    max_email_bytes: int = Field(
        100_000,
        ge=1_000,
        le=200_000,
        description="an email (subject + body, UTF-8) larger than this is quarantined, not sent (an SQS "
        "message holds at most 256 KiB)",
    )


TEXT_ENCODINGS = ("UTF-8", "ISO-8859-1", "US-ASCII")  # byte-per-line encodings Spark decodes natively
LANDING_KINDS = (
    "registrations",
    "fan_activity",
    "scored",
    "fanlist_ranks",
    "code_pool",
    "blocked_emails",
    "blocked_domains",
    "allowed_patterns",
)


class IngestOptions(_Model):
    encoding: dict[str, str] = Field(
        default_factory=dict,
        description="text encoding per landing file kind (default UTF-8; invalid bytes are quarantined)",
    )

    @field_validator("encoding")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        aliases = {"latin-1": "ISO-8859-1", "latin1": "ISO-8859-1", "utf8": "UTF-8", "ascii": "US-ASCII"}
        out = {}
        for kind, name in value.items():
            if kind not in LANDING_KINDS:
                raise ValueError(f"unknown landing file kind {kind!r} (one of {', '.join(LANDING_KINDS)})")
            canonical = aliases.get(name.lower(), name.upper())
            if canonical not in TEXT_ENCODINGS:
                raise ValueError(f"{kind}: encoding {name!r} is not supported (use one of {', '.join(TEXT_ENCODINGS)})")
            out[kind] = canonical
        return out

    def of(self, kind: str) -> str:
        return self.encoding.get(kind, "UTF-8")


class Campaign(_Model):
    campaign_id: str = Field(
        pattern=_ID, description="the campaign's id: partitions every table, names its landing folder"
    )
    name: str = Field(description="the campaign's name in the report and messages")
    artist: str = Field(description="the artist, for message templates")
    seed: int = Field(description="drives every lottery and hash-derived choice; change it and outcomes change")
    home_country: str = Field(
        "US", pattern=r"^[A-Z]{2}$", description="default region for phones typed without a country code"
    )
    options: Options = Field(default_factory=Options, description="selection and reachability options")
    scoring: Scoring = Field(default_factory=Scoring, description="the score source and bands")
    screening: Screening = Field(default_factory=Screening, description="block/allow lists and fraud thresholds")
    markets: list[Market] = Field(min_length=1, description="the shows; at least one")
    codes: Codes = Field(default_factory=Codes, description="where codes come from and how long they are valid")
    waves: list[Wave] = Field(default_factory=list, description="when and how coded fans are told")
    messages: Messages = Field(default_factory=Messages, description="message templates and limits")
    ingest: IngestOptions = Field(default_factory=IngestOptions, description="landing file options")

    @model_validator(mode="after")
    def _references(self) -> Campaign:
        ids = [m.market_id for m in self.markets]
        seen: set[str] = set()
        for i, market_id in enumerate(ids):
            if market_id in seen:
                raise _KeyedError(f"markets[{i}].market_id", f"duplicate market id {market_id!r}")
            seen.add(market_id)
        wave_ids: set[str] = set()
        for i, wave in enumerate(self.waves):
            if wave.wave_id in wave_ids:
                raise _KeyedError(f"waves[{i}].wave_id", f"duplicate wave id {wave.wave_id!r}")
            wave_ids.add(wave.wave_id)
            for j, market_id in enumerate(wave.markets):
                if market_id not in seen:
                    raise _KeyedError(f"waves[{i}].markets[{j}]", f"unknown market {market_id!r}")
        for locale, template in self.messages.templates.items():
            for field in ("sms", "email_subject", "email_body"):
                problem = template_problem(field, getattr(template, field))
                if problem:
                    raise _KeyedError(f"messages.templates.{locale}.{field}", problem)
        return self

    @property
    def market_ids(self) -> list[str]:
        return [m.market_id for m in self.markets]


# --------------------------------------------------------------------------- environment


class Secrets(_Model):
    """Where secrets come from: the names of environment variables, and optionally the AWS Secrets
    Manager secret (ARN or name) each is read from when its variable is unset. The values never
    live in a file; cluster jobs get the references, never the values (docs: Configuration, Secrets)."""

    code_key_env: str = Field("CAMPAIGN_CODE_KEY", description="variable holding the code-generation key")
    sms_token_env: str = Field("SMS_API_TOKEN", description="variable holding the SMS gateway's bearer token")
    slack_webhook_env: str = Field("SLACK_WEBHOOK_URL", description="variable holding the Slack webhook URL")
    code_key_secret: str | None = Field(None, description="Secrets Manager ARN or name of the code key")
    sms_token_secret: str | None = Field(None, description="Secrets Manager ARN or name of the SMS token")
    slack_webhook_secret: str | None = Field(None, description="Secrets Manager ARN or name of the Slack webhook")


class SparkSettings(_Model):
    master: str | None = Field(
        None, description="Spark master in local mode (e.g. local[*]); cluster mode takes spark-submit's"
    )
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Spark settings; they win over the defaults the session sets"
    )


class NotifySettings(_Model):
    """How the notifier sends (docs: Rules, Notify). Limits are per campaign, across the whole cluster."""

    max_in_flight: int = Field(200, ge=1, description="requests at once")
    rate_per_second: float = Field(200, ge=0.1, description="request starts per second (0.1 and up)")
    max_attempts: int = Field(5, ge=1, description="tries per message before it is failed")
    timeout_seconds: float = Field(10, gt=0, description="per request")
    backoff_seconds: float = Field(0.5, ge=0, description="first retry wait; doubles, with jitter")
    backoff_max_seconds: float = Field(30, gt=0, description="longest wait between retries of our own choosing")
    retry_after_max_seconds: float = Field(
        60,
        ge=0,
        description="the gateway's Retry-After is honoured up to this; a longer one defers the "
        "message (and the rest of the wave) to the next run, without failing it or spending an attempt",
    )
    chunk_size: int = Field(5000, gt=0, description="messages per committed chunk: a crash re-sends at most one")
    wave_attempts: int = Field(2, ge=1, description="automatic notify runs of a wave before an operator decides")
    lease_seconds: float = Field(
        120,
        ge=3,
        description="how long a sending run holds a wave between renewals (it renews every third of it, so keep it "
        "well above a Delta commit's time); another run takes a wave over only once its holder let this pass "
        "without renewing",
    )
    email_groups: int = Field(
        64,
        ge=1,
        le=10000,
        description="FIFO queues: message groups per wave (by fan hash), so consumers work in parallel",
    )
    preflight_timeout_seconds: float = Field(
        5, gt=0, description="how long the check that the gateway and the queue answer waits for each"
    )

    @model_validator(mode="after")
    def _lease_outlasts_a_request(self) -> NotifySettings:
        # A sender starts no request in the last third of its lease; one started just before must
        # end (or time out) before another run may take the wave over.
        if self.lease_seconds < 3 * self.timeout_seconds:
            raise _KeyedError(
                "notify.lease_seconds",
                f"must be at least 3 × notify.timeout_seconds ({3 * self.timeout_seconds:g}), got {self.lease_seconds:g}",
            )
        return self


class EmrSettings(_Model):
    """Where jobs run on AWS (docs: Operator's guide, On EMR). Artifacts are what `make dist` builds, uploaded
    under `artifacts_uri`: jobs/, the packed virtual environment and the conf/ archive."""

    artifacts_uri: str = Field(pattern=r"^s3://", description="s3://bucket/prefix of jobs/, venv and conf archives")
    application_id: str | None = Field(None, description="EMR Serverless application for job runs")
    execution_role_arn: str | None = Field(None, description="role the Serverless job runs as")
    scheduler_role_arn: str | None = Field(None, description="role EventBridge Scheduler assumes to start job runs")
    schedule_group: str = Field("campaign-pipeline", description="EventBridge Scheduler group `schedule apply` manages")
    cluster_id: str | None = Field(None, description="EMR on EC2 cluster for `submit --target steps` (j-…)")
    cluster_name: str | None = Field(None, description="or the name of the one live cluster to add steps to")
    log_uri: str | None = Field(None, pattern=r"^s3://", description="s3:// prefix for EMR Serverless job run logs")


class Environment(_Model):
    name: str = Field(description="the environment's name")
    mode: Literal["local", "cluster"] = Field(
        "local", description="local: the session sets master and resources; cluster: spark-submit gives them"
    )
    warehouse_root: str = Field(description="folder or s3:// prefix holding the Delta tables (`--warehouse` overrides)")
    landing_root: str = Field(description="folder or s3:// prefix of the landing files (`--landing` overrides)")
    spark: SparkSettings = Field(default_factory=SparkSettings, description="the Spark session")
    sms_gateway_url: str | None = Field(
        None, description="base URL of the SMS gateway (notify posts to {url}/messages)"
    )
    email_queue_url: str | None = Field(None, description="SQS queue URL emails are queued on (.fifo: deduplicated)")
    aws_region: str | None = Field(None, description="AWS region for SQS, S3, EMR and Secrets Manager")
    export_root: str | None = Field(None, description="legacy wave zips; default <warehouse_root>/_exports")
    archive_root: str | None = Field(None, description="archived campaigns; default <warehouse_root>/_archive")
    lineage: Literal["checkpoint", "local_checkpoint", "persist"] | None = Field(
        None,
        description="how stages cut lineage between steps (default checkpoint)",
    )
    secrets: Secrets = Field(default_factory=Secrets, description="where secrets are read from (never their values)")
    notify: NotifySettings = Field(default_factory=NotifySettings, description="how notify sends")
    emr: EmrSettings | None = Field(None, description="Amazon EMR settings for `submit` and `schedule apply`")

    def with_roots(self, landing: str | None = None, warehouse: str | None = None) -> Environment:
        """The same environment with CLI overrides of the landing and warehouse roots."""
        update: dict[str, Any] = {}
        if landing:
            update["landing_root"] = landing
        if warehouse:
            update["warehouse_root"] = warehouse
        return self.model_copy(update=update)


# --------------------------------------------------------------------------- loading


class _KeyedError(ValueError):
    """A validation problem that knows its own key path (for cross-field checks)."""

    def __init__(self, key: str, problem: str):
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _problem(err: dict[str, Any]) -> str:
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling against the configuration reference, docs/reference/configuration.md)"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}, got {given!r}"
    if kind == "value_error":
        cause = ctx.get("error")
        return str(cause) if cause is not None else err["msg"]
    if kind == "literal_error":
        return f"{err['msg'].lower()}, got {given!r}"
    return f"{err['msg'].lower()}, got {given!r}"


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(key, problem) for each error pydantic found, in the words of `load_campaign`'s messages."""
    out = []
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _KeyedError):
            out.append((cause.key, cause.problem))
        else:
            out.append((_key_path(tuple(err["loc"])), _problem(err)))
    return out


def _format_validation(path: str, exc: ValidationError) -> str:
    return "\n".join(f"{path}: {key}: {problem}" for key, problem in validation_problems(exc))


def _read_s3_text(uri: str, what: str) -> str:
    """A config on S3 (what `submit` uploads for a cluster job)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"{uri}: cannot read the {what} file ({exc})") from None


def _read_yaml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    if str(path).startswith("s3://"):
        p, text = str(path), _read_s3_text(str(path), what)
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: {what} file not found")
        text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: {where}not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: (top level): expected a mapping of keys, got {type(data).__name__}")
    return data


def load_campaign(path: str | os.PathLike[str]) -> Campaign:
    data = _read_yaml(path, "campaign config")
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(str(path), exc)) from None


def environment_path(name_or_path: str, conf_dir: str | os.PathLike[str] | None = None) -> Path | str:
    """`local` → conf/environments/local.yaml; a path to a YAML file (or an s3:// URI) is taken as is."""
    if name_or_path.startswith("s3://"):
        return name_or_path
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        return Path(name_or_path)
    base = Path(conf_dir) if conf_dir else default_conf_dir()
    return base / "environments" / f"{name_or_path}.yaml"


def default_conf_dir() -> Path:
    """`$CAMPAIGN_PIPELINE_CONF`, else ./conf, else the project's conf/ above the current folder (a
    notebook's kernel runs in notebooks/), else the conf/ folder of the source checkout."""
    explicit = os.environ.get("CAMPAIGN_PIPELINE_CONF")
    if explicit:
        return Path(explicit)
    if Path("conf/environments").is_dir():
        return Path("conf")
    above = project_root() / "conf"
    if (above / "environments").is_dir():
        return above
    return Path(__file__).resolve().parents[2] / "conf"


def builtin_environment(name: str) -> Environment | None:
    """`local` where no conf/environments/local.yaml exists (an installed package, any folder):
    local Spark, ./warehouse and ./landing, every other setting at its default."""
    if name != "local":
        return None
    return Environment(name="local", mode="local", warehouse_root="./warehouse", landing_root="./landing")


def load_environment(name_or_path: str = "local", conf_dir: str | os.PathLike[str] | None = None) -> Environment:
    path = environment_path(name_or_path, conf_dir)
    if not isinstance(path, str) and not path.is_file() and builtin_environment(name_or_path) is not None:
        return builtin_environment(name_or_path)
    if not isinstance(path, str) and not path.is_file():
        raise ConfigError(f"{path}: environment config file not found (pass --env local|emr or a path to a YAML file)")
    data = _read_yaml(path, "environment config")
    try:
        return Environment.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(str(path), exc)) from None


def dump_campaign(campaign: Campaign, path: str | os.PathLike[str]) -> None:
    """Write a campaign as YAML that `load_campaign` reads back to an equal model."""
    data = campaign.model_dump(mode="json", exclude_none=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


# Public names for the other config files' loaders (schedules): the same YAML reading and messages.
read_yaml = _read_yaml
validation_message = _format_validation
