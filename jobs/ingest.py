"""spark-submit entry point: the ingest stage for one campaign.

    spark-submit [--jars delta-spark,delta-storage,spark-avro jars] jobs/ingest.py \
        --campaign conf/campaigns/<id>.yaml --env emr [--landing s3://...] [--warehouse s3://...] [--debug]

All logic lives in the installed `campaign_pipeline` package; this file only forwards arguments.
"""

import sys

from campaign_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
