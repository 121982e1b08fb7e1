"""Executors, live progress and recorded versions: the same table with one worker in this
process and two Ray workers, a killed worker's run resumed, the progress bars drawn (also
from Ray workers and inside MultiStepSST's phases) without Avalanche's logger warning."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
import warnings
from importlib import metadata
from pathlib import Path

import pytest
from avalanche.core import SupervisedPlugin

from avalanche_sst.experiments.executor import (
    LocalExecutor, RayExecutor, add_executor_arguments, executor_options, make_executor,
)
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.progress import ProgressDisplay, bar_description, phase_position
from avalanche_sst.experiments.sweep import run_sweep
from avalanche_sst.experiments.versions import environment_versions, versions_text


def tiny_preset(**changes) -> Preset:
    base = Preset(
        name="test", model="resnet8-w4", methods=("finetune", "lwf"), ratios=(1, 1), seeds=(0, 1),
        epochs_scratch=1, epochs_finetune=1, sst_epochs=2, aod_epochs=1,
        batch_size=16, eval_batch_size=64, validation_fraction=0.2, lr_finetune=0.02, num_threads=1,
    )
    return base.replace(**changes)


def read_rows(path: Path, drop=("seconds",)) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


class KillOnce(SupervisedPlugin):
    """Kills its own process (SIGKILL, as the OOM killer would) when ``method`` starts its
    second step, once: the first step's checkpoint is on disk; ``marker`` remembers the kill."""

    def __init__(self, method: str, marker: str):
        super().__init__()
        self.method, self.marker = method, marker

    def before_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter == 1 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- pure helpers


def test_phase_position_counts_iterations_over_the_whole_phase():
    # epoch 3 of 4, 10 iterations each, 7 done in this epoch: 2 * 10 + 7 of 40
    assert phase_position(dict(epoch=3, n_epochs=4, iteration=7, n_iterations=10)) == (27, 40)
    assert phase_position(dict(epoch=1, n_epochs=1, iteration=0, n_iterations=5)) == (0, 5)
    # evaluation (no epochs): the iterations of the experience evaluated
    assert phase_position(dict(epoch=0, n_epochs=0, iteration=3, n_iterations=8)) == (3, 8)
    # a loader without a length: no total, so no ETA
    assert phase_position(dict(epoch=2, n_epochs=3, iteration=4, n_iterations=0)) == (4, None)


def test_bar_description():
    fields = dict(step=2, n_steps=4, phase="aod", epoch=3, n_epochs=5)
    assert bar_description("sst seed 0", fields) == "sst seed 0 | step 2/4 aod | epoch 3/5"
    assert bar_description("ewc seed 1", dict(fields, phase="eval", n_epochs=0)) == "ewc seed 1 | step 2/4 eval"


def test_versions_name_the_installed_packages():
    v = environment_versions()
    for name in ("torch", "torchvision", "avalanche-lib", "avalanche-sst"):
        assert v[name] == metadata.version(name), name
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "cuda" in v and "gpu" in v
    assert versions_text({"torch": "2.14.1", "cuda": None, "ray": "2.58.0"}) == "torch 2.14.1, ray 2.58.0"


def test_executor_choice_and_bad_arguments():
    assert isinstance(make_executor(1), LocalExecutor)
    ray_executor = make_executor(2, threads_per_run=1)
    assert isinstance(ray_executor, RayExecutor) and ray_executor.workers == 2
    assert isinstance(make_executor(1, address="auto"), RayExecutor)  # joining a cluster needs Ray
    assert make_executor(None, threads_per_run=1).workers >= 1
    with pytest.raises(ValueError, match="workers must be >= 1"):
        make_executor(0)
    with pytest.raises(TypeError, match="threads_per_run must be an int"):
        make_executor(1, threads_per_run=1.5)
    with pytest.raises(ValueError, match="gpus_per_run must be >= 0"):
        make_executor(2, gpus_per_run=-0.5)
    with pytest.raises(ValueError, match="keys must name every item"):
        LocalExecutor().map(lambda item, shared, run: item, [1, 2], ["a"])


def test_command_line_flags():
    parser = argparse.ArgumentParser()
    add_executor_arguments(parser)
    args = parser.parse_args(["--workers", "4", "--address", "auto", "--gpus-per-run", "0.25",
                              "--threads-per-run", "2"])
    assert executor_options(args) == dict(workers=4, address="auto", gpus_per_run=0.25, threads_per_run=2)
    assert executor_options(parser.parse_args([]))["workers"] is None  # one per core


def test_longest_runs_are_submitted_first():
    from avalanche_sst.experiments.executor import longest_first

    preset = tiny_preset(methods=("finetune", "lwf", "ewc", "cumulative", "sst"), ratios=(1, 1, 1, 1),
                         epochs_scratch=10, epochs_finetune=10, sst_epochs=9, aod_epochs=5)
    # Four parts of 0.2 (validation 0.2), the first trained 10 epochs by all (2 units), then 3 steps:
    # finetune 2 + 3 * 10 * 0.2 = 8; ewc + one Fisher pass per step: 2 + 3 * 11 * 0.2 = 8.6;
    # lwf 1.3x per sample: 2 + 3 * 13 * 0.2 = 9.8; cumulative all data so far: 2 + 10 * (0.4 + 0.6 + 0.8) = 20;
    # sst: SST phases and 4x-cost AOD phases on top, the most.
    assert longest_first(preset, list(preset.methods)) == [4, 3, 1, 2, 0]
    assert longest_first(preset, ["finetune", "finetune"]) == [0, 1]  # ties keep their order
    with pytest.raises(ValueError, match="order must list every index"):
        RayExecutor(2).map(lambda item, shared, run: item, [1, 2], ["a", "b"], order=[0, 0])


