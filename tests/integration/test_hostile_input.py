"""A campaign whose landing folder mixes every hostile case runs to the end, and screening is not fooled.

One landing folder holds: a scalper ring built as a chain of 62 accounts (each sharing a device or a
card with the next), foreign numbers typed with `00`, a JSON line with the same key twice, a UTF-8
file with Latin-1 bytes, a quoted field spanning lines in the last column, a Spark-written folder
of Parquet parts, and a folder of CSV parts. Codes are generated with a key from the environment.
The first run stops at ingest on a file missing required columns; once it is removed the next run
resumes at the failed stage and goes to the end.
"""

import io
import zipfile
from pathlib import Path

import pytest
from helpers import T0
from pyspark.sql import functions as F
from pyspark.sql import types as T

from campaign_pipeline.catalog import CATALOG
from campaign_pipeline.config import load_campaign
from campaign_pipeline.errors import InputError
from campaign_pipeline.pipeline import PIPELINE
from campaign_pipeline.runner import run_pipeline, stage_runs
from campaign_pipeline.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
CID = "spring-tour-2027"
SECRET = "hostile-test-key-9f2c1e7a5b3d"
HEADER = (
    "campaign_id,global_user_id,member_id,email,phone,phone_confirmed,first_name,last_name,locale,country,"
    "postal_code,market_preferences,registered_at,ip_address,device_id,payment_fingerprint,do_not_text"
)


def _row(fan, email, phone="", country="US", device="", card="", minute=0, first="Pat", dnt="no"):
    t = f"2027-02-0{1 + minute // 1440}T{(minute // 60) % 24:02d}:{minute % 60:02d}:00Z"
    return (
        f"{CID},{fan},M{fan},{email},{phone},yes,{first},Doe,en_US,{country},10001,NYC-01|LAX-02,{t},"
        f"10.1.{minute // 250}.{minute % 250},{device},{card},{dnt}"
    )


def _landing(spark, root: Path) -> Path:
    folder = root / CID
    folder.mkdir(parents=True)
    honest = [_row(f"H{i}", f"fan{i}@example.com", f"(212) 555-01{i:02d}", minute=i) for i in range(1, 4)]
    # the ring: R00..R61, R(i) shares a device with R(i+1) for even i and a card for odd i
    ring = [
        _row(f"R{i:02d}", f"r{i}@example.net", device=f"dev-{i // 2}", card=f"card-{(i + 1) // 2}", minute=60 * i)
        for i in range(62)
    ]
    foreign = [
        _row("X1", "x1@example.com", "0044 7400 123456", minute=9000),
        _row("X2", "x2@example.com", "00 49 170 1234567", country="", minute=9001),
        _row("X3", "x3@example.com", "0033 6 12 34 56 78", minute=9002),
    ]
    spanning = _row("Q1", "q1@example.com", minute=9003, dnt='"no') + '\nstill the same field"'
    body = "\n".join([HEADER, *honest, *ring, *foreign, spanning]) + "\n"
    latin1 = _row("L1", "l1@example.com", minute=9004, first="Zo\xeb").encode("latin-1")
    (folder / "registrations_web.csv").write_bytes(body.encode("utf-8") + latin1 + b"\n")
    common = f'"campaign_id": "{CID}", "market_preferences": ["CHI-03"]'
    (folder / "registrations_app.jsonl").write_text(
        f'{{{common}, "global_user_id": "J1", "email": "j1@example.com", "registered_at": "2027-02-05T08:00:00Z"}}\n'
        f'{{{common}, "global_user_id": "J2", "Email": "j2@example.com", "email": "evil@example.com", '
        '"registered_at": "2027-02-05T08:01:00Z"}\n'
    )
    activity = spark.createDataFrame(
        [(f"H{i}", 5, 4, 0, 0) for i in range(1, 4)] + [(f"R{i:02d}", 0, 0, 0, 0) for i in range(62)],
        "global_user_id string, tickets_purchased_24m long, events_attended_24m long, "
        "resale_listings_24m long, chargebacks_24m long",
    )
    activity.repartition(2).write.parquet(str(folder / "fan_activity.parquet"))
    parts = spark.createDataFrame([(CID, "P1")], "campaign_id string, global_user_id string")
    parts.write.option("header", True).csv(str(folder / "registrations_parts.csv"))
    return root


