"""Operator templates render in a sandbox; legacy CSVs never carry a spreadsheet formula."""

import datetime as dt

import pytest
from jinja2.exceptions import SecurityError

from campaign_pipeline.catalog import CATALOG
from campaign_pipeline.frames import literal_frame
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
    # a vendor's pool code and a mobile number that are not plain are neutralised too
    odd = [(*rows[0][:8], "=1+2", *rows[0][9:19], "+1 =cmd()", *rows[0][20:])]
    line = next(r["line"] for r in legacy_lines(literal_frame(spark, odd, CATALOG["wave_messages"].schema)).collect()
                if r["member"] == "sms/NYC-01.csv")  # fmt: skip
    assert line.startswith("'=1+2,false,") and ",'+1 =cmd(),'@SUM" in line


def _rendered(spark, campaign, rows, engine, frame=False):
    """i → rendered struct; `frame`: through `with_rendered` (what plan_waves runs), else the Column."""
    from pyspark.sql import functions as F

    from campaign_pipeline.templating import VARIABLES
    from campaign_pipeline.waves.render import render_messages, with_rendered

    df = spark.createDataFrame(
        rows, "i int, key string, channel string, " + ", ".join(f"{v} string" for v in VARIABLES)
    )
    variables = F.struct(*[F.col(v) for v in VARIABLES])
    if frame:
        with_r = with_rendered(df, campaign, "r", F.col("key"), F.col("channel"), variables, engine)
        assert with_r.columns == [*df.columns, "r"]
        out = with_r.select("i", "r")
    else:
        out = df.select("i", render_messages(campaign, F.col("key"), F.col("channel"), variables, engine).alias("r"))
    return {r.i: tuple(r.r) for r in out.collect()}


def test_spark_renders_text_and_variable_templates_exactly_as_jinja2_does(spark):
    from campaign_pipeline.config import Messages, Template, load_campaign
    from campaign_pipeline.templating import VARIABLES, literal_parts
    from campaign_pipeline.waves.render import BUILTIN

    campaign = load_campaign("conf/campaigns/spring-tour-2027.yaml")
    templates = {
        "html": Template(
            sms="{{- artist -}}  ·  {{ code }}\r\n{{ link }}\n",
            email_subject="{{ artist }} & {{ market }}",
            email_body="<p>Hi {{ first_name }} {{last_name}},</p>\n<b>{{ code }}</b> {{ link }}",
        ),
        "long": Template(sms="[{{ first_name }}] " + "x" * 150 + " {{ code }}", email_subject="s", email_body="b"),
        "empty": Template(sms="", email_subject="{{ code }}", email_body="{{ first_name }}"),
    }
    campaign = campaign.model_copy(update={"messages": Messages(templates=templates)})
    assert all(literal_parts("sms", t.sms) is not None for t in templates.values())
    names = [None, "", "Zoë", "O'Brien & <Sons>", '"quoted"', "€uro ^{}[]~|\\", "emoji 🎸", "line\u0085end", "日本"]
    rows = []
    for i in range(180):
        values = [names[(i * (j + 1)) % len(names)] for j in range(len(VARIABLES))]
        key = ["html", "long", "empty", BUILTIN][i % 4]
        rows.append((i, key, ["sms", "email"][(i // 4) % 2], *values))
    spark_out, jinja_out = (_rendered(spark, campaign, rows, e) for e in ("spark", "jinja"))
    assert spark_out == jinja_out
    assert _rendered(spark, campaign, rows, "spark", frame=True) == jinja_out  # plan_waves' way
    segments = {v[2] for v in spark_out.values() if v[2] is not None}
    assert {1, 2, 3} <= segments and {v[3] for v in spark_out.values()} >= {"GSM-7", "UCS-2"}


def test_a_template_with_filters_is_rendered_by_jinja2(spark):
    from campaign_pipeline.config import Messages, Template, load_campaign
    from campaign_pipeline.templating import VARIABLES

    campaign = load_campaign("conf/campaigns/spring-tour-2027.yaml")
    fancy = Template(
        sms="{{ first_name | upper }}{% if code %}: {{ code }}{% endif %}", email_subject="s", email_body="b"
    )
    campaign = campaign.model_copy(update={"messages": Messages(templates={"en_US": fancy})})
    row = (1, "en_US", "sms", *["ada" if v == "first_name" else "C1" if v == "code" else "v" for v in VARIABLES])
    assert _rendered(spark, campaign, [row], "auto")[1] == (None, "ADA: C1", 1, "GSM-7", None)


@pytest.mark.parametrize("staged_on", ["local", "hadoop"])
def test_the_wave_zip_holds_each_members_lines_sorted_by_fan_behind_the_header(spark, tmp_path, monkeypatch, staged_on):
    import os
    import zipfile

    from campaign_pipeline.waves import export
    from campaign_pipeline.waves.export import HEADER, write_wave_zip

    if staged_on == "hadoop":  # read the staged files through Hadoop's file system, as on S3
        monkeypatch.setattr(export, "_local_path", lambda status: None)

    members = ["sms/NYC-01.csv", "email/NYC 01 é.csv", "masterCodes/LAX=02%.csv"]
    rows = [
        (members[i % 3], f"F{(i * 7919) % 1000:04d}", f'F{(i * 7919) % 1000:04d},"two\nlines",x{i}')
        for i in range(1000)
    ]
    lines = spark.createDataFrame(rows, "member string, k string, line string").repartition(3)
    path, staging = tmp_path / "wave.zip", tmp_path / "staging"
    assert write_wave_zip(lines, str(path), T0, str(staging)) == 1000
    assert not os.path.exists(staging)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == sorted(members)
        for member in members:
            expected = [line for m, _, line in sorted(rows) if m == member]
            assert zf.read(member).decode() == HEADER + "\n" + "".join(f"{line}\n" for line in expected)
            assert zf.getinfo(member).date_time == (2027, 3, 1, 15, 0, 0)
