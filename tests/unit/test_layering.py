"""The package's layering, read from the imports (module level and inside functions alike).

Each module belongs to a room: a top-level module, a stage package, or one of `ops/`' parts.
Rooms are ranked from the foundations up; a module may import its own room and any room ranked
below it. A new upward or sideways edge fails here: move the shared piece down (or, where a
stage's public face is meant to be shared, add the edge to ALLOWED with the reason).
The jobs a cluster runs (`jobs/*.py`) must never reach the demo or the synthetic data generator.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lib" / "campaign_pipeline"

# Low to high; rooms on one line share a rank and may not import each other.
RANKS: list[tuple[str, ...]] = [
    ("campaign_pipeline", "errors"),
    (
        "privacy",
        "spreadsheets",
        "storage",
        "fan_ranges",
        "templating",
        "secret_values",
        "project",
        "versions",
        "jars",
        "python_workers",
    ),
    ("channels", "ops.alerts"),
    ("config", "catalog"),
    ("frames",),
    ("times",),
    ("warehouse", "session"),
    ("stage_context",),
    ("quality",),
    ("ingest", "screening", "scoring", "selection", "codes", "waves", "notify", "report"),
    ("pipeline",),
    ("runner", "ops.maintain", "ops.explain", "ops.deploy"),
    # operators' checks over the others' models and readers: validate (schedules' schema), runs (delta-rs)
    ("ops.validate", "ops.runs"),
    ("cli",),
    ("synth", "demo"),
    ("console",),
    ("__main__",),
]

# Edges that cross the ranks on purpose, each with its reason.
ALLOWED: dict[tuple[str, str], str] = {
    ("codes", "waves.membership"): "a coded fan is placed in an open wave: the waves' calendar is its public face",
    ("notify", "waves.membership"): "notify sends the waves in the calendar's order",
    ("demo", "synth"): "the demo synthesises the campaign it runs",
}


def room(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "campaign_pipeline"
    if parts[0] == "ops" and len(parts) > 1:
        return f"ops.{parts[1]}"
    return parts[0]


def rank(name: str) -> int:
    for i, rooms in enumerate(RANKS):
        if name in rooms:
            return i
    raise AssertionError(f"room {name!r} is not ranked in RANKS (tests/unit/test_layering.py)")


def module_name(path: Path) -> str:
    if ROOT / "lib" not in path.parents:
        return path.stem  # a job: a script, not in the package
    parts = list(path.relative_to(ROOT / "lib").with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every campaign_pipeline module `path` imports, anywhere in the file (relative imports
    resolved; imports under `if TYPE_CHECKING:` left out, as they never run)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # `from .demo import command` inside campaign_pipeline
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if not base.startswith("campaign_pipeline"):
                continue
            for alias in node.names:  # `from campaign_pipeline.ops import alerts` imports a module
                sub = f"{base}.{alias.name}"
                found.add(sub if _path_of(sub) else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("campaign_pipeline")}
    return found


def _path_of(module: str) -> Path | None:
    base = ROOT / "lib" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def edges() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_upward_or_sideways():
    wrong = []
    for module, targets in edges().items():
        here = room(module)
        for target in sorted(targets):
            there = room(target)
            if there == here or rank(there) < rank(here):
                continue
            if (here, ".".join(target.split(".")[1:])) in ALLOWED or (here, there) in ALLOWED:
                continue
            wrong.append(f"{module} → {target} ({here} may not import {there})")
    assert not wrong, "\n".join(wrong)


def test_quality_imports_no_stage():
    stages = set(RANKS[rank("ingest")])
    for module, targets in edges().items():
        if room(module) == "quality":
            assert not {room(t) for t in targets} & stages, module


def test_every_allowed_edge_is_still_used():
    used = {(room(m), ".".join(t.split(".")[1:])) for m, ts in edges().items() for t in ts}
    used |= {(room(m), room(t)) for m, ts in edges().items() for t in ts}
    assert set(ALLOWED) <= used, set(ALLOWED) - used


def test_the_jobs_never_reach_the_demo_or_the_synthetic_generator():
    graph = edges()
    for job in sorted((ROOT / "jobs").glob("*.py")):
        seen: set[str] = set()
        todo = list(imports(job))
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            todo += graph.get(module, set())
        reached = {room(m) for m in seen}
        assert "campaign_pipeline.cli" in seen, job.name
        assert not reached & {"demo", "synth", "console"}, (job.name, sorted(reached & {"demo", "synth", "console"}))


def test_a_job_process_loads_no_demo_or_synthetic_module():
    """The same, at run time: what importing the jobs' entry point loads."""
    import subprocess
    import sys

    code = "import sys, campaign_pipeline.cli as c; c.build_parser(); print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "campaign_pipeline.pipeline" in loaded
    assert not [m for m in loaded if m.split(".")[:2] in (["campaign_pipeline", "demo"], ["campaign_pipeline", "synth"],
                                                           ["campaign_pipeline", "console"])]  # fmt: skip


def test_the_import_reader_sees_relative_and_function_local_imports(tmp_path):
    """The reader this file relies on: a relative import and one inside a function are edges."""
    probe = PACKAGE / "ops" / "_layering_probe.py"
    probe.write_text("from ..demo import command\n\ndef f():\n    from campaign_pipeline.synth import spec\n")
    try:
        assert imports(probe) == {"campaign_pipeline.demo.command", "campaign_pipeline.synth.spec"}
    finally:
        probe.unlink()
