"""The report folder published to a local folder or to S3 (a moto server on 127.0.0.1)."""

from __future__ import annotations

import pytest
from helpers import moto_server

from campaign_pipeline.report.stage import headline_text, publish


def _report_folder(tmp_path):
    folder = tmp_path / "built"
    (folder / "data_docs").mkdir(parents=True)
    (folder / "report.html").write_text("<!doctype html><title>r</title>", encoding="utf-8")
    (folder / "data_docs" / "index.html").write_text("<html></html>", encoding="utf-8")
    return folder


def test_the_report_and_its_data_docs_are_uploaded_to_s3(tmp_path, monkeypatch):
    import boto3

    server, endpoint = moto_server()
    try:
        for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                     "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="reports")
        where = publish(_report_folder(tmp_path), "s3://reports/campaigns/spring-tour-2027")
        assert where == "s3://reports/campaigns/spring-tour-2027/report.html"
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="reports")["Contents"])
        assert keys == ["campaigns/spring-tour-2027/data_docs/index.html", "campaigns/spring-tour-2027/report.html"]
        head = s3.head_object(Bucket="reports", Key="campaigns/spring-tour-2027/report.html")
        assert head["ContentType"] == "text/html; charset=utf-8"
        with pytest.raises(Exception, match="report: cannot upload s3://missing-bucket/x/"):
            publish(_report_folder(tmp_path / "again"), "s3://missing-bucket/x")
    finally:
        server.stop()


def test_a_local_destination_replaces_the_previous_data_docs(tmp_path):
    out = tmp_path / "out"
    (out / "data_docs").mkdir(parents=True)
    (out / "data_docs" / "stale.html").write_text("old", encoding="utf-8")
    where = publish(_report_folder(tmp_path), str(out))
    assert where == str((out / "report.html").resolve())
    assert sorted(p.name for p in (out / "data_docs").iterdir()) == ["index.html"]
    text = headline_text("c1", {"registrants": 1200, "selected": 30}, where)
    assert text.startswith(":bar_chart: campaign c1 report: registrants 1,200 · selected 30")
