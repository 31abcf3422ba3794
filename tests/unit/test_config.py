"""Config errors name the file, the key and the problem, in one line."""

import json
import textwrap

import pytest

from campaign_pipeline.config import load_campaign, load_environment
from campaign_pipeline.errors import ConfigError

GOOD = """
campaign_id: spring-tour
name: Spring Tour
artist: Aurora Skies
seed: 42
markets:
  - {market_id: NYC-01, name: New York, capacity: 100, event_date: 2027-05-01, timezone: America/New_York}
  - {market_id: LAX-02, name: Los Angeles, capacity: 50, event_date: 2027-05-03}
  - {market_id: CHI-03, name: Chicago, capacity: 10, event_date: 2027-05-05}
waves:
  - {wave_id: w1, notify_at: "2027-03-01T15:00:00Z", markets: [NYC-01]}
"""


def _write(tmp_path, text, name="x.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _error(path):
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    assert info.value.exit_code == 2
    return str(info.value)


def test_a_good_campaign_loads_with_documented_defaults(tmp_path):
    c = load_campaign(_write(tmp_path, GOOD))
    assert c.market_ids == ["NYC-01", "LAX-02", "CHI-03"]
    assert c.options.sms_countries == ["US", "CA"]
    assert [(b.name, b.min, b.max) for b in c.scoring.bands] == [
        ("high", 0.95, 1.0),
        ("mid", 0.8, 0.95),
        ("low", 0.22, 0.8),
    ]
    assert c.screening.ring_size == 6


def test_negative_capacity_names_file_key_and_value(tmp_path):
    path = _write(tmp_path, GOOD.replace("capacity: 10,", "capacity: -5,"))
    assert _error(path) == f"{path}: markets[2].capacity: must be > 0, got -5"


def test_unknown_key_is_an_error_not_ignored(tmp_path):
    path = _write(tmp_path, GOOD.replace("seed: 42", "seed: 42\nsead: 43"))
    assert (
        _error(path)
        == f"{path}: sead: unknown key (check the spelling against the configuration reference, docs/reference/configuration.md)"
    )


def test_missing_required_key(tmp_path):
    path = _write(tmp_path, GOOD.replace("artist: Aurora Skies\n", ""))
    assert _error(path) == f"{path}: artist: required key is missing"


def test_wave_naming_an_unknown_market(tmp_path):
    path = _write(tmp_path, GOOD.replace("markets: [NYC-01]", "markets: [NYC-01, ROM-09]"))
    assert _error(path) == f"{path}: waves[0].markets[1]: unknown market 'ROM-09'"


def test_wave_time_without_zone(tmp_path):
    path = _write(tmp_path, GOOD.replace('"2027-03-01T15:00:00Z"', '"2027-03-01T15:00:00"'))
    assert "waves[0].notify_at: must carry a time zone" in _error(path)


def test_bad_time_zone_and_bad_yaml(tmp_path):
    path = _write(tmp_path, GOOD.replace("America/New_York", "Mars/Olympus"))
    assert _error(path) == f"{path}: markets[0].timezone: unknown IANA time zone 'Mars/Olympus'"
    broken = _write(tmp_path, "campaign_id: [unclosed\n", "broken.yaml")
    assert _error(broken).startswith(f"{broken}: line 2, column 1: not valid YAML")


def test_missing_file(tmp_path):
    assert _error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: campaign config file not found"


def test_environment_roots_are_overridden_by_cli_flags(tmp_path):
    env = load_environment("local").with_roots(landing="/data/in", warehouse="/data/wh")
    assert (env.landing_root, env.warehouse_root) == ("/data/in", "/data/wh")
    assert env.secrets.code_key_env == "CAMPAIGN_CODE_KEY"


def test_environment_with_a_bad_mode(tmp_path):
    path = _write(tmp_path, "name: x\nmode: cloud\nwarehouse_root: w\nlanding_root: l\n", "env.yaml")
    with pytest.raises(ConfigError) as info:
        load_environment(str(path))
    assert str(info.value) == f"{path}: mode: input should be 'local' or 'cluster', got 'cloud'"


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "conf"
    for path in sorted((root / "campaigns").glob("*.yaml")):
        load_campaign(path)
    for name in ("local", "emr"):
        load_environment(str(root / "environments" / f"{name}.yaml"))


def test_a_template_that_reaches_python_internals_is_refused_when_the_campaign_loads(tmp_path):
    probe = "{{ cycler.__init__.__globals__.os.environ.CAMPAIGN_CODE_KEY }}"
    text = GOOD + f'messages:\n  templates:\n    en_US: {{sms: "{probe}", email_subject: "S", email_body: "B"}}\n'
    message = _error(_write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'x.yaml'}: messages.templates.en_US.sms: SecurityError:"), message


@pytest.mark.parametrize(
    ("bands", "problem"),
    [
        (
            "[{name: high, min: 0.9, max: 0.99}, {name: low, min: 0.2, max: 0.9}]",
            "scoring.bands: the top band 'high' ends at 0.99: scores above it would have no band; its max must be 1.0",
        ),
        (
            "[{name: high, min: 0.9, max: 1.0}, {name: low, min: 0.2, max: 0.8}]",
            "scoring.bands: gap between bands 'low' and 'high': scores in [0.8, 0.9) would have no "
            "band; band 'high' must start at 0.8",
        ),
        (
            "[{name: high, min: 0.8, max: 1.0}, {name: low, min: 0.2, max: 0.85}]",
            "scoring.bands: bands 'low' and 'high' overlap: 'low' ends at 0.85, 'high' starts at 0.8",
        ),
    ],
    ids=["top-band-short-of-1", "gap", "overlap"],
)
def test_bands_must_cover_the_score_range(tmp_path, bands, problem):
    path = _write(tmp_path, GOOD + f"scoring:\n  bands: {bands}\n")
    assert _error(path) == f"{path}: {problem}"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ 1/0 }}", "ZeroDivisionError: division by zero"),
        ("{{ code + 1 }}", "TypeError: can only concatenate str"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
         "TemplateLimitError: more than 20,000 loop steps and calls"),
        ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
         "TemplateLimitError: more than 20,000 loop steps and calls"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "TemplateLimitError: the template recursed too deeply"),
        ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
         "TemplateLimitError: a `~` would build more than 1,000,000 characters"),
        ('{{ "a" * 10**9 }}', "SecurityError: a repeat of 1,000,000,000"),
        ("{{ 2 ** 100000 }}", "SecurityError: a power of 100000"),
        ("{{ ''|center(1000000000) }}", "TemplateLimitError: center: a width above 1,000"),
        ("{{ 'x'|indent('y' * 5000) }}", "TemplateLimitError: indent: a width above 1,000"),
        ("{{ '%(a)5000s'|format(a='x') }}", "TemplateLimitError: format: widths and precisions above 1000"),
        ("{{ '%.5000f' % 1 }}", "SecurityError: a format width or precision above 1000"),
        ("{{ '{0:{1}}'.format('x', 5000) }}", "SecurityError: a format width above 1000 (or a nested one)"),
        ("{{ 'x'.ljust(5000) }}", "SecurityError: access to attribute 'ljust' of 'str' object is unsafe"),
        ("{{ ('x' * 1000000)|replace('x', 'y' * 1000) }}", "TemplateLimitError: replace: the result would be too large"),
        ("{{ ('x ' * 100000)|wordwrap(1, True, 'z' * 1000) }}", "TemplateLimitError: wordwrap: the result could be"),
        ("{{ lipsum(100000) }}", "UndefinedError: 'lipsum' is undefined"),
    ],
)  # fmt: skip
def test_a_template_that_raises_or_runs_away_is_refused_with_its_key_when_the_campaign_loads(
    tmp_path, template, problem
):
    text = (
        GOOD
        + "messages:\n  templates:\n    en_US: {sms: "
        + json.dumps(template)
        + ", email_subject: S, email_body: B}\n"
    )
    message = _error(_write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'x.yaml'}: messages.templates.en_US.sms: {problem}"), message


def test_a_lease_shorter_than_three_request_timeouts_is_refused(tmp_path):
    text = "name: x\nwarehouse_root: w\nlanding_root: l\nnotify: {lease_seconds: 20, timeout_seconds: 10}\n"
    with pytest.raises(ConfigError) as info:
        load_environment(str(_write(tmp_path, text, "env.yaml")))
    assert str(info.value).endswith("notify.lease_seconds: must be at least 3 × notify.timeout_seconds (30), got 20")
