"""`python -m campaign_pipeline`: the campaign-pipeline command."""

import sys

from campaign_pipeline.console import main

sys.exit(main())
