"""Compare methods on the same-class accumulating benchmark.

    python experiments/sweep.py --preset quick
    python experiments/sweep.py --preset full --methods finetune lwf sst

See avalanche_sst.experiments.sweep for what is written where. A mistake in the
command prints one line (add --debug for the traceback); Ctrl-C stops it, and
the same command resumes it.
"""

from avalanche_sst.experiments.cli import run_command
from avalanche_sst.experiments.sweep import main

if __name__ == "__main__":
    raise SystemExit(run_command(main))
