"""Phone numbers → E.164 with Google's libphonenumber rules (the `phonenumbers` port).

Parsing needs Python, so it runs in one vectorised pandas UDF; everything around it is built-in
Spark. The default region of a number typed without `+` is the registrant's country, else the
campaign's home country.

Fans type their number the way their own country dials abroad. A number that is not valid with
the default region and starts with an international dialling prefix (`00`, `011`, or `+` followed
by spaces or dots) is tried as international (`+` and the digits after the prefix) before it is
called invalid; `intl_prefix` marks the numbers that needed this fallback.
"""

from __future__ import annotations

import re

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

# A StructType, not a DDL string: the UDF module is also imported on executors, without a session.
PHONE_STRUCT = T.StructType(
    [
        T.StructField("e164", T.StringType()),
        T.StructField("country", T.StringType()),
        T.StructField("type", T.StringType()),
        T.StructField("valid", T.BooleanType()),
        T.StructField("intl_prefix", T.BooleanType()),
    ]
)

_DIALLING_PREFIX = re.compile(r"^\s*(?:\+|00|011)")
_NOT_DIGITS = re.compile(r"\D")

_TYPE_NAMES = {
    0: "fixed_line",
    1: "mobile",
    2: "fixed_line_or_mobile",
    3: "toll_free",
    4: "premium_rate",
    5: "shared_cost",
    6: "voip",
    7: "personal_number",
    8: "pager",
    9: "uan",
    10: "voicemail",
    99: "unknown",
}


def _valid(raw: str, region: str | None):
    import phonenumbers

    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def parse_phone(raw: str | None, region: str | None) -> tuple:
    """(e164, country, line type, valid, intl_prefix) for one typed number; all None if blank."""
    import phonenumbers

    if raw is None or not str(raw).strip():
        return (None, None, None, None, None)
    text = str(raw)
    number, fallback = _valid(text, (region or "US").upper()), False
    if number is None and _DIALLING_PREFIX.match(text):
        digits = _NOT_DIGITS.sub("", _DIALLING_PREFIX.sub("", text, count=1))
        number, fallback = (_valid("+" + digits, None), True) if digits else (None, False)
    if number is None:
        return (None, None, None, False, False)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    kind = _TYPE_NAMES.get(int(phonenumbers.number_type(number)), "unknown")
    return (e164, phonenumbers.region_code_for_number(number), kind, True, fallback)


@pandas_udf(PHONE_STRUCT)
def _parse_phones(raw: pd.Series, region: pd.Series) -> pd.DataFrame:
    rows = [parse_phone(p, r) for p, r in zip(raw.tolist(), region.tolist(), strict=True)]
    return pd.DataFrame(rows, columns=["e164", "country", "type", "valid", "intl_prefix"])


def phone_details(phone: Column, country: Column, home_country: str) -> Column:
    """Struct (e164, country, type, valid, intl_prefix) of a typed phone number."""
    region = F.coalesce(F.upper(F.trim(country)), F.lit(home_country))
    return _parse_phones(phone, region)
