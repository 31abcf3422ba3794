"""spark-submit entry point: maintain one campaign's tables (OPTIMIZE, VACUUM, archive when finished).

    spark-submit jobs/maintain.py --campaign conf/campaigns/<id>.yaml --env emr [--older-than 30d] [--debug]

All logic lives in the installed `campaign_pipeline` package; this file only forwards arguments.
"""

import sys

from campaign_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["maintain", *sys.argv[1:]]))