@pytest.fixture(scope="module")
def hostile(spark, test_env, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CAMPAIGN_CODE_KEY", SECRET)
    base = tmp_path_factory.mktemp("hostile")
    landing = _landing(spark, base / "landing")
    campaign = load_campaign(ROOT / "conf" / "campaigns" / f"{CID}.yaml")
    campaign = campaign.model_copy(update={"codes": campaign.codes.model_copy(update={"source": "generated"})})
    env = test_env.with_roots(str(landing), str(base / "wh"))
    # A first run stops at ingest on a file without the required columns; the fixed folder resumes there.
    bad = landing / CID / "registrations_zz.csv"
    bad.write_text(f"campaign_id\n{CID}\n")
    with pytest.raises(InputError, match="registrations_zz.csv: line 1 \\(header\\): required columns"):
        run_pipeline(spark, campaign, env, out=io.StringIO())
    bad.unlink()
    log = io.StringIO()
    report = run_pipeline(spark, campaign, env, out=log, now=T0)
    yield Warehouse(spark, str(base / "wh")), report, log.getvalue(), base
    mp.undo()


def test_the_campaign_runs_to_the_end_and_every_bad_row_is_quarantined_with_its_reason(hostile):
    wh, report, log, _ = hostile
    assert report.resumed_from == "ingest" and "resuming after failed run" in log
    assert [name for name, _, _ in report.rows] == [s.name for s in PIPELINE]  # every stage, to the end
    reasons = {(Path(r["source_file"]).name, r["line"]): r["reason"] for r in wh.read("quarantine", CID).collect()}
    assert reasons == {
        ("registrations_app.jsonl", 2): "duplicate key 'email' (keys are matched case-insensitively)",
        ("registrations_web.csv", 70): "unbalanced double quote: a quoted field is not closed on this line "
        "(a field may not span lines)",
        ("registrations_web.csv", 71): "unbalanced double quote: a quoted field is not closed on this line "
        "(a field may not span lines)",
        ("registrations_web.csv", 72): "invalid UTF-8 bytes (if the file is in another encoding, set "
        "ingest.encoding.registrations in the campaign config)",
    }
    files = {Path(f["source_file"].rstrip("/")).name: f for f in report.rows[0][1].files}
    assert files["fan_activity.parquet"]["action"] == "ingested" and files["fan_activity.parquet"]["rows_read"] == 65
    assert files["registrations_parts.csv"]["action"] == "rejected"
    ingest = report.rows[0][1]
    assert ingest.counts["files_rejected"] == 1
    assert any("registrations_parts.csv/: REJECTED" in line and "repeats the header" in line for line in ingest.summary)
    # one logical file: its rows are numbered across the parts, once each
    lines = [r["source_line"] for r in wh.read("fan_activity", CID).collect()]
    assert sorted(lines) == list(range(1, 66))


def test_the_chain_is_one_fraud_ring_and_foreign_numbers_are_international(hostile):
    wh, report, _, _ = hostile
    reg = {r["global_user_id"]: r for r in wh.read("registrants", CID).collect()}
    ring = [reg[f"R{i:02d}"] for i in range(62)]
    assert {(r["identity_cluster_id"], r["cluster_size"]) for r in ring} == {("R00", 62)}
    assert all("FRAUD_RING" in r["ineligible_reasons"] for r in ring)
    for fan, country in (("X1", "GB"), ("X2", "DE"), ("X3", "FR")):
        assert (reg[fan]["phone_country"], "INTL_PHONE" in reg[fan]["tags"], reg[fan]["eligible"]) == (
            country,
            True,
            False,
        ), fan
    screen = report.rows[1][1]
    assert screen.counts["phones_intl_prefix"] == 3 and screen.counts["graph_rounds"] >= 1
    runs = stage_runs(wh, CID).where("stage = 'screen'").first()
    assert runs["counts"]["graph_rounds"] == screen.counts["graph_rounds"]


def test_no_secret_appears_in_any_table_export_or_log(spark, hostile):
    wh, _, log, base = hostile
    assert wh.read("code_assignments", CID).where("code_type = 'generated'").count() > 0
    for name in CATALOG:
        if not wh.exists(name):
            continue
        df = wh.read(name)
        text = F.concat_ws("\u0001", *[F.col(f"`{f.name}`").cast("string") for f in df.schema.fields
                                       if not isinstance(f.dataType, (T.MapType, T.ArrayType, T.StructType))])  # fmt: skip
        assert df.where(F.contains(text, F.lit(SECRET))).isEmpty(), name
    assert SECRET not in log
    zips = list((base / "wh" / "_exports").rglob("*.zip"))
    assert zips
    for path in zips:
        with zipfile.ZipFile(path) as z:
            assert all(SECRET not in z.read(n).decode("utf-8") for n in z.namelist())
