"""One driver of the concurrent-writers test: its own JVM and SparkSession (as each spark-submit on
EMR is), appending rows to the warehouse's `pipeline_runs` on S3, one Delta commit per row.

    python writer.py '<json: env, jars, writer, commits>'
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from campaign_pipeline.config import Environment
from campaign_pipeline.frames import catalog_rows
from campaign_pipeline.session import build_session, local_jars
from campaign_pipeline.warehouse import Warehouse


def main() -> None:
    task = json.loads(sys.argv[1])
    env = Environment.model_validate(task["env"])
    spark = build_session(
        env, app_name=f"writer {task['writer']}", extra_conf={"spark.jars": ",".join(local_jars() + task["jars"])}
    )
    spark.sparkContext.setLogLevel("ERROR")
    wh = Warehouse(spark, env.warehouse_root)
    start = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    for i in range(task["commits"]):
        row = {"run_id": f"{task['writer']}-{i:03d}", "campaign_id": "s3-tour", "stage": "notify",
               "started_at": start + dt.timedelta(minutes=i), "status": "succeeded"}  # fmt: skip
        wh.append("pipeline_runs", catalog_rows(spark, "pipeline_runs", [row]))
        print(f"{task['writer']} committed {i}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
