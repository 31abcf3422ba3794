"""The report's operator sections, each a pure transform on tiny frames: waves, trends and the
"since the last report" deltas, ingest per file, the last run of each stage, delivery failures."""

from __future__ import annotations

import datetime as dt

from chispa import assert_df_equality

from campaign_pipeline.frames import catalog_rows, literal_frame
from campaign_pipeline.report import figures
from campaign_pipeline.report.figures import (
    Figures,
    failure_reasons,
    funnel_trend,
    ingest_by_file,
    last_stage_runs,
    previous_snapshot,
    quarantine_reasons,
    wave_channel_counts,
    wave_rows,
)

CID = "tour-x"
NOW = dt.datetime(2027, 3, 1, 15, 10, tzinfo=dt.UTC)
T = lambda minutes: NOW + dt.timedelta(minutes=minutes)  # noqa: E731


def _wave(wave_id, status, attempts, **extra):
    return {"campaign_id": CID, "wave_id": wave_id, "notify_at": T(-60), "status": status, "attempts": attempts,
            "run_id": f"run-{wave_id}", **extra}  # fmt: skip


def test_a_wave_needs_an_operator_only_when_notify_will_not_take_it_again_and_says_the_command(spark):
    waves = catalog_rows(
        spark,
        "waves",
        [
            _wave("w-scheduled", "scheduled", 0),
            _wave("w-sending", "sending", 1, lease_until=T(2)),  # a live lease: its holder is shown
            _wave("w-dead", "sending", 2, lease_until=T(-5)),  # its holder died on the last attempt
            _wave("w-retry", "failed", 1),  # notify takes it again by itself
            _wave("w-failed", "failed", 2),
            _wave("w-partly", "completed_with_failures", 1, failed=3),
            _wave("w-paused", "sending", 2, lease_until=T(-5), deferred_until=T(20)),  # the gateway's pause
            # its pause over, notify resumes it without spending an attempt: not an operator's yet
            _wave("w-resumes", "sending", 2, lease_until=T(-5), deferred_until=T(-1)),
            _wave("w-done", "completed", 1),
        ],
    )
    got = wave_rows(waves, NOW, wave_attempts=2, env_name="emr").select(
        "wave_id", "attempts", "lease_owner", "paused_until", "needs_operator", "command"
    )
    cmd = "campaign-pipeline notify --campaign conf/campaigns/tour-x.yaml --env emr --retry-failed --wave "
    expected = literal_frame(
        spark,
        [
            ("w-scheduled", 0, None, None, None, None),
            ("w-sending", 1, "run-w-sending", None, None, None),
            ("w-dead", 2, None, None, "stopped sending after 2 attempts", cmd + "w-dead"),
            ("w-retry", 1, None, None, None, None),
            ("w-failed", 2, None, None, "failed after 2 attempts", cmd + "w-failed"),
            ("w-partly", 1, None, None, "3 messages failed", cmd + "w-partly"),
            ("w-paused", 2, None, T(20), None, None),
            ("w-resumes", 2, None, None, None, None),
            ("w-done", 1, None, None, None, None),
        ],
        "wave_id string, attempts int, lease_owner string, paused_until timestamp, needs_operator string, "
        "command string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_wave_counts_per_channel_split_planned_messages_by_their_outcome(spark):
    messages = literal_frame(
        spark,
        [("w1", "sms", "m1"), ("w1", "sms", "m2"), ("w1", "sms", "m3"), ("w1", "email", "m4"), ("w2", "email", "m5")],
        "wave_id string, channel string, message_id string",
    )
    log = literal_frame(
        spark,
        [("m1", "sent", "w1", "sms"), ("m2", "failed", "w1", "sms"), ("m4", "skipped", "w1", "email"),
         ("gone", "sent", "w1", "sms")],  # an outcome of a message no longer planned still counts as sent
        "message_id string, status string, wave_id string, channel string",
    )  # fmt: skip
    expected = literal_frame(
        spark,
        [("w1", "sms", 3, 2, 1, 0, 1), ("w1", "email", 1, 0, 0, 1, 0), ("w2", "email", 1, 0, 0, 0, 1)],
        "wave_id string, channel string, planned long, sent long, failed long, skipped long, pending long",
    )
    assert_df_equality(wave_channel_counts(messages, log), expected, ignore_row_order=True, ignore_nullable=True)


def _snapshot(run_id, minutes, funnel, headline=None):
    return {"campaign_id": CID, "run_id": run_id, "computed_at": T(minutes), "funnel": funnel,
            "per_market": {}, "headline": headline}  # fmt: skip


def test_the_trend_is_the_funnel_of_every_report_run_and_the_delta_compares_with_the_latest_earlier_one(spark):
    stats = catalog_rows(
        spark,
        "campaign_stats",
        [
            _snapshot("r1", -60, {"registrants": 10, "selected": 2, "registration rows": 11}),  # before headlines
            _snapshot("r2", -30, {"registrants": 12, "selected": 4}, {"registrants": 12, "selected": 4, "warnings": 1}),
            _snapshot("r3", 0, {"registrants": 13, "selected": 5}, {"registrants": 13, "selected": 5}),
        ],
    )
    expected = literal_frame(
        spark,
        [(T(-60), "r1", "registrants", 10), (T(-60), "r1", "selected", 2), (T(-30), "r2", "registrants", 12),
         (T(-30), "r2", "selected", 4), (T(0), "r3", "registrants", 13), (T(0), "r3", "selected", 5)],
        "computed_at timestamp, run_id string, step string, value long",
    )  # fmt: skip
    assert_df_equality(funnel_trend(stats), expected, ignore_row_order=True, ignore_nullable=True)
    # the report run r3 compares with r2 (the latest other run); a run before headlines falls back to its funnel
    assert previous_snapshot(stats, "r3").first()["figures"] == {"registrants": 12, "selected": 4, "warnings": 1}
    assert previous_snapshot(stats.where("run_id = 'r1'"), "r3").first()["run_id"] == "r1"
    assert previous_snapshot(stats.where("run_id = 'r3'"), "r3").first() is None

    fig = Figures(CID, "Tour", NOW, "r3", funnel={"registrants": 13, "selected": 5})
    assert set(fig.deltas().values()) == {None}  # the first report has nothing to compare with
    fig.previous = {"registrants": 12, "selected": 4, "warnings": 1}
    deltas = fig.deltas()
    assert (deltas["registrants"], deltas["selected"], deltas["warnings"]) == (1, 1, -1)
    assert deltas["coded"] is None  # not recorded last time


def test_a_long_campaigns_trend_keeps_its_latest_report_runs_and_the_last_of_each_earlier_day(spark):
    # three days of a report every 6 hours, then the latest 3 runs kept whole
    runs = [_snapshot(f"r{i:02d}", -6 * 60 * (11 - i), {"registrants": i}) for i in range(12)]
    kept = figures.thin_snapshots(catalog_rows(spark, "campaign_stats", runs), keep_last=3)
    by_day: dict = {}
    for r in runs:
        by_day[r["computed_at"].astimezone(dt.UTC).date()] = r["run_id"]  # the day's last run
    assert sorted(r["run_id"] for r in kept.collect()) == sorted({"r09", "r10", "r11", *by_day.values()})
    assert kept.count() < len(runs)


def test_ingest_counts_each_landing_file_and_quarantine_reasons_carry_no_values(spark):
    files = catalog_rows(
        spark,
        "landing_files",
        [
            {"campaign_id": CID, "source_file": "s3://landing/tour-x/registrations_web.csv", "kind": "registrations",
             "format": "csv", "checksum": "c1", "rows_read": 10, "rows_ingested": 8, "rows_quarantined": 2,
             "run_id": "r", "ingested_at": NOW},
            {"campaign_id": CID, "source_file": "/l/tour-x/code_pool.csv", "kind": "code_pool", "format": "csv",
             "checksum": "c2", "rows_read": 4, "rows_ingested": 4, "rows_quarantined": 0, "run_id": "r",
             "ingested_at": NOW},
        ],
    )  # fmt: skip
    expected = literal_frame(
        spark,
        [("registrations_web.csv", "registrations", 10, 8, 2), ("code_pool.csv", "code_pool", 4, 4, 0)],
        "file string, kind string, lines long, ingested long, quarantined long",
    )
    assert_df_equality(ingest_by_file(files), expected, ignore_row_order=True, ignore_nullable=True)

    def q(reason, line):
        return {"campaign_id": CID, "stage": "ingest", "source_file": "/l/tour-x/registrations_web.csv",
                "line": line, "raw": "jane@example.com,+12125550101", "reason": reason, "run_id": "r",
                "quarantined_at": NOW}  # fmt: skip

    quarantine = catalog_rows(
        spark,
        "quarantine",
        [
            q("registered_at: expected an ISO-8601 timestamp with zone, got '2027-02-31T10:00:00Z'", 3),
            q("registered_at: expected an ISO-8601 timestamp with zone, got 'yesterday'", 4),
            q("duplicate email jane@example.com or phone +1 212 555 0101", 5),
        ],
    )
    expected = literal_frame(
        spark,
        [("ingest", "registrations_web.csv", "registered_at: expected an ISO-8601 timestamp with zone", 2),
         ("ingest", "registrations_web.csv", "duplicate email ***@*** or phone ***", 1)],
        "stage string, file string, reason string, rows long",
    )  # fmt: skip
    assert_df_equality(quarantine_reasons(quarantine), expected, ignore_row_order=True, ignore_nullable=True)


def test_the_last_run_of_each_stage_is_its_outcome_not_its_running_row(spark):
    def run(run_id, stage, minutes, status, counts=None, seconds=None):
        return {"run_id": run_id, "campaign_id": CID, "stage": stage, "started_at": T(minutes),
                "finished_at": T(minutes + 1) if status != "running" else None, "status": status,
                "seconds": seconds, "counts": counts or {}}  # fmt: skip

    runs = catalog_rows(
        spark,
        "pipeline_runs",
        [
            run("r1", "ingest", -30, "running"),
            run("r1", "ingest", -30, "succeeded", {"rows_read": 36, "ms:read": 900, "files_ingested": 5}, 12.5),
            run("r2", "ingest", -10, "running"),
            run("r2", "ingest", -10, "failed", {}, 1.0),  # the last ingest failed
            run("r1", "screen", -29, "running"),  # its process died: still running
            run("r1", "select", -28, "succeeded", {"selected": 2, "rounds": 1}, 3.0),
        ],
    )
    got = last_stage_runs(runs)
    expected = literal_frame(
        spark,
        [("ingest", "r2", "failed", 1.0, None), ("screen", "r1", "running", None, None),
         ("select", "r1", "succeeded", 3.0, 2)],
        "stage string, run_id string, status string, seconds double, rows long",
    )  # fmt: skip
    assert_df_equality(got.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)
    # a stage's figures without its step timings
    assert {r["stage"]: r["figures"] for r in got.collect()}["select"] == {"selected": 2, "rounds": 1}


def test_the_top_failure_reasons_are_counted_per_channel_with_contacts_masked(spark):
    def outcome(i, status, channel, error):
        return {"campaign_id": CID, "message_id": f"m{i}", "status": status, "channel": channel, "last_error": error}

    log = catalog_rows(
        spark,
        "notification_log",
        [
            outcome(1, "failed", "sms", "HTTP 400: number +44 7400 123456 is not mobile"),
            outcome(2, "failed", "sms", "HTTP 400: number +1 212 555 0101 is not mobile"),
            outcome(3, "failed", "email", "InvalidParameterValue for jane.doe@example.com"),
            outcome(4, "failed", "sms", None),
            outcome(5, "sent", "sms", None),
        ],
    )
    expected = literal_frame(
        spark,
        [("sms", "HTTP 400: number *** is not mobile", 2), ("email", "InvalidParameterValue for ***@***", 1),
         ("sms", "(no reason recorded)", 1)],
        "channel string, reason string, messages long",
    )  # fmt: skip
    assert_df_equality(failure_reasons(log), expected, ignore_row_order=True, ignore_nullable=True)
    assert failure_reasons(log, top=1).collect()[0]["messages"] == 2


def test_the_report_orders_stage_runs_as_the_pipeline_does():
    from campaign_pipeline.pipeline import PIPELINE

    assert figures.STAGE_ORDER == (*(s.name for s in PIPELINE), "maintain")
