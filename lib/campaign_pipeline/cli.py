"""`campaign-pipeline` command line: run, one verb per stage, and the operators' verbs.

Every user-facing failure prints one clear message (file, key or row, what was expected) and exits
non-zero (`EXIT_CODES`): 64 for a command line it cannot read, 2 for a bad config, 3 for unusable
input, 1 for a failed stage. The global flags `--debug` (stack traces), `--env` and `--json` go
before or after the verb. `validate`, `runs` and `config schema` never start Spark (nor import it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from campaign_pipeline import __version__
from campaign_pipeline.config import environment_path, load_campaign, load_environment
from campaign_pipeline.errors import ConfigError, InputError, PipelineError, UsageError


@dataclass(frozen=True)
class Verb:
    """A command outside the production verbs (synth, demo): its arguments and what it runs. The
    `campaign-pipeline` console adds them (`console.py`); `jobs/` call `main` without them, so a
    cluster job never loads the synthetic data generator or the demo's local services."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


USAGE = 64  # a command line argparse cannot read (sysexits' EX_USAGE), apart from a bad config (2)

EXIT_CODES = {
    0: "ok",
    1: "a stage (or the run) failed",
    2: "bad configuration (a campaign, environment or schedules file; `validate` found problems)",
    3: "unusable input (a missing landing folder, a file without a required column, an unknown fan)",
    4: "a table's schema does not match the catalog",
    5: "pyspark and Delta Lake versions that do not work together",
    6: "an EMR job that could not be submitted or ended other than successfully",
    7: "concurrent writers kept conflicting after the retries",
    8: "notify cannot send (a missing secret, an unreachable gateway or queue); the wave was not taken",
    USAGE: "the command line cannot be read (an unknown verb or flag, a missing or malformed value)",
}

# Verbs that never start Spark: the parser is built without the stage verbs (whose definitions
# import pyspark), so these answer in well under a second.
LIGHT_VERBS = ("validate", "runs", "config")
# Verbs with a --json answer (notify's is its run summary, a dry run's included).
JSON_VERBS = ("run", "notify", "submit", "schedule", "explain", "validate", "runs", "config", "stages")


def default_env() -> str:
    """`--env` when not given, for every verb: $CAMPAIGN_PIPELINE_ENV, else `local`."""
    return os.environ.get("CAMPAIGN_PIPELINE_ENV") or "local"


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with `USAGE`, apart from the 2 of a bad config."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def _global_flags() -> argparse.ArgumentParser:
    """The flags every verb takes, before or after it. Defaults are suppressed so a verb's parser
    never overwrites what was given before the verb; `_finish` fills them in."""
    flags = _Parser(add_help=False)
    flags.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print stack traces")
    flags.add_argument(
        "--env", default=argparse.SUPPRESS,
        help="environment name under conf/environments, or a YAML path (default: $CAMPAIGN_PIPELINE_ENV, else local)",
    )  # fmt: skip
    flags.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS,
        help=f"the answer as JSON on stdout, progress on stderr ({', '.join(JSON_VERBS)})",
    )  # fmt: skip
    return flags


def _finish(args: argparse.Namespace) -> argparse.Namespace:
    args.debug = getattr(args, "debug", False)
    args.json = getattr(args, "json", False)
    args.env = getattr(args, "env", None) or default_env()
    return args


def _common(p: argparse.ArgumentParser, campaign_required: bool = True) -> None:
    p.add_argument("--campaign", required=campaign_required, help="campaign YAML (conf/campaigns/<id>.yaml)")
    p.add_argument("--landing", help="landing root (overrides the environment's landing_root)")
    p.add_argument("--warehouse", help="warehouse root (overrides the environment's warehouse_root)")


def _decision_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time with a time zone, e.g. 2027-02-28T15:00:00Z; got {text!r}"
        )
    return value.astimezone(dt.UTC)


