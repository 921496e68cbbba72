"""One logging set-up for every entry point (`mammosynth <stage>`, `python -m mammosynth.<stage>`).

Logs go to stderr, so stdout stays free for what scripts parse (the trainer's ``name=value`` metric
lines that Katib's StdOut collector reads). A no-op when logging is already configured.
"""

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr at ``level`` with the project's one-line format."""
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT)


def user_error(prog: str, exc: BaseException) -> int:
    """Report a user mistake as one line on stderr (``<prog>: error: <message>``) and return exit code 2.

    The traceback is logged only at ``LOG_LEVEL=DEBUG`` (for bug reports), never by default.

    Args:
        prog: the command as the user typed it, e.g. ``python -m pipelines run``.
        exc: the error; its message names the value and the fix.

    Returns:
        2, the exit code of a usage error.
    """
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    if os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
        logging.getLogger("mammosynth").debug("traceback", exc_info=exc)
    return 2
