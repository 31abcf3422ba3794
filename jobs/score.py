"""spark-submit entry point: the score stage for one campaign.

    spark-submit jobs/score.py --campaign conf/campaigns/<id>.yaml --env emr [--warehouse s3://...] [--debug]

All logic lives in the installed `campaign_pipeline` package; this file only forwards arguments.
"""

import sys

from campaign_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
