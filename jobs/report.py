"""spark-submit entry point: the report stage for one campaign (reconciliation, stats, HTML report).

    spark-submit jobs/report.py --campaign conf/campaigns/<id>.yaml --env emr [--out s3://bucket/reports/<id>] [--debug]

All logic lives in the installed `campaign_pipeline` package; this file only forwards arguments.
"""

import sys

from campaign_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
