"""experiments/sweep.py's command line on generated data, for tests that run it in a subprocess.

``python tests/sweep_cli_helper.py <sweep arguments>``; with ``SWEEP_TEST_PAUSE_AT_STEP=k`` the
run prints ``PAUSED`` after training step k (0-based, before its checkpoint) and sleeps there,
so a test can send SIGINT at a known point. Not a test module (no ``test_`` prefix).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from avalanche.core import SupervisedPlugin

from conftest import make_images  # this file's folder is sys.path[0]

PAUSE_ENV = "SWEEP_TEST_PAUSE_AT_STEP"


def split_data():
    """10 classes of 1x8x8 images: 12 train and 6 test images per class."""
    return make_images(12, seed=0, classes=10), make_images(6, seed=1, classes=10)


class PauseInStep(SupervisedPlugin):
    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def after_training_exp(self, strategy, **kwargs):
        if strategy.experience.current_experience == self.step:
            print("PAUSED", flush=True)
            for _ in range(1200):  # at most 2 minutes, should the signal never come
                time.sleep(0.1)
            sys.exit(3)


def main() -> int:
    # A shell without job control starts background commands with SIGINT ignored, and Python keeps an
    # inherited SIG_IGN: the tests' SIGINT would then never arrive when the suite itself runs in the
    # background (`pytest &` in a script). Ctrl-C as a user's terminal delivers it, always.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from avalanche_sst.experiments import sweep
    from avalanche_sst.experiments.cli import run_command

    data = split_data()
    sweep.load_dataset = lambda name, root: data
    pause = os.environ.get(PAUSE_ENV)
    if pause is not None:
        original = sweep.run_sweep

        def run_sweep(*args, **kwargs):
            return original(*args, extra_plugins=lambda m, s: [PauseInStep(int(pause))], **kwargs)

        sweep.run_sweep = run_sweep
    return run_command(sweep.main, sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
