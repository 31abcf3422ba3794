"""The documentation: configuration keys all described, generated sections where the pages ask
for them, and the site built with --strict (no broken link, no page left out of the navigation)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from campaign_pipeline.config import Campaign, Environment

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _docs_gen():
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "tools" / "docs_gen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_configuration_key_has_a_description():
    gen = _docs_gen()
    assert gen.undocumented_fields(Campaign, Environment) == []

    class Inner(BaseModel):
        documented: int = Field(1, description="one")
        bare: int = 2

    class Outer(BaseModel):
        inner: list[Inner] = Field(default_factory=list, description="nested in a list")

    assert gen.undocumented_fields(Outer) == ["Inner.bare"]


def test_the_configuration_reference_lists_every_key_with_type_default_and_description():
    gen = _docs_gen()
    campaign = gen.config_campaign()
    assert "| `markets[].capacity` | int | **required** | codes the market can give (> 0) |" in campaign
    assert "| `options.sms_countries` | list of str | `['US', 'CA']` |" in campaign
    assert "| `scoring.source` | `model` \\| `external` \\| `fanlist` | `model` |" in campaign
    assert "| `messages.templates.<key>.sms` | str | **required** |" in campaign
    environment = gen.config_environment()
    assert "| `notify.lease_seconds` | float | `120` |" in environment
    assert "| `emr.artifacts_uri` | str | **required** |" in environment
    for table, at_least in ((campaign, 60), (environment, 30)):
        keys = re.findall(r"^\| `([^`]+)` \|", table, re.M)
        assert len(keys) == len(set(keys)) >= at_least


def test_each_generated_section_is_asked_for_by_its_page_and_comes_from_the_code():
    gen = _docs_gen()
    from campaign_pipeline.pipeline import diagram
    from campaign_pipeline.screening.rules import DISQUALIFYING, TAG_ORDER

    asked = {}
    for page in DOCS.rglob("*.md"):
        for name in gen.MARKER.findall(page.read_text(encoding="utf-8")):
            asked[name] = page.relative_to(DOCS).as_posix()
    assert asked == {
        "stage-diagram": "concepts/stages.md",
        "tables": "concepts/tables.md",
        "screening-tags": "rules/screening.md",
        "config-campaign": "reference/configuration.md",
        "config-environment": "reference/configuration.md",
    }
    assert gen.expand("a\n<!-- generated: stage-diagram -->\nb") == f"a\n{diagram()}\nb"
    with pytest.raises(KeyError, match="unknown generated section 'nope'"):
        gen.expand("<!-- generated: nope -->")
    assert set(gen.TAG_RULES) == set(TAG_ORDER)
    tags = gen.screening_tags()
    for tag in TAG_ORDER:
        row = next(line for line in tags.splitlines() if line.startswith(f"| `{tag}` |"))
        assert row.endswith("| no |") != (tag in DISQUALIFYING), row


def test_the_readme_is_short_and_links_only_to_pages_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links and all((ROOT / link).is_file() for link in links), [x for x in links if not (ROOT / x).is_file()]


def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, or a page missing from nav, fails."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is not installed: `pip install -e .[dev]` installs it (setup.cfg, docs extra)"
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()
    built = (tmp_path / "site" / "concepts" / "stages" / "index.html").read_text(encoding="utf-8")
    assert "generated:" not in built and "assign_codes" in built
