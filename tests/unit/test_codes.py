"""Codes on tiny frames: HMAC codes equal Python's hmac, pool ranking, collisions, duplicates, TM."""

from __future__ import annotations

import re

import pytest
from helpers import make_campaign
from pyspark.sql import functions as F

from campaign_pipeline.codes.assign import assign_generated, assign_pool_codes, assign_tm, duplicate_problems
from campaign_pipeline.codes.generated import CROCKFORD, CodeGenerator, code_key, python_code
from campaign_pipeline.errors import ConfigError
from campaign_pipeline.frames import literal_frame
from campaign_pipeline.ingest.code_pool import flag_duplicate_codes

CID = "tour-test"
KEY = b"a-test-key-of-sufficient-length"
NEED = "campaign_id string, global_user_id string, market_id string, market_rank long"
ASSIGNED = "campaign_id string, market_id string, global_user_id string, code string, code_type string"


def test_spark_hmac_codes_equal_pythons_hmac_and_use_only_crockford_characters(spark):
    rows = [(CID, f"F{i}", "NYC-01", i % 3) for i in range(6)] + [("tour-é", "Zoë", "MTL-05", 0)]
    df = literal_frame(spark, rows, "campaign_id string, fan string, market string, counter int")
    got = df.select(
        "campaign_id", "fan", "market", "counter",
        CodeGenerator(spark, KEY, 12).code(F.col("campaign_id"), F.col("fan"), F.col("market"), F.col("counter"))
        .alias("code"),
    ).collect()  # fmt: skip
    for r in got:
        assert r["code"] == python_code(KEY, 12, r["campaign_id"], r["fan"], r["market"], r["counter"])
        assert re.fullmatch(f"[{CROCKFORD}]{{12}}", r["code"]) and not set("ILOU") & set(r["code"])
    assert len({r["code"] for r in got}) == len(got)


