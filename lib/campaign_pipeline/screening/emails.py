"""Emails: normalise, syntax-check, canonicalise for matching, and apply block/allow lists.

- `email` is trimmed and lower-cased; `INVALID_EMAIL` when it is not `local@domain.tld`.
- `email_canonical` (for identity matching only): gmail/googlemail drop dots and `+tag` and use
  `gmail.com`; the configured `plus_tag_providers` drop the `+tag`.
- `BLOCKED_EMAIL`: the canonical form equals the canonical form of a listed address.
- `BLOCKED_DOMAIN`: the domain, or any parent domain, is listed or disposable
  (the `disposable-email-domains` package).
- Allow-list globs (`*@partner.example`, `vip+*@gmail.com`) win over both blocks: a match gets
  `ALLOWLISTED` instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from campaign_pipeline.frames import sql_literal

GMAIL_DOMAINS = ("gmail.com", "googlemail.com")
EMAIL_SYNTAX = r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@([a-z0-9](-*[a-z0-9])*\.)+[a-z]{2,}$"
MAX_PARENT_LEVELS = 4


def normalise_email(col: Column) -> Column:
    """Trimmed, lower-cased; blank is null."""
    value = F.lower(F.trim(col, F.lit(" \t\r\n\u00a0")))
    return F.when(F.length(value) > 0, value)


def canonical_email(email: Column, plus_tag_providers: Iterable[str]) -> Column:
    """The form two spellings of one mailbox share (for matching, never for sending)."""
    local = F.substring_index(email, "@", 1)
    domain = F.substring_index(email, "@", -1)
    untagged = F.substring_index(local, "+", 1)
    is_gmail = domain.isin(*GMAIL_DOMAINS)
    strips_tag = domain.isin(*[p.lower() for p in plus_tag_providers]) | is_gmail
    canon_local = (
        F.when(is_gmail, F.replace(untagged, F.lit("."), F.lit(""))).when(strips_tag, untagged).otherwise(local)
    )
    canon_domain = F.when(is_gmail, F.lit("gmail.com")).otherwise(domain)
    return F.when(email.isNotNull(), F.concat(canon_local, F.lit("@"), canon_domain))


def email_domain(email: Column) -> Column:
    return F.when(email.contains("@"), F.substring_index(email, "@", -1))


def parent_domains(domain: Column, levels: int = MAX_PARENT_LEVELS) -> list[Column]:
    """The domain and its parents with at least two labels: a.b.example.com, b.example.com, example.com."""
    out = [domain]
    current = domain
    for _ in range(levels - 1):
        current = F.when(F.size(F.split(current, r"\.")) > 2, F.regexp_replace(current, r"^[^.]+\.", ""))
        out.append(current)
    return out


def glob_regex(patterns: Iterable[str]) -> str | None:
    """One anchored Java regex matching any of the glob patterns (`*` any run, `?` one char)."""
    parts = []
    for pattern in patterns:
        p = pattern.strip().lower()
        if not p:
            continue
        parts.append("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in p))
    return "^(?:" + "|".join(parts) + ")$" if parts else None


def disposable_domains() -> list[str]:
    from disposable_email_domains import blocklist

    return sorted(blocklist)


# Block lists up to this many entries are held in the query plan as hash sets (no join: a join
# would carry every registrant column through it); longer lists are broadcast and joined.
IN_PLAN_LIMIT = 20_000


def _in_list(expression: str, values: list[str]) -> str:
    """SQL: `expression IN (values)` (Spark makes it a hash-set lookup); false for no values."""
    return f"{expression} IN ({', '.join(sql_literal(v) for v in values)})" if values else "false"


def tag_emails(
    spark: SparkSession,
    plus_tag_providers: Iterable[str],
    blocked_emails: Iterable[str],
    blocked_domains: Iterable[str],
    allowed_patterns: Iterable[str],
    include_disposable: bool = True,
    in_plan_limit: int = IN_PLAN_LIMIT,
):
    """Transform: adds `email`, `email_canonical`, `email_domain` and boolean flags
    `_invalid_email`, `_blocked_email`, `_blocked_domain`, `_allowlisted` (blocks already
    overridden by the allow list)."""
    providers = list(plus_tag_providers)
    blocked_canon = spark.createDataFrame(
        [(e,) for e in sorted({e.strip().lower() for e in blocked_emails if e.strip()})], "email string"
    )
    blocked_canon = blocked_canon.select(canonical_email(F.col("email"), providers).alias("_bc")).distinct()
    canon = sorted(r["_bc"] for r in blocked_canon.collect() if r["_bc"] is not None)  # the list came from here
    domains = {d.strip().lower().lstrip("@") for d in blocked_domains if d.strip()}
    if include_disposable:
        domains |= set(disposable_domains())
    in_plan = len(domains) <= in_plan_limit and len(canon) <= in_plan_limit
    allow = glob_regex(allowed_patterns)

    def held_in_plan(out: DataFrame) -> DataFrame:
        parents = F.array_compact(F.array(*parent_domains(F.col("email_domain"))))
        lookup = _in_list("d", sorted(domains))
        return (
            out.withColumn("_blocked_email", F.coalesce(F.expr(_in_list("email_canonical", canon)), F.lit(False)))
            .withColumn("_parents", parents)
            .withColumn("_blocked_domain", F.coalesce(F.expr(f"exists(_parents, d -> {lookup})"), F.lit(False)))
            .drop("_parents")
        )

    def joined(out: DataFrame) -> DataFrame:
        blocked_dom = spark.createDataFrame([(d,) for d in sorted(domains)], "_bd string")
        out = out.join(F.broadcast(blocked_canon), F.col("email_canonical") == F.col("_bc"), "left")
        out = out.withColumn("_blocked_email", F.col("_bc").isNotNull()).drop("_bc")
        hits = []
        for i, candidate in enumerate(parent_domains(F.col("email_domain"))):
            key = f"_d{i}"
            out = out.withColumn(key, candidate).join(
                F.broadcast(blocked_dom.withColumnRenamed("_bd", f"_bd{i}")), F.col(key) == F.col(f"_bd{i}"), "left"
            )
            hits.append(F.col(f"_bd{i}").isNotNull())
            out = out.drop(key)
        blocked_domain = hits[0]
        for h in hits[1:]:
            blocked_domain = blocked_domain | h
        return out.withColumn("_blocked_domain", blocked_domain).drop(*[f"_bd{i}" for i in range(len(hits))])

    def transform(df: DataFrame) -> DataFrame:
        email = normalise_email(F.col("email"))
        out = df.withColumn("email", email)
        out = out.withColumn("email_canonical", canonical_email(F.col("email"), providers)).withColumn(
            "email_domain", email_domain(F.col("email"))
        )
        out = out.withColumn("_invalid_email", F.col("email").isNotNull() & ~F.col("email").rlike(EMAIL_SYNTAX))
        out = held_in_plan(out) if in_plan else joined(out)
        allowed = F.col("email").rlike(allow) if allow else F.lit(False)
        out = out.withColumn("_allowlisted", F.coalesce(allowed, F.lit(False)))
        return out.withColumn("_blocked_email", F.col("_blocked_email") & ~F.col("_allowlisted")).withColumn(
            "_blocked_domain", F.col("_blocked_domain") & ~F.col("_allowlisted")
        )

    return transform
