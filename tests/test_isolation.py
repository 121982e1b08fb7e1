"""The ``isolated`` marker (tests/conftest.py): a native crash fails one test, the suite goes on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SUITE = '''
import faulthandler
import os

import pytest


@pytest.mark.isolated
def test_crashes_natively():
    faulthandler._sigsegv()  # a segfault in C, as a broken kernel gives


@pytest.mark.isolated
def test_isolated_fails_in_a_child():
    assert os.environ.get("AVALANCHE_SST_ISOLATED_CHILD") == "1"
    assert 1 + 1 == 3


@pytest.mark.isolated
def test_isolated_skips():
    pytest.skip("nothing to check here")


def test_after_the_crash_runs_in_process():
    assert os.environ.get("AVALANCHE_SST_ISOLATED_CHILD") is None
'''


def test_native_crash_in_an_isolated_test_is_one_failure_naming_the_signal(tmp_path):
    # A suite of its own, with this suite's conftest (the marker lives there).
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_planted.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "AVALANCHE_SST_ISOLATED_CHILD"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # tests failed, not a dead process (-11) or an internal error
    assert "2 failed, 1 passed, 1 skipped" in out, out
    assert "FAILED test_planted.py::test_crashes_natively" in out
    assert "isolated test died with SIGSEGV" in out
    # faulthandler's dump from the child, pointing at the line that crashed
    assert "Fatal Python error: Segmentation fault" in out
    assert "in test_crashes_natively" in out
    # an ordinary assertion in the child comes back with pytest's explanation
    assert "FAILED test_planted.py::test_isolated_fails_in_a_child" in out and "assert (1 + 1) == 3" in out
    assert "nothing to check here" in out
