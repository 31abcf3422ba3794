"""The `campaign-pipeline` command: the production verbs of `cli.py` plus the developer tools
`synth` and `demo`. `jobs/` call `cli.main` directly, without them."""

from __future__ import annotations

import sys

from campaign_pipeline.cli import LIGHT_VERBS, verb_of
from campaign_pipeline.cli import main as production_main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if verb_of(argv) in LIGHT_VERBS:  # validate, runs, config: no Spark, so not even the tools' imports
        return production_main(argv)
    from campaign_pipeline.demo.command import DEMO
    from campaign_pipeline.synth.command import SYNTH

    return production_main(argv, extra=(SYNTH, DEMO))


if __name__ == "__main__":
    sys.exit(main())
