"""The one pipeline definition: order, prerequisites, jobs, CLI verbs, README diagram, lineage policy."""

import ast
import datetime as dt
from pathlib import Path

import pytest
from helpers import make_campaign

from campaign_pipeline.errors import PipelineError, SchemaError
from campaign_pipeline.frames import catalog_rows, require_columns
from campaign_pipeline.pipeline import PIPELINE, check_definition, diagram, producer
from campaign_pipeline.runner import run_pipeline, stage_runs
from campaign_pipeline.stage_context import StageContext
from campaign_pipeline.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib" / "campaign_pipeline"


def test_every_table_a_stage_names_is_in_the_catalog_and_every_need_is_written_earlier():
    assert check_definition() == []
    assert [s.name for s in PIPELINE] == [
        "ingest",
        "screen",
        "score",
        "select",
        "assign_codes",
        "plan_waves",
        "notify",
        "report",
    ]
    assert producer("scores", before="select").name == "score"
    assert producer("scores", before="score") is None


def test_each_stage_has_its_spark_submit_job_and_cli_verb():
    from campaign_pipeline.cli import build_parser

    jobs = {p.name for p in (ROOT / "jobs").glob("*.py")}
    # plus the whole pipeline and the operations that are not stages (maintain)
    assert jobs == {Path(s.job_file).name for s in PIPELINE} | {"pipeline.py", "maintain.py"}
    assert 'main(["maintain", *sys.argv[1:]])' in (ROOT / "jobs" / "maintain.py").read_text()
    for s in PIPELINE:
        assert f'main(["{s.name}", *sys.argv[1:]])' in (ROOT / s.job_file).read_text()
    verbs = build_parser()._subparsers._group_actions[0].choices
    assert {s.name for s in PIPELINE} <= set(verbs)


def test_the_readme_shows_the_stage_diagram_of_the_definition():
    # Regenerate with `campaign-pipeline stages` and paste it into the README.
    assert diagram() in (ROOT / "README.md").read_text()


def _module_imports(path: Path) -> set[str]:
    """Project modules imported at module level (imports inside functions run later, not at import)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("campaign_pipeline"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("campaign_pipeline")}
    return found


def test_no_import_cycle_and_stage_context_imports_nothing_of_the_project():
    modules = {
        ".".join(("campaign_pipeline", *p.relative_to(LIB).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in LIB.rglob("*.py")
    }
    graph = {m: {i for i in _module_imports(p) if i in modules and i != m} for m, p in modules.items()}
    assert graph["campaign_pipeline.stage_context"] == set()

    def visit(module, path):
        for nxt in graph[module]:
            assert nxt not in path, f"import cycle: {' → '.join([*path, nxt])}"
            visit(nxt, [*path, nxt])

    for m in graph:
        visit(m, [m])


def test_a_stage_whose_input_was_never_produced_names_the_stage_to_run_first(spark, test_env, tmp_path):
    env = test_env.with_roots(str(tmp_path / "landing"), str(tmp_path / "wh"))
    with pytest.raises(PipelineError) as info:
        run_pipeline(spark, make_campaign("tour-x"), env, stages=["select"], out=open("/dev/null", "w"))
    assert str(info.value) == "stage select needs registrants for campaign tour-x: run screen first"
    failed = stage_runs(Warehouse(spark, str(tmp_path / "wh")), "tour-x").first()
    assert (failed["stage"], failed["status"]) == ("select", "failed")


@pytest.mark.parametrize("policy", ["checkpoint", "local_checkpoint", "persist"])
def test_every_lineage_policy_gives_the_same_rows_and_names_the_spark_job(spark, test_env, tmp_path, policy):
    env = test_env.model_copy(update={"lineage": policy})
    wh = Warehouse(spark, str(tmp_path / "wh"))
    ctx = StageContext(spark, make_campaign(), env, wh, "run-1", dt.datetime(2027, 1, 1, tzinfo=dt.UTC), "screen")
    df = spark.range(5).selectExpr("id * 2 AS x")
    with ctx.step("double"):
        out = ctx.cut(df, "doubled ids")
    assert sorted(r.x for r in out.collect()) == [0, 2, 4, 6, 8]
    assert spark.sparkContext.getLocalProperty("spark.job.description") == "screen: doubled ids"
    assert list(ctx.steps) == ["double"] and ctx.steps["double"] > 0
    assert (Path(ctx.checkpoint_dir).exists()) == (policy == "checkpoint")
    ctx.release()


def test_rows_for_delta_are_built_by_column_name(spark):
    row = {"run_id": "r", "campaign_id": "c", "table": "t", "expectation": "e", "success": True, "observed": "{}"}
    df = catalog_rows(spark, "dq_results", [row])
    assert df.columns == [
        "run_id", "campaign_id", "table", "expectation", "success", "observed", "severity", "result", "checked_at"
    ]  # fmt: skip
    assert df.first().asDict() == {**row, "severity": None, "result": None, "checked_at": None}
    with pytest.raises(SchemaError, match="unknown column\\(s\\) succes; missing column\\(s\\) success"):
        catalog_rows(spark, "dq_results", [{**{k: v for k, v in row.items() if k != "success"}, "succes": True}])


def test_a_pure_function_names_the_columns_its_input_lacks(spark):
    df = spark.range(1).selectExpr("'c' AS campaign_id")
    with pytest.raises(SchemaError, match="selection needs column\\(s\\) global_user_id, eligible"):
        require_columns(df, ["campaign_id", "global_user_id", "eligible"], "selection")


def test_every_stage_verb_and_run_take_a_decision_time_with_a_time_zone(capsys):
    from campaign_pipeline.cli import build_parser

    parser = build_parser()
    for verb in ["run", *(s.name for s in PIPELINE)]:
        args = parser.parse_args([verb, "--campaign", "c.yaml", "--now", "2027-02-28T10:00:00-05:00"])
        assert args.now == dt.datetime(2027, 2, 28, 15, tzinfo=dt.UTC), verb
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--campaign", "c.yaml", "--now", "2027-02-28 10:00"])
    assert "--now: expected an ISO-8601 time with a time zone" in capsys.readouterr().err


def test_notify_needs_a_campaign_or_due_and_due_takes_no_campaign(capsys):
    from campaign_pipeline.cli import main

    assert main(["notify"]) == 2
    assert "notify: give --campaign C, or --due for every campaign with a due wave" in capsys.readouterr().err
    assert main(["notify", "--due", "--wave", "w1"]) == 2
    assert "notify --due sends every due campaign: it takes no --campaign or --wave" in capsys.readouterr().err


def test_on_a_terminal_each_step_is_printed_as_it_ends_and_not_in_a_log(spark, test_env, tmp_path):
    import io

    from campaign_pipeline.runner import run_operation
    from campaign_pipeline.stage_context import StageReport

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def two_steps(ctx):
        with ctx.step("first"):
            pass
        with ctx.step("second"):
            pass
        return StageReport(counts={"rows": 1})

    env = test_env.with_roots(None, str(tmp_path / "wh"))
    for out, expected in ((Terminal(), ["first", "second"]), (io.StringIO(), [])):
        run_operation(spark, make_campaign("tour-x"), env, "tiny", two_steps, out=out)
        lines = out.getvalue().splitlines()
        assert [line.split()[1] for line in lines if line.startswith("  [tiny] ")] == expected
        assert lines[-1].startswith("    steps: first ")  # the stage's summary has them either way