def test_the_lock_pins_every_dependency_with_hashes():
    tomllib = pytest.importorskip("tomllib")
    import re

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lock = (root / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+) \\$", lock, flags=re.M))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.lock: run `make lock`"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    # every pinned package lists at least one hash (pip install --require-hashes needs them all)
    blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9._-]+==)", lock) if re.match(r"[A-Za-z0-9._-]+==", b)]
    assert len(blocks) == len(pins) and all("--hash=sha256:" in block for block in blocks)


def test_one_worker_runs_in_this_process_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now fails
    seen = []
    results = make_executor(1).map(lambda item, shared, run: (item, shared, run.key), [3, 1, 2],
                                   ["c", "a", "b"], shared="data", report=seen.append)
    assert results == [(3, "data", "c"), (1, "data", "a"), (2, "data", "b")]
    assert seen == [("start", "c"), ("end", "c"), ("start", "a"), ("end", "a"), ("start", "b"), ("end", "b")]


# ----------------------------------------------------------------------------- sweeps


@pytest.fixture(scope="module")
def data(make_data):
    return make_data(40, seed=0), make_data(20, seed=1)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("one_worker")
    logs: list[str] = []
    results = run_sweep(tiny_preset(), out, data=data, log=logs.append, workers=1)
    return dict(out=out, results=results, logs=logs)


def test_two_ray_workers_give_the_same_table_and_a_killed_worker_resumes(tmp_path, data, in_process,
                                                                          monkeypatch):
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    out, marker = tmp_path / "two_workers", tmp_path / "killed.pid"
    logs: list[str] = []
    bars = io.StringIO()
    results = run_sweep(tiny_preset(), out, data=data, log=logs.append, workers=2,
                        extra_plugins=lambda m, s: [KillOnce("lwf", str(marker))] if (m, s) == ("lwf", 1) else [],
                        progress=True, progress_file=bars)
    # the lwf seed-1 worker was killed after its first step; Ray retried the run, which resumed
    assert marker.exists() and int(marker.read_text()) != os.getpid()
    assert sum(line == "[lwf seed 1] resuming after step 1" for line in logs) == 1, logs
    # the result lines of the workers reached this process, one per step and run
    for m in ("finetune", "lwf"):
        for s in (0, 1):
            assert any(line.startswith(f"[{m} seed {s}] step 2/2:") for line in logs), (m, s, logs)
    # results in the sweep's order, and identical numbers and files
    assert [(r.method, r.seed) for r in results] == [(r.method, r.seed) for r in in_process["results"]]
    assert [r.accuracies for r in results] == [r.accuracies for r in in_process["results"]]
    assert (out / "table.csv").read_text() == (in_process["out"] / "table.csv").read_text()
    assert read_rows(out / "runs.csv") == read_rows(in_process["out"] / "runs.csv")
    # progress events came back from the workers
    text = bars.getvalue()
    assert "finetune seed 0 | step 1/2 train | epoch 1/1" in text and "sweep: runs 4/4" in text
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"  # no usage reports sent from a sweep
    executor = json.loads((out / "preset.json").read_text())["executor"]
    assert executor["workers"] == 2 and executor["threads_per_run"] == 1


def test_progress_bars_in_sst_phases_and_no_logger_warning(tmp_path, data):
    bars = io.StringIO()
    logs: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_sweep(tiny_preset(methods=("finetune", "sst"), seeds=(0,)), tmp_path, data=data, log=logs.append,
                  progress=True, progress_file=bars)
    text = bars.getvalue()
    # MultiStepSST's inner phase strategies report under the outer run
    for phase in ("step 1/2 scratch | epoch 1/1", "step 1/2 sst | epoch 2/2", "step 2/2 aod | epoch 1/1"):
        assert f"sst seed 0 | {phase}" in text, (phase, text[-2000:])
    assert "finetune seed 0 | step 2/2 train | epoch 1/1" in text
    # the evaluation after each step, with its own total: 80 test images in batches of 64
    assert "finetune seed 0 | step 2/2 eval:   0%|          | 0/2 [" in text
    assert "sweep: runs 2/2 |##########| [" in text  # runs done / total, elapsed < ETA
    assert "it/s" in text or "s/it" in text  # the run bars' rate
    # the per-step result lines are unchanged
    assert [line for line in logs if line.startswith("[sst seed 0] step")][-1].startswith("[sst seed 0] step 2/2:")
    assert not [w for w in caught if "No loggers specified" in str(w.message)]
    versions = json.loads((tmp_path / "preset.json").read_text())["versions"]
    assert versions["torch"] == metadata.version("torch")
