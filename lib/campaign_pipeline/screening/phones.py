"""Phone numbers → E.164 with Google's libphonenumber rules (the `phonenumbers` port).

Parsing needs Python, so it runs in one vectorised pandas UDF; everything around it is built-in
Spark. The default region of a number typed without `+` is the registrant's country, else the
campaign's home country.
"""

from __future__ import annotations

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
    ]
)

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


def parse_phone(raw: str | None, region: str | None) -> tuple[str | None, str | None, str | None, bool | None]:
    """(e164, country, line type, valid) for one typed number; (None, None, None, None) if blank."""
    import phonenumbers

    if raw is None or not str(raw).strip():
        return (None, None, None, None)
    try:
        number = phonenumbers.parse(str(raw), (region or "US").upper())
    except phonenumbers.NumberParseException:
        return (None, None, None, False)
    if not phonenumbers.is_valid_number(number):
        return (None, None, None, False)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    kind = _TYPE_NAMES.get(int(phonenumbers.number_type(number)), "unknown")
    return (e164, phonenumbers.region_code_for_number(number), kind, True)


@pandas_udf(PHONE_STRUCT)
def _parse_phones(raw: pd.Series, region: pd.Series) -> pd.DataFrame:
    rows = [parse_phone(p, r) for p, r in zip(raw.tolist(), region.tolist(), strict=True)]
    return pd.DataFrame(rows, columns=["e164", "country", "type", "valid"])


def phone_details(phone: Column, country: Column, home_country: str) -> Column:
    """Struct (e164, country, type, valid) of a typed phone number."""
    region = F.coalesce(F.upper(F.trim(country)), F.lit(home_country))
    return _parse_phones(phone, region)
