"""Generated codes: HMAC-SHA256(key, campaign ␟ fan ␟ market ␟ counter) in Crockford base32.

The key never reaches a query plan, the Spark UI or an event log: it travels to the executors in
a broadcast variable and the HMAC runs in a vectorised pandas UDF (Python's `hmac`, one Arrow
batch at a time), so a plan shows only `generated_code(...)`. (Computing the HMAC with built-ins
would put the padded key bytes into the plan as literals, and key ⊕ 0x36 is the key.) Each code
character takes one byte of the digest modulo 32 (256 is a multiple of 32, so the alphabet stays
uniform); the Crockford alphabet has no I, L, O or U, so no code holds a look-alike pair such as
1/I or 0/O.
"""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from campaign_pipeline.errors import ConfigError
from campaign_pipeline.python_workers import keep_zip_directories

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SEPARATOR = "\u001f"


def code_key(env) -> bytes:
    """The secret key (its environment variable, or the Secrets Manager secret it references); a
    missing or short key is an error, never a default."""
    from campaign_pipeline.secret_values import secret

    env_var = env.secrets.code_key_env
    value = secret(env, "code_key")
    if not value:
        raise ConfigError(
            f"secrets.code_key_env: environment variable {env_var} is not set; codes.source 'generated' needs "
            "a secret key of at least 16 characters (set it in the job's environment, never in a config file)"
        )
    if len(value) < 16:
        raise ConfigError(f"secrets.code_key_env: the key in {env_var} is shorter than 16 characters")
    return value.encode("utf-8")


class CodeGenerator:
    """Makes code columns with a secret key that stays out of every plan (see the module docstring)."""

    def __init__(self, spark: SparkSession, key: bytes, length: int):
        self._key = spark.sparkContext.broadcast(key)
        key_handle, n = self._key, length

        @F.pandas_udf("string")
        def generated_code(messages: pd.Series) -> pd.Series:
            keep_zip_directories()  # the worker's next tasks start faster
            secret = key_handle.value
            return messages.map(lambda m: _code(hmac.new(secret, m.encode("utf-8"), hashlib.sha256).digest(), n))

        self._udf = generated_code

    def code(self, *parts: Column) -> Column:
        """The code for (campaign, fan, market, counter) columns: `length` Crockford characters."""
        return self._udf(F.concat_ws(SEPARATOR, *[p.cast("string") for p in parts]))


def _code(digest: bytes, length: int) -> str:
    return "".join(CROCKFORD[b % 32] for b in digest[:length])


def python_code(key: bytes, length: int, *parts: str) -> str:
    """The same code computed on the driver (tests and support tooling)."""
    return _code(hmac.new(key, SEPARATOR.join(map(str, parts)).encode("utf-8"), hashlib.sha256).digest(), length)
