"""How the experiment commands end: a user's mistake prints one line (``--debug``: the traceback),
Ctrl-C one line saying how to go on."""

from __future__ import annotations

import shlex
import sys
from typing import Callable, Optional, Sequence

from avalanche_sst.checkpoint import CheckpointReadError

# Mistakes a user fixes by changing the command or the files (bad preset fields, unknown names,
# settings that differ from a finished run, a missing data set, an unreadable checkpoint);
# anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, LookupError, FileNotFoundError, CheckpointReadError)


def run_command(main: Callable[[Sequence[str]], int], argv: Optional[Sequence[str]] = None,
                script: str = "experiments/sweep.py") -> int:
    """``main(argv)``, its user errors and Ctrl-C turned into one line on stderr and an exit status
    (2: a user error, 130: interrupted). With ``--debug`` in ``argv`` both raise as they are."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        again = shlex.join(["python", script, *argv])
        print(f"interrupted: every finished step is saved; resume with the same command: {again}",
              file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            raise
        message = " ".join(str(exc).split("\n")) or type(exc).__name__
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