def _now_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--now",
        type=_decision_time,
        help="decision time (default: now): waves due at or before it take no new fans; for replays and backfills",
    )


def _verb(sub, flags: argparse.ArgumentParser, name: str, **kw) -> argparse.ArgumentParser:
    """A verb's parser: it takes the global flags after the verb too."""
    return sub.add_parser(name, parents=[flags], **kw)


def _light_verbs(sub, flags: argparse.ArgumentParser) -> None:
    validate = _verb(sub, flags,
        "validate", help="check a campaign and environment config and the landing folder, without Spark (exit 2 "
        "when anything is wrong, one line per problem)",
    )  # fmt: skip
    validate.add_argument("--campaign", required=True, help="campaign YAML (conf/campaigns/<id>.yaml)")
    validate.add_argument("--landing", help="landing root (default: the environment's landing_root)")

    runs = _verb(sub, flags, "runs", help="the campaign's recent stage runs from pipeline_runs, without Spark")
    runs.add_argument("--campaign", required=True, help="campaign YAML, or the campaign id")
    runs.add_argument("--last", type=int, default=10, help="the last N runs (default 10)")
    runs.add_argument("--warehouse", help="warehouse root (overrides the environment's warehouse_root)")

    config = _verb(sub, flags, "config", help="configuration tools: `config schema` writes the JSON Schemas")
    config.add_argument("action", choices=["schema"], help="schema: JSON Schema of the campaign, environment "
                        "and schedules files, for editors and CI")  # fmt: skip
    config.add_argument("--out", help="folder for the *.schema.json files (default: conf/schemas of the project)")


