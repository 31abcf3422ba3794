"""Phone numbers → E.164 with Google's libphonenumber rules.

Two implementations of one decision. `PhoneDetails` (jvm/, built by `make install` into
jars/campaign-pipeline-udfs.jar beside Google's Java libphonenumber) runs inside the executors'
JVM (about 120k messy numbers a second on 2 cores, benchmarks/phones_bench.py); `parse_phone`
below is the Python port (`phonenumbers`, pinned to the same libphonenumber release), the
reference the tests hold the JVM class to, and the fallback in a vectorised pandas UDF when the
jar is not on Spark's class path (a warning says so: about a quarter of the speed). The default
region of a number typed without `+` is the registrant's country, else the campaign's home
country.

Fans type their number the way their own country dials abroad. A number that is not valid with
the default region and starts with an international dialling prefix (`00`, `011`, or `+` followed
by spaces or dots) is tried as international (`+` and the digits after the prefix) before it is
called invalid; `intl_prefix` marks the numbers that needed this fallback.
"""

from __future__ import annotations

import logging
import os
import re

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

from campaign_pipeline.python_workers import keep_zip_directories

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

log = logging.getLogger(__name__)

JVM_CLASS = "campaign_pipeline.udf.PhoneDetails"
JVM_FUNCTION = "campaign_pipeline_phone_details"
# `python` forces the reference implementation (benchmarks and the equivalence tests use it).
PARSER_ENV = "CAMPAIGN_PIPELINE_PHONE_PARSER"

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
    keep_zip_directories()  # the worker's next tasks start faster
    rows = [parse_phone(p, r) for p, r in zip(raw.tolist(), region.tolist(), strict=True)]
    return pd.DataFrame(rows, columns=["e164", "country", "type", "valid", "intl_prefix"])


def jvm_parser(spark) -> bool:
    """Register the JVM phone parser in this session; False (and a warning) when its jar is missing."""
    try:
        spark.udf.registerJavaFunction(JVM_FUNCTION, JVM_CLASS, PHONE_STRUCT)
    except Exception as exc:  # noqa: BLE001 - py4j/Spark raise several kinds for a missing class
        log.warning(
            "phones: the JVM parser %s is not on Spark's class path (%s); parsing with the Python port, "
            "about a quarter of the speed. Run `make install` (local) or ship dist/jars/ with spark.jars (EMR).",
            JVM_CLASS,
            str(exc).splitlines()[0][:200],
        )
        return False
    return True


def phone_details(phone: Column, country: Column, home_country: str, parser: str | None = None) -> Column:
    """Struct (e164, country, type, valid, intl_prefix) of a typed phone number.

    `parser`: "jvm", "python", or None for the JVM class when Spark can load it (else the Python
    port); the environment variable CAMPAIGN_PIPELINE_PHONE_PARSER=python forces the port.
    """
    from pyspark.sql import SparkSession

    # A blank country is no country: the campaign's home country applies, as for a missing one.
    region = F.coalesce(F.nullif(F.upper(F.trim(country)), F.lit("")), F.lit(home_country))
    parser = parser or os.environ.get(PARSER_ENV) or "auto"
    if parser != "python":
        spark = SparkSession.getActiveSession()
        if spark is not None and jvm_parser(spark):
            return F.call_function(JVM_FUNCTION, phone, region)
        if parser == "jvm":
            raise RuntimeError(f"the JVM phone parser {JVM_CLASS} is not on Spark's class path: run `make install`")
    return _parse_phones(phone, region)
