"""spark-submit entry point: the select stage for one campaign.

Named select_fans.py, not select.py: Python puts a script's folder first on sys.path, and a
jobs/select.py would shadow the standard library's `select` module for every job in the folder.

    spark-submit jobs/select_fans.py --campaign conf/campaigns/<id>.yaml --env emr [--warehouse s3://...] [--debug]

All logic lives in the installed `campaign_pipeline` package; this file only forwards arguments.
"""

import sys

from campaign_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
