"""`make dist`: what a cluster needs to run the jobs, in one folder (docs/operator/emr.md).

    dist/
      campaign_pipeline-<version>-py3-none-any.whl   the package, its own jars inside (the wheel
                            the tests install into a fresh environment and run the demo with)
      pyspark_venv.tar.gz   a packed virtual environment: the package and its dependencies, for
                            `spark.archives=…#environment` (EMR on EC2 and EMR Serverless)
      conf.tar.gz           conf/ (environments, campaigns, rules, schedules), for `…#conf`
      jobs/*.py             the spark-submit entry points
      jars/                 campaign-pipeline-udfs.jar (the JVM phone parser) and Google's
                            libphonenumber.jar, for `spark.jars`
      requirements.lock     the exact package versions packed (pip freeze of the environment)
      MANIFEST.json         versions and the sha256 of every file; `submit` uploads by it

The virtual environment leaves out pyspark: the cluster's Spark (4.0.2 on emr-spark-8.0.0) puts
its own on the path, and a second copy of a different build breaks py4j. It leaves out deltalake
too: only `explain` uses it, and explain runs where support works, not on the cluster. delta-spark's Python
API is pure Python and pinned to the Delta jar version, so it is installed without pulling
pyspark in. The build venv lives in build/dist-venv and is reused: a second `make dist` after a
code change only reinstalls the wheel and repacks.

venv-pack links the environment's python to a base interpreter at the same path as on the build
machine, or at `--python-prefix` (for EMR: build on Amazon Linux 2023 with Python 3.11 and pass
DIST_PYTHON_PREFIX=/usr). This machine's own archive is what the distributed test runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# Provided by the cluster, or not used there, so never packed: pyspark comes with the cluster's
# Spark; deltalake (delta-rs) serves `explain` where support works, and no job imports it.
CLUSTER_PROVIDED = {"pyspark", "deltalake"}
# Pure-Python API over the Delta jar: installed without its pyspark dependency.
NO_DEPS = {"delta-spark"}


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"make dist: {what} failed ({' '.join(cmd[:4])} …):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _requirements(wheel: Path) -> tuple[list[str], list[str]]:
    """(requirements to install with dependencies, requirements to install without) from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(zf.read(meta).decode())
    with_deps, no_deps = [], []
    for line in headers.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra (dev)
        name = req.name.lower()
        if name in CLUSTER_PROVIDED:
            continue
        (no_deps if name in NO_DEPS else with_deps).append(str(req))
    return with_deps, no_deps


def _tar(source: Path, target: Path) -> None:
    """A tar.gz of a folder's contents (no top-level folder: Spark unpacks it into `#name`)."""
    with tarfile.open(target, "w:gz", compresslevel=6) as tf:
        for path in sorted(source.rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = tf.gettarinfo(str(path), str(path.relative_to(source)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with open(path, "rb") as f:
                    tf.addfile(info, f)
            elif path.is_dir():
                tf.addfile(info)


def build(out: Path, build_dir: Path, python_prefix: str | None, delta_version: str, jars: list[Path]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("campaign_pipeline-*.whl"):
        old.unlink()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        "building the wheel",
    )
    wheel = next(out.glob("campaign_pipeline-*.whl"))
    with zipfile.ZipFile(wheel) as zf:  # the wheel carries the project's own jars (campaign_pipeline.jars)
        own = [n for n in zf.namelist() if n.startswith("campaign_pipeline/jars/") and n.endswith(".jar")]
    if len(own) < 2:
        sys.exit(f"make dist: {wheel.name} holds {own or 'none'} of the package's jars; run `make jvm` first")

    venv = build_dir / "dist-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        _run([sys.executable, "-m", "venv", str(venv)], "creating the build virtual environment")
        _run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], "upgrading pip")
    with_deps, no_deps = _requirements(wheel)
    _run([str(py), "-m", "pip", "install", "-q", *with_deps], "installing the dependencies")
    delta = [f"delta-spark=={delta_version}" if r.startswith("delta-spark") else r for r in no_deps]
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", *delta], "installing delta-spark")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], "installing the wheel")
    for name in sorted(CLUSTER_PROVIDED):
        if subprocess.run([str(py), "-c", f"import {name}"], capture_output=True).returncode == 0:
            _run([str(py), "-m", "pip", "uninstall", "-q", "-y", name], f"removing {name}")

    frozen = subprocess.run([str(py), "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True)
    (out / "requirements.lock").write_text(frozen.stdout)  # exactly what the archive holds

    archive = out / "pyspark_venv.tar.gz"
    pack = [str(Path(sys.executable).parent / "venv-pack"), "-p", str(venv), "-o", str(archive), "-f", "-q"]
    pack += ["--exclude", "*/__pycache__/*", "--compress-level", "1"]
    if python_prefix:
        pack += ["--python-prefix", python_prefix]
    _run(pack, "packing the virtual environment (venv-pack)")

    _tar(ROOT / "conf", out / "conf.tar.gz")
    jobs = out / "jobs"
    shutil.rmtree(jobs, ignore_errors=True)
    jobs.mkdir()
    for job in sorted((ROOT / "jobs").glob("*.py")):
        shutil.copy2(job, jobs / job.name)

    jar_dir = out / "jars"
    shutil.rmtree(jar_dir, ignore_errors=True)
    jar_dir.mkdir()
    versions = {}
    for jar in jars:
        if not jar.is_file():
            sys.exit(f"make dist: {jar} is missing; run `make install`")
        # libphonenumber-9.0.43.jar → libphonenumber.jar: the names spark.jars lists (ops/deploy/submit.py)
        name = jar.name.split("-")[0] + ".jar" if jar.name.startswith("libphonenumber-") else jar.name
        if name != jar.name:
            versions[name.removesuffix(".jar")] = jar.name.removesuffix(".jar").split("-", 1)[1]
        shutil.copy2(jar, jar_dir / name)

    from campaign_pipeline import __version__

    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    manifest = {
        "version": __version__,
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or None,
        "python": platform.python_version(),
        "python_prefix": python_prefix or sys.base_prefix,
        "platform": f"{platform.system()}-{platform.machine()}",
        "spark": "provided by the cluster (4.0.x)",
        "delta_spark": delta_version,
        **versions,
        "files": {str(p.relative_to(out)): {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "dist"))
    parser.add_argument("--build-dir", default=str(ROOT / "build"))
    parser.add_argument("--python-prefix", default=None, help="base Python prefix on the cluster, e.g. /usr")
    parser.add_argument("--delta-version", default="4.0.1")
    parser.add_argument("--jar", action="append", default=[], help="a jar for dist/jars/ (repeat)")
    args = parser.parse_args()
    jars = [Path(j) for j in args.jar]
    manifest = build(Path(args.out), Path(args.build_dir), args.python_prefix or None, args.delta_version, jars)
    size = sum(f["bytes"] for f in manifest["files"].values())
    print(f"dist: {len(manifest['files'])} files, {size / 2**20:.0f} MiB in {args.out} (version {manifest['version']})")


if __name__ == "__main__":
    main()
