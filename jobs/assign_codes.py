"""spark-submit entry point: the assign_codes stage for one campaign.

    spark-submit jobs/assign_codes.py --campaign conf/campaigns/<id>.yaml --env emr [--warehouse s3://...] [--debug]

All logic lives in the installed `campaign_pipeline` package; this file only forwards arguments.
"""

import sys

from campaign_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["assign_codes", *sys.argv[1:]]))
