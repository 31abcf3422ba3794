"""spark-submit entry point: every registered stage, in order, for one campaign.

spark-submit jobs/pipeline.py --campaign conf/campaigns/<id>.yaml --env emr [--stages a,b] [--from-start] [--debug]
"""

import sys

from campaign_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
