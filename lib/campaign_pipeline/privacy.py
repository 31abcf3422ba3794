"""Masking of personal data for logs, Slack, reports and `explain` output.

`mask_email("jane.doe@example.com")` → `j***@example.com`; `mask_phone("+14155550123")` →
`+1*******0123` (country code and last four digits kept); `mask_code("ABCD2345XY")` →
`*******5XY`. Spark column versions do the same
inside a plan, so masked values never need raw data on the driver.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the column versions import Spark when called: `validate` and `runs` run without it
    from pyspark.sql import Column

_EMAIL = re.compile(r"[^\s@\"'<>,;:]+@[^\s@\"'<>,;:]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


def mask_email(email: str | None) -> str | None:
    if not email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_phone(phone: str | None) -> str | None:
    if not phone:
        return phone
    keep_head = 2 if phone.startswith("+") else 0
    if len(phone) <= keep_head + 4:
        return "*" * len(phone)
    return phone[:keep_head] + "*" * (len(phone) - keep_head - 4) + phone[-4:]


def mask_email_col(col: Column) -> Column:
    from pyspark.sql import functions as F

    return F.when(
        col.contains("@"), F.concat(F.substring(col, 1, 1), F.lit("***@"), F.substring_index(col, "@", -1))
    ).when(col.isNotNull(), F.lit("***"))


def mask_phone_col(col: Column) -> Column:
    from pyspark.sql import functions as F

    return F.when(
        F.length(col) > 6,
        F.concat(F.substring(col, 1, 2), F.repeat(F.lit("*"), F.length(col) - 6), F.substring(col, -4, 4)),
    ).when(col.isNotNull(), F.lit("******"))


def mask_code(code: str | None) -> str | None:
    """An access code as support may see it: its last three characters, the rest starred
    (`ABCD2345XY` → `*******5XY`); codes of six characters or fewer are starred whole."""
    if not code:
        return code
    return "*" * len(code) if len(code) <= 6 else "*" * (len(code) - 3) + code[-3:]


def mask_id(value: str | None) -> str | None:
    """A fan id in an error message: its first and last two characters (`F-000123` → `F-****23`)."""
    if not value:
        return value
    return "*" * len(value) if len(value) <= 4 else value[:2] + "*" * (len(value) - 4) + value[-2:]


def mask_code_col(col: Column) -> Column:
    from pyspark.sql import functions as F

    return F.when(F.length(col) > 6, F.concat(F.repeat(F.lit("*"), F.length(col) - 3), F.substring(col, -3, 3))).when(
        col.isNotNull(), F.repeat(F.lit("*"), F.length(col))
    )


def scrub(text: str, limit: int = 300, hide: tuple[str | None, ...] = ()) -> str:
    """Free text (a gateway's error, an exception's first line) fit for a log or Slack: emails and
    phone-like digit runs masked, each of `hide` (e.g. the message's access code, which a gateway
    may echo with the text) masked, whitespace folded, length bounded."""
    for secret in hide:
        if secret and len(secret) >= 4:
            text = text.replace(secret, mask_code(secret) or "")
    text = _EMAIL.sub(lambda m: mask_email(m.group(0)) or "", text)
    text = _PHONE.sub(lambda m: mask_phone(re.sub(r"[^\d+]", "", m.group(0))) or "", text)
    return " ".join(text.split())[:limit]


def scrub_col(col: Column) -> Column:
    """`scrub` inside a plan, for free text grouped by Spark (a gateway's error, a quarantine
    reason): email addresses and phone-like digit runs become `***`, so a figure built from it
    holds no contact."""
    from pyspark.sql import functions as F

    no_email = F.regexp_replace(col, _EMAIL.pattern, "***@***")
    return F.regexp_replace(no_email, _PHONE.pattern, "***")
