"""assign_codes and plan_waves on a small warehouse: identical assignments in two fresh warehouses,
re-runs that change nothing, pool exhaustion, concurrent commits, the channel rule, templates per
locale, sent messages never re-planned, and the legacy zip read back from a moto S3 server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import math
import threading
import time
import zipfile
from pathlib import Path

import pytest
from helpers import moto_server, sent_log

from campaign_pipeline.catalog import CATALOG
from campaign_pipeline.codes.stage import commit_assignments, plan_assignments, read_inputs
from campaign_pipeline.config import load_campaign
from campaign_pipeline.errors import PipelineError
from campaign_pipeline.frames import literal_frame
from campaign_pipeline.runner import run_pipeline
from campaign_pipeline.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
CID = "spring-tour-2027"
QUIET = open("/dev/null", "w")
T0 = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)

# fan, market, rank, phone, phone type, phone country, do_not_text, email, locale
FANS = [
    ("F1", "NYC-01", 1, "+12125550101", "mobile", "US", False, "ann@example.com", "en_US"),
    ("F2", "NYC-01", 2, "+12125550102", "mobile", "US", True, "bo@example.com", "en_US"),  # do not text
    ("F3", "NYC-01", 3, "+12125550103", "fixed_line", "US", False, "cy@example.com", "en_US"),  # landline
    ("F4", "MTL-05", 1, "+15145550104", "mobile", "CA", False, "dé@example.ca", "fr_CA"),
    ("F5", "MTL-05", 2, "+33612345678", "mobile", "FR", False, "eve@example.fr", "en_US"),  # outside sms_countries
    ("F6", "LAX-02", 1, None, None, None, False, "fay@example.com", "es_MX"),  # no template: market's en_US
]


WAVES = [
    {"wave_id": "wave-1", "notify_at": "2027-03-01T15:00:00Z", "limit": 2, "markets": ["NYC-01", "MTL-05"]},
    {"wave_id": "wave-2", "notify_at": "2027-03-02T15:00:00Z"},
]


def campaign(waves=WAVES, **codes):
    base = load_campaign(ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml")
    data = base.model_dump()
    data.update(waves=waves, codes={**data["codes"], **codes})
    return type(base).model_validate(data)


def seed_warehouse(spark, root: Path, pool: dict[str, int]) -> Warehouse:
    wh = Warehouse(spark, str(root))
    registrants = [
        (CID, f, f"M-{f}", email, email, phone, country, ptype, True, dnt, f"First{f}", f"Last{f}", locale, "US",
         [m], T0, f, 1, None, None, None, [], True, [], "seed")
        for f, m, _, phone, ptype, country, dnt, email, locale in FANS
    ]  # fmt: skip
    wh.append("registrants", literal_frame(spark, registrants, CATALOG["registrants"].schema))
    selections = [(CID, f, "selected", m, 1, rank, None, 0.9, [], "seed") for f, m, rank, *_ in FANS]
    wh.append("selections", literal_frame(spark, selections, CATALOG["selections"].schema))
    codes = [
        (CID, f"{m[:3]}{i:04d}", m, "code_pool.csv", i, "x", T0, "seed") for m, n in pool.items() for i in range(n)
    ]
    wh.append("code_pool", literal_frame(spark, codes, CATALOG["code_pool"].schema))
    return wh


def assignments(wh):
    return {
        r["global_user_id"]: (
            r["market_id"],
            r["code"],
            r["code_type"],
            r["wave_id"],
            r["valid_from"],
            r["valid_until"],
        )
        for r in wh.read("code_assignments", CID).collect()
    }


POOL = {"NYC-01": 4, "MTL-05": 2, "LAX-02": 1}


@pytest.fixture(scope="module")
def coded(spark, test_env, tmp_path_factory):
    """Codes assigned while only wave-1 (limit 2) existed, then again once wave-2 was added."""
    base = tmp_path_factory.mktemp("codes")
    wh = seed_warehouse(spark, base / "wh", POOL)
    env = test_env.with_roots(str(base / "landing"), str(base / "wh"))
    first = run_pipeline(spark, campaign(waves=WAVES[:1]), env, stages=["assign_codes"], out=QUIET, now=T0)
    before = (assignments(wh), wh.version("code_assignments"))
    later = run_pipeline(spark, campaign(), env, stages=["assign_codes"], out=QUIET, now=T0)
    return env, wh, base, (first.rows[0][1], before, later.rows[0][1])


def test_a_wave_added_later_takes_the_coded_fans_in_no_wave_and_sets_their_validity_once(spark, coded):
    _, wh, _, (first, (before, version), later) = coded
    # wave-1 takes its limit of 2; the other four fans hold a code with no wave and no validity yet
    assert {f: v[3] for f, v in before.items()} == {
        "F1": "wave-1", "F4": "wave-1", "F2": None, "F3": None, "F5": None, "F6": None,
    }  # fmt: skip
    assert all(v[4] is None and v[5] is None for f, v in before.items() if v[3] is None)
    assert first.counts["without_wave"] == 4 and "4 coded fans are in no wave yet" in "\n".join(first.summary)
    # the run with wave-2 issues no code and fills wave and validity of those four in one commit
    assert later.counts["assigned_now"] == 0 and later.counts["placed_in_wave_now"] == 4
    assert later.counts["without_wave"] == 0 and wh.version("code_assignments") == version + 1
    after = assignments(wh)
    notify = dt.datetime(2027, 3, 2, 15)
    for fan, row in after.items():
        assert row[:3] == before[fan][:3]  # the code never changes
        if before[fan][3] is None:
            assert row[3:] == ("wave-2", notify - dt.timedelta(days=1), notify + dt.timedelta(days=365)), fan
        else:
            assert row == before[fan]  # wave and validity, once set, never change


def test_two_fresh_warehouses_give_identical_assignments_and_a_rerun_changes_nothing(spark, test_env, coded):
    env, wh, base, _ = coded
    first = assignments(wh)
    assert sorted(first) == ["F1", "F2", "F3", "F4", "F5", "F6"]
    assert len({v[1] for v in first.values()}) == 6
    # wave-1 takes the two best market ranks of NYC-01 and MTL-05; the rest fall to wave-2, the same
    # whether wave-2 was there from the start (wh2 below) or added after the codes were issued (wh)
    assert {f: v[3] for f, v in first.items()} == {
        "F1": "wave-1", "F4": "wave-1", "F2": "wave-2", "F3": "wave-2", "F5": "wave-2", "F6": "wave-2",
    }  # fmt: skip
    notify = dt.datetime(2027, 3, 1, 15)
    assert first["F1"][4:] == (notify - dt.timedelta(days=1), notify + dt.timedelta(days=365))
    other = seed_warehouse(spark, base / "wh2", POOL)
    run_pipeline(
        spark, campaign(), test_env.with_roots(str(base / "l2"), str(base / "wh2")), stages=["assign_codes"],
        out=QUIET, now=T0,
    )  # fmt: skip
    assert assignments(other) == first
    version = wh.version("code_assignments")
    report = run_pipeline(spark, campaign(), env, stages=["assign_codes"], out=QUIET, now=T0)
    assert wh.version("code_assignments") == version and assignments(wh) == first
    assert report.rows[0][1].counts["assigned_now"] == 0


def test_pool_exhaustion_names_the_market_and_writes_nothing_unless_partial_is_allowed(spark, test_env, tmp_path):
    wh = seed_warehouse(spark, tmp_path / "wh", {"NYC-01": 3, "MTL-05": 1, "LAX-02": 1})
    env = test_env.with_roots(str(tmp_path / "l"), str(tmp_path / "wh"))
    with pytest.raises(PipelineError) as err:
        run_pipeline(spark, campaign(), env, stages=["assign_codes"], out=QUIET, now=T0)
    assert "MTL-05: 2 selected fans need a code, 1 unused pool codes: short by 1" in str(err.value)
    assert "nothing was written" in str(err.value) and wh.read("code_assignments", CID).count() == 0
    report = run_pipeline(spark, campaign(allow_partial=True), env, stages=["assign_codes"], out=QUIET, now=T0)
    assert report.rows[0][1].counts["no_code_available"] == 1
    assert wh.read("code_assignments", CID).count() == 5


def test_concurrent_assignment_runs_cannot_both_commit(spark, test_env, tmp_path):
    wh = seed_warehouse(spark, tmp_path / "wh", POOL)
    inputs = read_inputs(wh, CID)
    plan_a = plan_assignments(campaign(), inputs, None, "run-a", T0).new
    plan_b = plan_assignments(campaign(), inputs, None, "run-b", T0).new
    plan_a, plan_b = plan_a.localCheckpoint(eager=True), plan_b.localCheckpoint(eager=True)

    def slow(batches):  # run B's MERGE reads the table, then waits while run A commits
        time.sleep(6)
        yield from batches

    plan_b = plan_b.mapInPandas(slow, plan_b.schema)
    errors: dict[str, Exception] = {}

    def commit(name, df, delay):
        time.sleep(delay)
        try:
            commit_assignments(wh, CID, df, inputs.version, f"run-{name}")
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            errors[name] = exc

    threads = [
        threading.Thread(target=commit, args=("b", plan_b, 0)),
        threading.Thread(target=commit, args=("a", plan_a, 2)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Exactly one run commits (which one depends on scheduling: both share local[2]'s two cores).
    assert len(errors) == 1, errors
    ((loser, error),) = errors.items()
    assert isinstance(error, PipelineError) and "after this one read the table" in str(error)
    rows = wh.read("code_assignments", CID)
    assert rows.count() == 6 and rows.select("code").distinct().count() == 6
    assert {r["run_id"] for r in rows.collect()} == {"run-a" if loser == "b" else "run-b"}


def test_a_plan_made_before_another_run_committed_can_never_commit(spark, tmp_path):
    """Plan B, commit A, commit B: B was planned on a snapshot without A's codes, so B fails and
    writes nothing, even though none of B's (fan, market) rows is in A's commit."""
    wh = seed_warehouse(spark, tmp_path / "wh", POOL)
    inputs = read_inputs(wh, CID)

    def with_fan(fan):  # each run saw a different late selection for NYC-01's fourth seat
        extra = literal_frame(
            spark, [(CID, fan, "selected", "NYC-01", 1, 4, None, 0.5, [], "x")], CATALOG["selections"].schema
        )
        return dataclasses.replace(inputs, selections=inputs.selections.unionByName(extra))

    plan_b = plan_assignments(campaign(), with_fan("Y"), None, "run-b", T0).new.localCheckpoint()
    plan_a = plan_assignments(campaign(), with_fan("X"), None, "run-a", T0).new.localCheckpoint()
    commit_assignments(wh, CID, plan_a, inputs.version, "run-a")
    version = wh.version("code_assignments")
    with pytest.raises(PipelineError, match="after this one read the table"):
        commit_assignments(wh, CID, plan_b, inputs.version, "run-b")
    # the same holds for a commit that also fills waves of earlier codes (a MERGE, not an append)
    with pytest.raises(PipelineError, match="after this one read the table"):
        commit_assignments(wh, CID, plan_b.limit(0), inputs.version, "run-b", placed=plan_b)
    rows = wh.read("code_assignments", CID)
    assert wh.version("code_assignments") == version
    assert {r["run_id"] for r in rows.collect()} == {"run-a"} and rows.count() == 7
    assert rows.select("code").distinct().count() == 7


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    server, endpoint = moto_server()
    for k, v in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch_module.setenv(k, v)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="legacy-exports")
    yield client
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def messages(wh):
    return {(r["global_user_id"], r["channel"]): r for r in wh.read("wave_messages", CID).collect()}


def test_waves_channels_templates_zip_on_s3_and_sent_messages_are_never_replanned(spark, coded, s3):
    env, wh, _, _ = coded
    env = env.model_copy(update={"export_root": "s3://legacy-exports/presale"})
    report = run_pipeline(spark, campaign(), env, stages=["plan_waves"], out=QUIET, now=T0)
    got = messages(wh)
    # the channel rule: SMS for a textable mobile in sms_countries, email otherwise
    assert sorted(got) == [
        ("F1", "sms"),
        ("F2", "email"),
        ("F3", "email"),
        ("F4", "sms"),
        ("F5", "email"),
        ("F6", "email"),
    ]
    f1, f4 = got[("F1", "sms")], got[("F4", "sms")]
    code1 = assignments(wh)["F1"][1]
    assert (
        f1["recipient"] == "+12125550101"
        and code1 in f1["text"]
        and f1["text"].startswith("Aurora Skies: your presale")
    )
    # the market name holds an em dash, which GSM-7 lacks: UCS-2, 67 characters per segment part
    assert "2027-03-01 10:00 EST" in f1["text"] and f1["sms_encoding"] == "UCS-2"
    assert f1["sms_segments"] == math.ceil(len(f1["text"]) / 67)
    assert f4["locale"] == "fr_CA" and f4["text"].startswith("Aurora Skies : votre code de prévente pour Montréal")
    assert f4["sms_encoding"] == "UCS-2" and f4["sms_segments"] == math.ceil(len(f4["text"]) / 67)
    assert (
        got[("F6", "email")]["locale"] == "en_US"
        and got[("F6", "email")]["subject"] == "Your Aurora Skies presale code"
    )
    assert len({r["message_id"] for r in got.values()}) == 6
    assert report.rows[0][1].counts["messages"] == 6
    waves = {r["wave_id"]: (r["status"], r["total"], r["sms"], r["email"]) for r in wh.read("waves", CID).collect()}
    assert waves == {"wave-1": ("scheduled", 2, 2, 0), "wave-2": ("scheduled", 4, 0, 4)}

    body = s3.get_object(Bucket="legacy-exports", Key=f"presale/{CID}/wave-2.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert sorted(zf.namelist()) == [
            "email/LAX-02.csv", "email/MTL-05.csv", "email/NYC-01.csv",
            "masterCodes/LAX-02.csv", "masterCodes/MTL-05.csv", "masterCodes/NYC-01.csv",
        ]  # fmt: skip
        nyc = zf.read("email/NYC-01.csv").decode().splitlines()
    assert (
        nyc[0]
        == "code,doNotText,email,firstName,lastName,link,locale,marketId,globalUserId,memberId,mobileNumber,smsText"
    )
    f2 = assignments(wh)["F2"][1]
    assert nyc[1].startswith(
        f"{f2},true,bo@example.com,FirstF2,LastF2,https://presale.example.com/{CID},en_US,NYC-01,F2,M-F2"
    )

    # re-planning unchanged inputs commits nothing: same messages, same ids, no new Delta version
    versions = (wh.version("wave_messages"), wh.version("waves"))
    run_pipeline(spark, campaign(), env, stages=["plan_waves"], out=QUIET, now=T0)
    assert (wh.version("wave_messages"), wh.version("waves")) == versions and messages(wh) == got

    # F1's SMS was sent; a changed template re-plans F2's email but never F1's message
    log = sent_log(spark, [f1["message_id"]])
    wh.append("notification_log", log)
    changed = campaign()
    templates = dict(changed.messages.templates)
    templates["en_US"] = templates["en_US"].model_copy(
        update={"sms": "NEW {{ code }}", "email_body": "NEW {{ code }} {{ link }}"}
    )
    changed = changed.model_copy(update={"messages": changed.messages.model_copy(update={"templates": templates})})
    run_pipeline(spark, changed, env, stages=["plan_waves"], out=QUIET, now=T0)
    again = messages(wh)
    assert again[("F1", "sms")]["text"] == f1["text"] and again[("F1", "sms")]["run_id"] == f1["run_id"]
    assert again[("F2", "email")]["text"].startswith("NEW ")


def test_tm_placeholders_are_never_exported_as_codes(spark):
    from campaign_pipeline.waves.export import HEADER, legacy_columns, legacy_lines

    assert HEADER == ",".join(name for name, _ in legacy_columns())
    rows = [
        (CID, "wave-1", "m1", "F1", "M1", "NYC-01", "sms", "+12125550101", None, "tm", "en_US", None, "Unlocked!",
         "https://x", 1, "GSM-7", "A", "B", "a@example.com", "+12125550101", False, T0, "r"),
        (CID, "wave-1", "m2", "F2", "M2", "NYC-01", "email", "b@example.com", "CODE2", "pool", "en_US", "S", "T, \"q\"",
         "https://x", None, None, "C", "D", "b@example.com", None, False, T0, "r"),
    ]  # fmt: skip
    lines = legacy_lines(literal_frame(spark, rows, CATALOG["wave_messages"].schema)).collect()
    by_member = {(r["member"], r["k"]): r["line"] for r in lines}
    assert set(by_member) == {("sms/NYC-01.csv", "F1"), ("email/NYC-01.csv", "F2"), ("masterCodes/NYC-01.csv", "F2")}
    assert by_member[("sms/NYC-01.csv", "F1")].startswith(",false,a@example.com,")  # no code string for TM
    assert by_member[("masterCodes/NYC-01.csv", "F2")].startswith("CODE2,false,b@example.com")


def test_a_message_whose_template_fails_on_its_fan_is_quarantined_and_the_others_are_planned(spark, test_env, tmp_path):
    """`{{ first_name.split()[0] }}` on a fan without a first name: that message is quarantined with
    the template's key, the campaign, the kind of message and the fan id masked; so is an SMS
    longer than messages.max_sms_segments; every other message is planned."""
    from helpers import small_coded_campaign

    from campaign_pipeline.config import Messages, Template

    cid = "tmpl-fail"
    campaign = load_campaign(ROOT / "conf" / "campaigns" / "spring-tour-2027.yaml").model_copy(
        update={"campaign_id": cid}
    )
    templates = {"en_US": Template(sms="Hi {{ first_name.split()[0] }}: {{ code }}{% if first_name == 'Long' %}"
                                       "{% for i in range(200) %} and more{% endfor %}{% endif %}",
                                   email_subject="S", email_body="B")}  # fmt: skip
    campaign = campaign.model_copy(update={"messages": Messages(templates=templates, max_sms_segments=2)})
    env = test_env.with_roots(None, str(tmp_path / "wh"))
    wh = Warehouse(spark, env.warehouse_root)
    small_coded_campaign(wh, cid, fans=6, wave="wave-1", first_names={2: "", 4: "Long"})
    report = run_pipeline(spark, campaign, env, stages=["plan_waves"], now=T0, out=QUIET).rows[0][1]
    assert (report.counts["messages"], report.counts["quarantined"]) == (4, 2)
    planned = sorted(r["global_user_id"] for r in wh.read("wave_messages", cid).collect())
    assert planned == ["F000", "F001", "F003", "F005"]
    held = {r["raw"].split()[1]: r for r in wh.read("quarantine", cid).where("stage = 'plan_waves'").collect()}
    reasons = sorted(r["reason"] for r in held.values())
    assert reasons[0].startswith("SMS of ") and "more than messages.max_sms_segments (2)" in reasons[0]
    assert reasons[0].endswith(f"(campaign {cid}, sms message to fan ****)")  # ids of 4 characters: all masked
    assert reasons[1] == (
        f"template messages.templates.en_US.sms: UndefinedError: list object has no element 0 (campaign {cid}, sms message "
        "to fan ****)"
    )
    assert {r["source_file"] for r in held.values()} == {"plan_waves:wave-1"}
    # re-planning the same commits nothing new to the quarantine either
    versions = wh.version("quarantine")
    run_pipeline(spark, campaign, env, stages=["plan_waves"], now=T0, out=QUIET)
    assert wh.version("quarantine") == versions
