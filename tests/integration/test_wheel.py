"""The wheel alone is enough: installed into a fresh virtual environment in a folder with no checkout,
`campaign-pipeline demo` runs every stage to a report. The project's own jars come from inside the
wheel; Delta, spark-avro and libphonenumber by their Maven coordinates (Spark's Ivy cache, and the
local Maven repository `make install` fills, keep a second run offline)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from helpers import ROOT, env_file

DIST = ROOT / "dist"


def _wheel(tmp_path: Path) -> Path:
    """The wheel `make dist` built (what `make test` runs after), else one built here the same way."""
    built = sorted(DIST.glob("campaign_pipeline-*.whl"))
    if built:
        return built[-1]
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return next(out.glob("campaign_pipeline-*.whl"))


def _clean_environment() -> dict[str, str]:
    """The test run's environment minus everything that points back at the checkout."""
    drop = ("CAMPAIGN_PIPELINE_", "PYSPARK_", "SPARK_", "PYTHONPATH", "VIRTUAL_ENV", "PYTEST_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)} | {"PYTHONNOUSERSITE": "1"}


def test_the_installed_wheel_runs_the_demo_to_a_report_outside_the_checkout(tmp_path):
    wheel = _wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {
        "campaign_pipeline/jars/campaign-pipeline-udfs.jar",
        "campaign_pipeline/jars/campaign-pipeline-localfs.jar",
    } <= names

    work = tmp_path / "elsewhere"
    work.mkdir()
    venv, environ = work / "venv", _clean_environment()
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=environ, timeout=120)
    python = venv / "bin" / "python"
    # no byte-compiling: a gigabyte of dependencies, run once (pip's cache keeps the download)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", str(wheel)],
        env=environ, cwd=work, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    installed = time.monotonic() - started

    where = subprocess.run(
        [str(python), "-c", "import campaign_pipeline.jars as j, campaign_pipeline as c; print(c.__file__, j.location())"],
        env=environ, cwd=work, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(str(venv) in p and str(ROOT) not in p for p in where), where
    assert sorted(p.name for p in Path(where[1]).glob("*.jar")) == [
        "campaign-pipeline-localfs.jar", "campaign-pipeline-udfs.jar"
    ]  # fmt: skip

    # a local environment sized for tiny data (the tests' Spark settings), given as a file
    environment = env_file(work)
    demo = subprocess.run(
        [str(venv / "bin" / "campaign-pipeline"), "demo", "--registrants", "2000", "--markets", "4",
         "--env", str(environment), "--warehouse", str(work / "warehouse")],
        env=environ | {"CAMPAIGN_PIPELINE_DRIVER_MEMORY": "1g"}, cwd=work, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert demo.returncode == 0, (demo.stdout[-3000:], demo.stderr[-3000:])
    report = work / "warehouse" / "_reports" / "demo-tour" / "report.html"
    assert "campaign report (" in demo.stdout and str(report) in demo.stdout
    assert report.is_file() and report.stat().st_size > 20_000
    assert "registrants              2,000 rows" in demo.stdout
    print(f"install {installed:.0f} s, demo {time.monotonic() - started - installed:.0f} s")
