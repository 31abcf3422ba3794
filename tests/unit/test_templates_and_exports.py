"""Operator templates render in a sandbox; legacy CSVs never carry a spreadsheet formula."""

import datetime as dt

import pytest
from jinja2.exceptions import SecurityError

from campaign_pipeline.tables import CATALOG, literal_frame
from campaign_pipeline.templating import compile_template, template_problem
from campaign_pipeline.waves.export import legacy_lines

T0 = dt.datetime(2027, 3, 1, 15, tzinfo=dt.UTC)


def test_a_template_can_never_render_a_secret(monkeypatch):
    monkeypatch.setenv("CAMPAIGN_CODE_KEY", "s3cret-key-never-shown")
    for probe in (
        "{{ cycler.__init__.__globals__.os.environ.CAMPAIGN_CODE_KEY }}",
        "{{ joiner.__init__.__globals__['os'].environ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    ):
        with pytest.raises(SecurityError):
            compile_template("sms", probe).render(code="X")
        assert template_problem("sms", probe).startswith("SecurityError"), probe


def test_html_email_bodies_are_autoescaped_and_sms_text_is_not():
    name = "<script>alert(1)</script> O'Brien"
    html = compile_template("email_body", "<p>Hi {{ first_name }}</p>").render(first_name=name)
    assert html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt; O&#39;Brien</p>"
    assert compile_template("sms", "Hi {{ first_name }}").render(first_name=name) == f"Hi {name}"
    assert compile_template("email_body", "Hi {{ first_name }}").render(first_name=name) == f"Hi {name}"


def test_free_text_that_starts_like_a_formula_is_neutralised_in_the_legacy_csv(spark):
    rows = [
        ("c", "wave-1", "m1", "=F1", "-M1", "NYC-01", "sms", "+447400123456", "CODE1", "pool", "en_US", None,
         "@SUM(A1) win", "https://x", 1, "GSM-7", "=HYPERLINK(\"http://evil\",\"x\")", "+1", "\tx@example.com",
         "+447400123456", False, T0, "r"),
    ]  # fmt: skip
    lines = legacy_lines(literal_frame(spark, rows, CATALOG["wave_messages"].schema)).collect()
    sms = next(r["line"] for r in lines if r["member"] == "sms/NYC-01.csv")
    assert sms == (
        'CODE1,false,\'\tx@example.com,"\'=HYPERLINK(""http://evil"",""x"")",\'+1,https://x,en_US,NYC-01,'
        "'=F1,'-M1,+447400123456,'@SUM(A1) win"
    )
