"""Generated codes: HMAC-SHA256(key, campaign ␟ fan ␟ market ␟ counter) in Crockford base32.

The HMAC is computed with Spark built-ins (sha2 over the RFC 2104 inner and outer pads, which the
driver derives from the key once), so no Python runs per row and the key never appears in a
plan as text: only the padded key bytes do, inside the job. Each code character takes one byte of
the digest modulo 32 (256 is a multiple of 32, so the alphabet stays uniform); the Crockford
alphabet has no I, L, O or U, so no code holds a look-alike pair such as 1/I or 0/O.
"""

from __future__ import annotations

import hashlib
import os

from pyspark.sql import Column
from pyspark.sql import functions as F

from campaign_pipeline.errors import ConfigError

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BLOCK = 64  # SHA-256 block size in bytes


def code_key(env_var: str) -> bytes:
    """The secret key from the environment; a missing or short key is an error, never a default."""
    value = os.environ.get(env_var)
    if not value:
        raise ConfigError(
            f"secrets.code_key_env: environment variable {env_var} is not set; codes.source 'generated' needs "
            "a secret key of at least 16 characters (set it in the job's environment, never in a config file)"
        )
    if len(value) < 16:
        raise ConfigError(f"secrets.code_key_env: the key in {env_var} is shorter than 16 characters")
    return value.encode("utf-8")


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK, b"\x00")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256_hex(key: bytes, message: Column) -> Column:
    """Hex HMAC-SHA256 of a string column, with built-in functions only."""
    inner_pad, outer_pad = _pads(key)
    data = F.encode(message, "UTF-8")
    inner = F.unhex(F.sha2(F.concat(F.lit(bytearray(inner_pad)), data), 256))
    return F.sha2(F.concat(F.lit(bytearray(outer_pad)), inner), 256)


def generated_code(key: bytes, length: int, *parts: Column) -> Column:
    """The code for (campaign, fan, market, counter) columns: `length` Crockford characters."""
    digest = hmac_sha256_hex(key, F.concat_ws("\u001f", *[p.cast("string") for p in parts]))
    chars = []
    for i in range(length):
        byte = F.conv(F.substring(digest, 2 * i + 1, 2), 16, 10).cast("int")
        chars.append(F.substring(F.lit(CROCKFORD), F.pmod(byte, F.lit(32)) + 1, 1))
    return F.concat(*chars)


def python_code(key: bytes, length: int, *parts: str) -> str:
    """The same code computed with Python's hmac (tests and support tooling)."""
    import hmac

    digest = hmac.new(key, "\u001f".join(map(str, parts)).encode("utf-8"), hashlib.sha256).digest()
    return "".join(CROCKFORD[b % 32] for b in digest[:length])
