"""The `campaign-pipeline` command: the production verbs of `cli.py` plus the developer tools
`synth` and `demo`. `jobs/` call `cli.main` directly, without them."""

from __future__ import annotations

import sys

from campaign_pipeline.cli import main as production_main
from campaign_pipeline.demo.command import DEMO
from campaign_pipeline.synth.command import SYNTH


def main(argv: list[str] | None = None) -> int:
    return production_main(argv, extra=(SYNTH, DEMO))


if __name__ == "__main__":
    sys.exit(main())