def test_missing_or_short_key_is_a_clear_error_never_a_default(monkeypatch, test_env):
    monkeypatch.delenv("CAMPAIGN_CODE_KEY", raising=False)
    monkeypatch.delenv("CAMPAIGN_CODE_KEY_SECRET", raising=False)
    with pytest.raises(ConfigError, match="environment variable CAMPAIGN_CODE_KEY is not set"):
        code_key(test_env)
    monkeypatch.setenv("CAMPAIGN_CODE_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        code_key(test_env)


def test_generated_collisions_with_existing_codes_are_regenerated_with_the_next_counter(spark):
    campaign = make_campaign(CID, codes={"source": "generated", "length": 8})
    taken = python_code(KEY, 8, CID, "F1", "NYC-01", 0)  # F1's first code already belongs to someone
    used = literal_frame(spark, [(CID, taken)], "campaign_id string, code string")
    need = literal_frame(spark, [(CID, "F1", "NYC-01", 1), (CID, "F2", "NYC-01", 2)], NEED)
    assignment, collisions = assign_generated(campaign, need, used, KEY)
    got = {r["global_user_id"]: r["code"] for r in assignment.assigned.collect()}
    assert collisions == 1
    assert got == {"F1": python_code(KEY, 8, CID, "F1", "NYC-01", 1), "F2": python_code(KEY, 8, CID, "F2", "NYC-01", 0)}


def test_pool_codes_join_fans_by_rank_per_market_in_seeded_hash_order(spark):
    campaign = make_campaign(CID)
    need = literal_frame(
        spark,
        [(CID, f"F{i}", "NYC-01", i) for i in range(1, 4)] + [(CID, "G1", "LAX-02", 1), (CID, "G2", "LAX-02", 2)],
        NEED,
    )
    pool = literal_frame(
        spark,
        [(CID, f"N{i}", "NYC-01") for i in range(5)] + [(CID, "L0", "LAX-02"), (CID, "X0", None)],
        "campaign_id string, code string, market_id string",
    )
    used = literal_frame(spark, [(CID, "N0")], "campaign_id string, code string")
    a = assign_pool_codes(campaign, need, pool, used)
    got = {r["global_user_id"]: (r["market_id"], r["code"]) for r in a.assigned.collect()}
    assert {f: m for f, (m, _) in got.items()} == {"F1": "NYC-01", "F2": "NYC-01", "F3": "NYC-01", "G1": "LAX-02"}
    assert got["G1"][1] == "L0" and "N0" not in {c for _, c in got.values()}  # an assigned code never matches again
    assert len({c for _, c in got.values()}) == 4
    needed = {r["pool"]: r["needed"] for r in a.needed.collect()}
    available = {r["pool"]: r["available"] for r in a.available.collect()}
    assert (needed["LAX-02"], available["LAX-02"]) == (2, 1)  # G2 stays without a code
    # the same inputs in another order and partitioning give the same codes
    again = assign_pool_codes(campaign, need.repartition(3).orderBy(F.rand(3)), pool.repartition(2), used)
    assert {r["global_user_id"]: r["code"] for r in again.assigned.collect()} == {f: c for f, (_, c) in got.items()}
    # campaign-wide pool: every code in one pool, including the one without a market
    wide = assign_pool_codes(make_campaign(CID, codes={"per_market": False}), need, pool, used)
    assert wide.assigned.count() == 5


def test_tm_rows_carry_no_code(spark):
    need = literal_frame(spark, [(CID, "F1", "NYC-01", 1)], NEED)
    row = assign_tm(need).assigned.first()
    assert (row["code"], row["code_type"]) == (None, "tm")


def test_duplicate_codes_in_an_upload_and_across_uploads_are_flagged(spark):
    parsed = literal_frame(
        spark,
        [
            (CID, "A1", "NYC-01", "/l/code_pool_2.csv", 2, []),
            (CID, "A1", "NYC-01", "/l/code_pool_2.csv", 5, []),
            (CID, "B1", "NYC-01", "/l/code_pool_2.csv", 3, []),
            (CID, "B2", None, "/l/code_pool_2.csv", 4, ["market_id: unknown"]),
        ],
        "campaign_id string, code string, market_id string, source_file string, source_line long, reasons array<string>",
    )
    earlier = literal_frame(
        spark, [(CID, "B1", "NYC-01", "/l/code_pool_1.csv", 9)],
        "campaign_id string, code string, market_id string, source_file string, source_line long",
    )  # fmt: skip
    got = {(r["code"], r["source_line"]): r["reasons"] for r in flag_duplicate_codes(parsed, earlier).collect()}
    assert got == {
        ("A1", 2): [],
        ("A1", 5): ["code: duplicate code, got 'A1' again (first at code_pool_2.csv line 2)"],
        ("B1", 3): ["code: duplicate code, got 'B1' again (first at code_pool_1.csv line 9)"],
        ("B2", 4): ["market_id: unknown"],
    }


def test_uniqueness_check_names_codes_given_twice_and_second_codes(spark):
    existing = literal_frame(spark, [(CID, "NYC-01", "F1", "C1", "pool")], ASSIGNED)
    new = literal_frame(spark, [(CID, "NYC-01", "F2", "C1", "pool"), (CID, "LAX-02", "F1", "C9", "pool")], ASSIGNED)
    assert duplicate_problems(existing, new, single_market=True) == [
        "1 code(s) would be given twice",
        "1 fan(s) would get a second code",
    ]
    assert duplicate_problems(existing, new, single_market=False) == ["1 code(s) would be given twice"]


def test_sms_segments_count_gsm7_septets_and_ucs2_units():
    from campaign_pipeline.waves.render import sms_segments

    assert sms_segments("a" * 160) == (1, "GSM-7")
    assert sms_segments("a" * 161) == (2, "GSM-7")  # 153 septets per part once concatenated
    assert sms_segments("€" * 80) == (1, "GSM-7")  # an extension character takes two septets
    assert sms_segments("€" * 81) == (2, "GSM-7")
    assert sms_segments("Montréal") == (1, "GSM-7")  # é is in the GSM alphabet
    assert sms_segments("Montréal — " + "a" * 59) == (1, "UCS-2")  # the em dash is not
    assert sms_segments("ç" * 71) == (2, "UCS-2")
    assert sms_segments("🎟" * 35) == (1, "UCS-2") and sms_segments("🎟" * 36) == (2, "UCS-2")  # surrogate pairs


def test_the_code_key_never_appears_in_a_plan(spark):
    """Neither the key nor its HMAC pads (key ⊕ 0x36, key ⊕ 0x5c) may be read from explain() or the UI."""
    import io
    from contextlib import redirect_stdout

    campaign = make_campaign(CID, codes={"source": "generated", "length": 8})
    need = literal_frame(spark, [(CID, "F1", "NYC-01", 1), (CID, "F2", "NYC-01", 2)], NEED)
    used = literal_frame(spark, [], "campaign_id string, code string")
    assignment, _ = assign_generated(campaign, need, used, KEY, cut=lambda df, name: df)
    plan = io.StringIO()
    with redirect_stdout(plan):
        assignment.assigned.explain(extended=True)
    text = plan.getvalue()
    assert "generated_code" in text  # the plan was rendered, with the UDF in it
    padded = KEY.ljust(64, b"\x00")
    secrets = [KEY, bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)]
    for secret in secrets:
        for form in (secret.hex(), secret.hex().upper(), secret.decode("latin-1"), str(list(secret))[1:40]):
            assert form not in text
    assert len({r["code"] for r in assignment.assigned.collect()}) == 2
