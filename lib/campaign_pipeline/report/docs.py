"""great-expectations Data Docs, built from the results the stages recorded in `dq_results`.

Each stage validated its table when it wrote it; the report does not validate again. It loads the
latest recorded result of every table into a throw-away file-backed great-expectations context,
builds the Data Docs site there and copies it next to the report. The results hold counts only
(see `quality.expectations.RESULT_FORMAT`), so the site holds no personal data either.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path


def build_data_docs(quality: list[dict], campaign_id: str, out_dir: Path) -> dict | None:
    """Write the Data Docs site to `out_dir`; returns links relative to `out_dir.parent`
    (`index` and one validation page per table), or None when no result was recorded."""
    by_table: dict[str, list[dict]] = {}
    for q in quality:
        if q.get("result"):
            by_table.setdefault(q["table"], []).append(q)
    if not by_table:
        return None
    from campaign_pipeline.quality.expectations import great_expectations

    gx = great_expectations()
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    schema = ExpectationSuiteValidationResultSchema()
    with tempfile.TemporaryDirectory(prefix="gx-docs-") as tmp:
        context = gx.get_context(mode="file", project_root_dir=tmp)
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        for table, items in sorted(by_table.items()):
            results = [json.loads(q["result"]) for q in items]
            passed = sum(bool(r.get("success")) for r in results)
            checked_at = max((q["checked_at"] for q in items if q["checked_at"]), default=None) or dt.datetime.now(
                dt.UTC
            )
            run_id = items[0]["run_id"]
            suite_result = schema.load(
                {
                    "success": passed == len(results),
                    "results": results,
                    "suite_name": table,
                    "statistics": {
                        "evaluated_expectations": len(results),
                        "successful_expectations": passed,
                        "unsuccessful_expectations": len(results) - passed,
                        "success_percent": 100.0 * passed / len(results),
                    },
                    "meta": {
                        "run_id": {"run_name": run_id, "run_time": checked_at.isoformat()},
                        "campaign_id": campaign_id,
                    },
                }
            )
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=table),
                run_id=RunIdentifier(run_name=run_id, run_time=checked_at),
                batch_identifier=f"{campaign_id}-{table}",
            )
            context.validation_results_store.set(key, suite_result)
        context.build_data_docs()
        site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(site, out_dir)
    pages = {}
    for table in by_table:
        found = sorted((out_dir / "validations" / table).rglob("*.html"))
        if found:
            pages[table] = found[-1].relative_to(out_dir.parent).as_posix()
    return {"index": (out_dir / "index.html").relative_to(out_dir.parent).as_posix(), "pages": pages}
