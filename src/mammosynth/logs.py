"""One logging set-up for every entry point (`mammosynth <stage>`, `python -m mammosynth.<stage>`).

Logs go to stderr, so stdout stays free for what scripts parse (the trainer's ``name=value`` metric
lines that Katib's StdOut collector reads). A no-op when logging is already configured.
"""

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT)
