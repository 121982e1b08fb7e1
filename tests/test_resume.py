"""A sweep interrupted after step 3 and rerun gives what an uninterrupted run gives: every column
of runs.csv, the scores table, Avalanche's CSV logs and the TensorBoard scalars (by tag and step),
in-process (KeyboardInterrupt inside step 4) and through the command line (SIGINT to a subprocess)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from avalanche.core import SupervisedPlugin

from sweep_cli_helper import PAUSE_ENV, split_data

from avalanche_sst.experiments.presets import get_preset
from avalanche_sst.experiments.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED_STEP = 3  # 0-based experience index: the fourth step is cut short
# The README's split_quick sweep (class-incremental, 5 steps of 2 classes), shrunk: a tiny
# model, one epoch per step, all of the (generated) data. Forgetting is read from the
# evaluator's memory of each step's first accuracy.
SETTINGS = ["model=resnet8-w4", "batch_size=16", "eval_batch_size=64", "epochs_scratch=1", "epochs_finetune=1",
            "validation_fraction=0", "train_fraction=1", "test_fraction=1", "num_threads=1"]
CLI = ["--preset", "split_quick", "--methods", "finetune", "--workers", "1", "--set", *SETTINGS]


def split_preset():
    """What the command line ``CLI`` runs."""
    return get_preset("split_quick").replace(methods=("finetune",)).with_settings(SETTINGS)


class InterruptInStep(SupervisedPlugin):
    """Ctrl-C at the end of one step's training: its epoch scalars and CSV rows are written,
    its checkpoint is not."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def after_training_exp(self, strategy, **kwargs):
        if strategy.experience.current_experience == self.step:
            raise KeyboardInterrupt


def read_rows(path: Path, drop=()) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def tb_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def assert_same_outputs(out: Path, fresh: Path, method: str = "finetune") -> None:
    """Everything but wall-clock seconds is identical; no TensorBoard (tag, step) appears twice."""
    assert read_rows(out / "runs.csv", drop=("seconds",)) == read_rows(fresh / "runs.csv", drop=("seconds",))
    assert (out / "table.csv").read_text() == (fresh / "table.csv").read_text()
    run, ref = out / method / "seed0", fresh / method / "seed0"
    assert (run / "steps.csv").read_text() == (ref / "steps.csv").read_text()
    for name in ("eval_results.csv", "training_results.csv"):
        assert (run / "csv" / name).read_text() == (ref / "csv" / name).read_text(), name
    got, want = tb_scalars(run / "tb"), tb_scalars(ref / "tb")
    for tag, events in got.items():
        steps = Counter(step for step, _ in events)
        assert max(steps.values()) == 1, (tag, [s for s, n in steps.items() if n > 1])
    assert sorted(got) == sorted(want)
    for tag in want:
        assert got[tag] == want[tag], tag


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    data = split_data()
    results = run_sweep(split_preset(), out, data=data, log=lambda s: None)
    return dict(out=out, data=data, results=results)


def test_uninterrupted_run_forgets(uninterrupted):
    """The comparison below is informative: forgetting is large after the last step."""
    rows = read_rows(uninterrupted["out"] / "runs.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert float(rows[-1]["forgetting"]) > 0.05 and float(rows[3]["forgetting"]) > 0.05


def test_in_process_interruption_resumes_every_score_and_log(tmp_path, uninterrupted):
    out = tmp_path / "resumed"
    # Twice: the second attempt resumes and is cut short in the same step, so its own
    # event file is newer than the checkpoint and must go too.
    for attempt in range(2):
        with pytest.raises(KeyboardInterrupt):
            run_sweep(split_preset(), out, data=uninterrupted["data"], log=lambda s: None,
                      extra_plugins=lambda m, s: [InterruptInStep(INTERRUPTED_STEP)])
        state = torch.load(out / "finetune" / "seed0" / "checkpoint.pt", weights_only=True)
        assert state["step"] == INTERRUPTED_STEP
        assert len(list((out / "finetune" / "seed0" / "tb").iterdir())) == attempt + 1
    logs: list[str] = []
    run_sweep(split_preset(), out, data=uninterrupted["data"], log=logs.append)
    assert f"[finetune seed 0] resuming after step {INTERRUPTED_STEP}" in logs
    assert_same_outputs(out, uninterrupted["out"])


def sweep_command(out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "tests" / "sweep_cli_helper.py"), "--out", str(out), *CLI]


def test_sigint_to_the_command_then_the_same_command_resumes(tmp_path, uninterrupted):
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", PAUSE_ENV: str(INTERRUPTED_STEP)}
    proc = subprocess.Popen(sweep_command(out), cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "PAUSED":
                break
        assert lines and lines[-1].strip() == "PAUSED", "".join(lines) + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=600)  # a guard against a hang, not a timing: a loaded machine needs minutes
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: every finished step is saved; resume with the same command: python "
                           "experiments/sweep.py --out"), last
    state = torch.load(out / "finetune" / "seed0" / "checkpoint.pt", weights_only=True)
    assert state["step"] == INTERRUPTED_STEP

    env.pop(PAUSE_ENV)
    again = subprocess.run(sweep_command(out), cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"[finetune seed 0] resuming after step {INTERRUPTED_STEP}" in again.stdout
    assert_same_outputs(out, uninterrupted["out"])