def build_parser(extra: Sequence[Verb] = (), stages: bool = True) -> argparse.ArgumentParser:
    """The whole command line; `stages=False` leaves out every verb that runs Spark (see LIGHT_VERBS)."""
    flags = _global_flags()
    parser = _Parser(
        prog="campaign-pipeline", description=__doc__.splitlines()[0], parents=[flags],
        epilog="exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"campaign-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _light_verbs(sub, flags)
    if not stages:
        return parser
    from campaign_pipeline.pipeline import PIPELINE

    run = _verb(sub, flags, "run", help="run every stage of the pipeline (or --stages a,b) for one campaign")
    _common(run)
    run.add_argument("--stages", help="comma-separated stage names, in any order (run in pipeline order)")
    run.add_argument("--from-start", action="store_true", help="do not resume after a failed run")
    _now_option(run)

    for st in PIPELINE:
        one = _verb(sub, flags, st.name, help=st.description)
        _common(one, campaign_required=st.name != "notify")
        _now_option(one)
        if st.name == "notify":
            one.add_argument("--wave", help="send only this wave")
            one.add_argument("--dry-run", action="store_true", help="say what would be sent; send and write nothing")
            one.add_argument(
                "--retry-failed", action="store_true",
                help="re-send failed messages, and take a wave that used up notify.wave_attempts",
            )  # fmt: skip
            one.add_argument(
                "--due", action="store_true",
                help="every campaign of the warehouse with a due wave (configs from --campaigns-dir); for schedulers",
            )  # fmt: skip
            one.add_argument("--campaigns-dir", default="conf/campaigns", help="campaign YAMLs for --due")
        if st.name == "report":
            one.add_argument(
                "--out", help="folder (or s3://bucket/prefix) for report.html and data_docs/ "
                "(default: <warehouse>/_reports/<campaign>/)",
            )  # fmt: skip

    maintain = _verb(
        sub, flags, "maintain", help="archive a finished campaign (copy, verify, delete), else compact it; then VACUUM"
    )
    _common(maintain)
    _now_option(maintain)
    maintain.add_argument(
        "--older-than", default="30d", help="archive only when the last wave ended longer ago than this (30d, 12h)"
    )
    maintain.add_argument("--retain-hours", type=int, default=168, help="VACUUM retention, at least 168 (7 days)")
    maintain.add_argument("--no-vacuum", action="store_true", help="skip VACUUM")

    schedule = _verb(
        sub, flags, "schedule", help="the schedules of conf/schedules.yaml: show them, or apply them on AWS"
    )
    schedule.add_argument("action", choices=["show", "apply"], help="show: the table and crontab lines; apply: to "
                          "EventBridge Scheduler (EMR Serverless job runs)")  # fmt: skip
    schedule.add_argument("--schedules", default=None, help="the schedules file (default: conf/schedules.yaml)")
    schedule.add_argument(
        "--campaigns-dir", default=None, help="campaign configs for per-campaign schedules (default: conf/campaigns)"
    )

    submit = _verb(
        sub,
        flags,
        "submit",
        help="run a job on Amazon EMR: upload dist/ and the configs, add a step or start a Serverless job run",
    )
    submit.add_argument("--campaign", required=True, help="path to the campaign YAML (validated here, uploaded)")
    submit.add_argument("--command", dest="job", default="run", choices=["run", "notify", "report", "maintain"],
                        help="what the job runs (default run: the whole pipeline)")  # fmt: skip
    submit.add_argument("--stages", help="comma-separated stage names for run")
    submit.add_argument("--from-start", action="store_true", help="run: do not resume after a failed run")
    submit.add_argument("--target", choices=["steps", "serverless"],
                        help="EMR on EC2 steps or EMR Serverless (default: steps when emr.cluster_id or "
                        "emr.cluster_name is set, else serverless)")  # fmt: skip
    submit.add_argument("--wait", action="store_true", help="follow the job to its end; non-zero exit if it fails")
    submit.add_argument("--poll-seconds", type=float, default=30, help="--wait: seconds between state checks")
    submit.add_argument("--timeout-minutes", type=float, default=24 * 60, help="--wait: give up following after this")
    submit.add_argument("--dist", default="dist", help="what `make dist` built (default ./dist)")

    _verb(sub, flags, "stages", help="print the pipeline: each stage with the tables it reads and writes")

    explain = _verb(sub, flags, "explain", help="one fan's story: tags, score, band, rank, verdict, code, messages")
    _common(explain)
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--fan", help="the fan's global_user_id")
    who.add_argument("--fans-file", help="a file of fan ids, one per line: one JSON line per fan (support exports)")
    explain.add_argument("--spark", action="store_true", help="read through Spark instead of delta-rs (no JVM)")
    explain.add_argument(
        "--show-code", action="store_true",
        help="print access codes in full (an operator re-sending a code by hand); masked by default",
    )  # fmt: skip

    for verb in extra:
        verb.arguments(_verb(sub, flags, verb.name, help=verb.help))
    return parser


def spark_session(env, app: str):
    from campaign_pipeline.quality.expectations import import_in_background
    from campaign_pipeline.session import build_session

    import_in_background()  # the stages' checks need it; it imports while the JVM starts
    spark = build_session(env, app_name=app)
    spark.sparkContext.setLogLevel(os.environ.get("CAMPAIGN_PIPELINE_SPARK_LOG", "ERROR"))
    return spark


def local_root(root: str) -> Path | None:
    """A local root (a path or a `file:` URI) as a path; None for a remote one (s3://…)."""
    if root.startswith("file:"):
        return Path(root.removeprefix("file:").removeprefix("//"))
    return None if "://" in root else Path(root).expanduser().resolve()


def check_local_landing(campaign_id: str, env, stages: list[str] | None, from_start: bool) -> None:
    """Fail before Spark starts (seconds, not a JVM start) when ingest will run on a local landing
    folder that does not exist. Ingest will run when it is asked for, or on a full run of a fresh
    local warehouse (nothing to resume)."""
    from campaign_pipeline.ingest.stage import landing_not_found

    landing, warehouse = local_root(env.landing_root), local_root(env.warehouse_root)
    if landing is None:
        return
    fresh = warehouse is not None and not (warehouse / "pipeline_runs" / "_delta_log").is_dir()
    if not ("ingest" in (stages or []) or (not stages and (from_start or fresh))):
        return
    if not ((landing / campaign_id).is_dir() or landing.is_dir()):
        raise landing_not_found(str(landing), campaign_id)


def _stage_options(args) -> dict:
    return {k: getattr(args, k) for k in ("wave", "dry_run", "retry_failed", "out") if getattr(args, k, None)}


def _progress(args) -> TextIO:
    """Where progress lines go: stdout, or stderr when stdout carries the --json answer."""
    return sys.stderr if args.json else sys.stdout


def _emit(value) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def run_summary(report, campaign_id: str) -> dict:
    """`run --json` (and a stage verb's): the run id and each stage's outcome, counts and summary."""
    return {
        "run_id": report.run_id,
        "campaign_id": campaign_id,
        "resumed_from": report.resumed_from,
        "status": "succeeded",
        "stages": [
            {"stage": name, "status": "succeeded", "seconds": round(seconds, 3), "rows": result.rows(),
             "counts": dict(result.counts), "summary": list(result.summary)}
            for name, result, seconds in report.rows
        ],
    }  # fmt: skip


def _run(args, stages: list[str] | None) -> int:
    from campaign_pipeline.runner import run_pipeline

    campaign = load_campaign(args.campaign)
    env = load_environment(args.env).with_roots(args.landing, args.warehouse)
    check_local_landing(campaign.campaign_id, env, stages, getattr(args, "from_start", False))
    spark = spark_session(env, f"campaign-pipeline {campaign.campaign_id}")
    report = run_pipeline(
        spark, campaign, env, stages=stages, from_start=getattr(args, "from_start", False), now=args.now,
        options=_stage_options(args), out=_progress(args),
    )  # fmt: skip
    if args.json:
        summary = run_summary(report, campaign.campaign_id)
        if getattr(args, "dry_run", False):
            summary["dry_run"] = True
        _emit(summary)
    return 0


def _notify(args) -> int:
    """`notify --campaign C` is the stage; `notify --due` runs it for every campaign with a due wave."""
    if not args.due:
        if not args.campaign:
            raise ConfigError("notify: give --campaign C, or --due for every campaign with a due wave")
        return _run(args, ["notify"])
    if args.campaign or args.wave:
        raise ConfigError("notify --due sends every due campaign: it takes no --campaign or --wave")
    from campaign_pipeline.notify.stage import due_campaigns
    from campaign_pipeline.runner import run_pipeline
    from campaign_pipeline.warehouse import Warehouse

    env = load_environment(args.env).with_roots(args.landing, args.warehouse)
    now = args.now or dt.datetime.now(dt.UTC)
    spark = spark_session(env, "campaign-pipeline notify --due")
    due = due_campaigns(Warehouse(spark, env.warehouse_root), now, env.notify.wave_attempts)
    if not due:
        if args.json:
            _emit({"now": now.isoformat(), "campaigns": []})
        else:
            print(f"notify --due: no campaign has a wave to send at {now:%Y-%m-%d %H:%M %Z}")
        return 0
    results: list[tuple[str, str]] = []  # (campaign, one line), printed together at the end
    for cid in due:
        path = Path(args.campaigns_dir) / f"{cid}.yaml"
        if not path.is_file():
            results.append((cid, f"FAILED: a due wave but no config at {path}"))
            continue
        try:
            run = run_pipeline(
                spark,
                load_campaign(path),
                env,
                stages=["notify"],
                now=now,
                options=_stage_options(args),
                out=_progress(args),
            )
        except Exception as exc:  # noqa: BLE001 - one campaign's failure, whatever it is, never stops the others
            if args.debug:
                import traceback

                traceback.print_exc()
            results.append((cid, f"FAILED: {_one_line(exc)}"))
            continue
        report = run.rows[0][1]
        c = report.counts
        results.append(
            (cid, f"ok: {c.get('waves_sent', 0)} wave(s) taken · SMS {c.get('sms:sent', 0):,} sent, "
                  f"{c.get('sms:failed', 0):,} failed · email {c.get('email:sent', 0):,} sent, "
                  f"{c.get('email:failed', 0):,} failed")
        )  # fmt: skip
    failed = [cid for cid, line in results if line.startswith("FAILED")]
    if args.json:
        _emit({"now": now.isoformat(), "campaigns": [
            {"campaign_id": cid, "status": "failed" if line.startswith("FAILED") else "succeeded", "result": line}
            for cid, line in results
        ]})  # fmt: skip
        return 1 if failed else 0
    print(f"\nnotify --due at {now:%Y-%m-%d %H:%M %Z}: {len(due)} campaign(s), {len(failed)} failed")
    for cid, line in results:
        print(f"  {cid}: {line}")
    if failed:
        print(
            f"error: notify --due: {len(failed)} of {len(due)} campaigns failed: {', '.join(failed)}", file=sys.stderr
        )
    return 1 if failed else 0


def _one_line(exc: BaseException) -> str:
    """An error as the one line a user reads: our errors' own message, else the type and first line."""
    from campaign_pipeline.privacy import scrub

    if isinstance(exc, PipelineError):  # our own messages carry no personal data
        return str(exc)
    java = getattr(exc, "java_exception", None)  # py4j: the JVM's exception says what went wrong
    text = str(java.toString()) if java is not None else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {scrub(first, limit=500)}"


def _schedule(args) -> int:
    from campaign_pipeline.config import default_conf_dir
    from campaign_pipeline.ops.deploy import schedules as sch

    conf = default_conf_dir()
    declared = sch.load_schedules(args.schedules or conf / "schedules.yaml", args.campaigns_dir or conf / "campaigns")
    if args.action == "show":  # needs no environment file: --env only names it in the crontab lines
        if args.json:
            _emit(sch.show(declared, args.env, dt.datetime.now(dt.UTC)))
            return 0
        for s in declared:
            print(f"{s.name:<32} cron({s.cron})  {' '.join(s.command)}  — {s.description}")
        print("\nas crontab lines (UTC):")
        print("\n".join(sch.crontab(declared, args.env)))
        return 0
    if args.json:
        raise UsageError("--json: schedule apply has no JSON answer (schedule show has)")
    env = load_environment(args.env)
    changed = sch.apply(env, declared, f"conf/environments/{env.name}.yaml")
    for what, names in changed.items():
        if names:
            print(f"{what}: {', '.join(names)}")
    return 0


def _submit(args) -> int:
    import boto3

    from campaign_pipeline.ops.deploy import submit as submit_ops
    from campaign_pipeline.pipeline import STAGES

    env_path = environment_path(args.env)
    env = load_environment(args.env)
    if env.emr is None:
        raise ConfigError(
            f"{env_path}: emr: section missing; submit needs emr.artifacts_uri and a cluster or application "
            "(pass --env emr, or set CAMPAIGN_PIPELINE_ENV=emr)"
        )
    campaign = load_campaign(args.campaign)  # a bad config fails here, not 10 minutes into a cluster job
    arguments: list[str] = []
    if args.stages:
        known = list(STAGES)
        stages = [x.strip() for x in args.stages.split(",") if x.strip()]
        unknown = [x for x in stages if x not in known]
        if unknown:
            raise ConfigError(f"--stages: unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(known)}")
        arguments += ["--stages", ",".join(stages)]
    if args.from_start:
        arguments.append("--from-start")
    target = args.target or ("steps" if env.emr.cluster_id or env.emr.cluster_name else "serverless")
    submit_ops.require(env.emr, target)
    manifest = submit_ops.load_manifest(args.dist)
    out = _progress(args)
    clients = {name: boto3.client(name, region_name=env.aws_region) for name in ("s3", "emr", "emr-serverless")}
    submit_ops.upload_artifacts(clients["s3"], args.dist, manifest, env.emr.artifacts_uri, out)
    campaign_uri = submit_ops.upload_config(
        clients["s3"], args.campaign, env.emr.artifacts_uri, "campaigns", campaign.campaign_id
    )
    env_uri = submit_ops.upload_config(clients["s3"], env_path, env.emr.artifacts_uri, "environments", env.name)
    job = f"jobs/{'pipeline' if args.job == 'run' else args.job}.py"
    name = f"campaign-pipeline {args.job} {campaign.campaign_id}"
    arguments = ["--campaign", campaign_uri, "--env", env_uri, *arguments]
    submission = submit_ops.submit(env, job, name, arguments, target, clients, out)
    where = "cluster" if target == "steps" else "application"
    print(
        f"[submit] {args.job} {campaign.campaign_id}: {target} {submission.id} on {where} {submission.where}", file=out
    )
    answer = {
        "command": args.job, "campaign_id": campaign.campaign_id, "target": target,
        ("step_id" if target == "steps" else "job_run_id"): submission.id,
        ("cluster_id" if target == "steps" else "application_id"): submission.where,
    }  # fmt: skip
    if args.wait:
        answer["state"] = submit_ops.follow(submission, clients, out, args.poll_seconds, args.timeout_minutes * 60)
    if args.json:
        _emit(answer)
    return 0


def _maintain(args) -> int:
    from campaign_pipeline.ops.maintain import maintain, parse_age
    from campaign_pipeline.runner import run_operation

    parse_age(args.older_than)  # a bad value fails before Spark starts
    if args.retain_hours < 168:
        raise ConfigError(f"--retain-hours {args.retain_hours}: at least 168 (7 days, Delta's retention safety check)")
    campaign = load_campaign(args.campaign)
    env = load_environment(args.env).with_roots(args.landing, args.warehouse)
    spark = spark_session(env, f"campaign-pipeline maintain {campaign.campaign_id}")
    options = {"older_than": args.older_than, "retain_hours": args.retain_hours, "no_vacuum": args.no_vacuum}
    run_operation(spark, campaign, env, "maintain", maintain, now=args.now, options=options)
    return 0


def _explain(args) -> int:
    from campaign_pipeline.ops.explain.readers import DeltaTables, SparkTables
    from campaign_pipeline.ops.explain.story import fan_stories, story_json, story_lines

    campaign = load_campaign(args.campaign)
    env = load_environment(args.env).with_roots(args.landing, args.warehouse)
    if args.fans_file:
        try:
            with open(args.fans_file, encoding="utf-8") as f:
                fans = [line.strip() for line in f if line.strip()]
        except OSError as exc:
            raise InputError(f"--fans-file {args.fans_file}: cannot read it ({exc.strerror})") from None
    else:
        fans = [args.fan]
    if args.spark:
        from campaign_pipeline.warehouse import Warehouse

        spark = spark_session(env, f"campaign-pipeline explain {campaign.campaign_id}")
        tables = SparkTables(Warehouse(spark, env.warehouse_root))
    else:
        tables = DeltaTables(_absolute(env.warehouse_root))
    stories = fan_stories(tables, campaign, fans, show_code=args.show_code)
    for story in stories:
        if args.fans_file or args.json:
            print(story_json(story))
        else:
            print("\n".join(story_lines(story)))
    return 0


def _absolute(root: str) -> str:
    return root if "://" in root else str(Path(root).resolve())


def _validate(args) -> int:
    from campaign_pipeline.ops.validate import validate

    result = validate(args.campaign, args.env, landing=args.landing)
    if args.json:
        _emit(result.as_json())
    else:
        for line in result.notes:
            print(f"· {line}")
        for problem in result.problems:
            print(problem.line())
        print(result.verdict())
    return 2 if result.problems else 0


def _runs(args) -> int:
    from campaign_pipeline.ops.runs import recent_runs, run_lines

    if args.last < 1:
        raise UsageError(f"--last {args.last}: give 1 or more")
    campaign_id, campaign_arg = args.campaign, args.campaign
    if campaign_arg.endswith((".yaml", ".yml")) or os.sep in campaign_arg:
        campaign_id = load_campaign(campaign_arg).campaign_id
    else:
        campaign_arg = f"conf/campaigns/{campaign_arg}.yaml"
    env = load_environment(args.env).with_roots(warehouse=args.warehouse)
    root = _absolute(env.warehouse_root)
    if "://" not in root and not Path(root).is_dir():  # a typo is not "no runs recorded"
        raise InputError(f"warehouse {root}: no such folder (--warehouse, or warehouse_root in the environment file)")
    try:
        runs = recent_runs(root, campaign_id, args.last, campaign_arg, args.env)
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - delta-rs's own errors say little about where
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise InputError(f"{root}/pipeline_runs: cannot read it ({type(exc).__name__}: {first})") from exc
    if args.json:
        _emit(runs)
    else:
        print("\n".join(run_lines(runs, campaign_id, env.warehouse_root)))
    return 0


def _config(args) -> int:
    from campaign_pipeline.ops.validate import write_schemas

    written = write_schemas(Path(args.out) if args.out else None)
    if args.json:
        _emit({"written": [str(p) for p in written]})
    else:
        for path in written:
            print(f"wrote {path}")
    return 0


def _stages(args) -> int:
    from campaign_pipeline.pipeline import PIPELINE, diagram

    if args.json:
        _emit([{"stage": s.name, "reads": list(s.reads), "writes": list(s.writes), "needs": list(s.needs),
                "job": s.job_file, "description": s.description} for s in PIPELINE])  # fmt: skip
    else:
        print(diagram())
    return 0


def verb_of(argv: list[str]) -> str | None:
    """The verb of a command line (the global flags before it skipped), or None."""
    known, rest = _global_flags().parse_known_args(argv)
    return next((a for a in rest if not a.startswith("-")), None)


def main(argv: list[str] | None = None, extra: Sequence[Verb] = ()) -> int:
    """The production verbs (what `jobs/` call), plus `extra` verbs (the console adds synth and demo)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(extra, stages=verb_of(argv) not in LIGHT_VERBS)
    args = _finish(parser.parse_args(argv))
    tools = {v.name: v for v in extra}
    handlers = {
        "run": lambda a: _run(a, [s.strip() for s in a.stages.split(",") if s.strip()] if a.stages else None),
        "explain": _explain, "notify": _notify, "schedule": _schedule, "maintain": _maintain, "submit": _submit,
        "stages": _stages, "validate": _validate, "runs": _runs, "config": _config,
    }  # fmt: skip
    try:
        if args.json and args.command not in JSON_VERBS:
            raise UsageError(f"--json: {args.command} has no JSON answer (verbs with one: {', '.join(JSON_VERBS)})")
        if args.command in tools:
            return tools[args.command].run(args)
        if args.command in handlers:
            return handlers[args.command](args)
        return _run(args, [args.command])
    except PipelineError as exc:
        if args.debug:
            raise
        _fail(args, str(exc), exc.exit_code)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one readable line, then exit 1
        if args.debug:
            raise
        _fail(args, f"{_one_line(exc)} (run with --debug for the stack trace)", 1)
        return 1


def _fail(args, message: str, code: int) -> None:
    """The one error line on stderr; with --json, also the error as JSON on stdout."""
    print(f"error: {message}", file=sys.stderr)
    if args.json:
        _emit({"error": message, "exit_code": code})


if __name__ == "__main__":
    sys.exit(main())
