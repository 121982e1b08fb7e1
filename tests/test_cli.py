"""The sweep's command line checks every preset field before it loads anything, prints a user's
mistake as one line (``--debug``: the traceback), and two sweeps into one folder never train
the same run at once."""

from __future__ import annotations

import threading

import pytest

from avalanche_sst.experiments import sweep
from avalanche_sst.experiments.cli import run_command
from avalanche_sst.experiments.presets import PRESETS, Preset, validate_preset


@pytest.fixture
def no_data(monkeypatch):
    """Loading data is a failure here: every check must come first."""
    def load_dataset(name, root):
        raise AssertionError("data was loaded before the command was checked")

    monkeypatch.setattr(sweep, "load_dataset", load_dataset)


def cli(tmp_path, capsys, *args) -> tuple[int, str]:
    status = run_command(sweep.main, ["--preset", "quick", "--methods", "finetune", "--workers", "1",
                                      "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    return status, err


@pytest.mark.parametrize("args, message", [
    (["--model", "resnt8"], "unknown model 'resnt8'; did you mean 'resnet8'?"),
    (["--set", "ratios=abc"], "--set ratios='abc': not a valid comma-separated list of floats; e.g. ratios=1,1,1,1"),
    (["--set", "train_fraction=2"], "preset field train_fraction must be in (0, 1]"),
    (["--set", "train_fraction=0"], "preset field train_fraction must be in (0, 1]"),
    (["--set", "batch_size=1.5"], "--set batch_size='1.5': not a valid int"),
    (["--set", "scenario=nope"], "unknown scenario 'nope'"),
])
def test_bad_command_fails_in_one_line_before_loading_data(tmp_path, capsys, no_data, args, message):
    status, err = cli(tmp_path, capsys, *args)
    assert status == 2
    assert err.startswith(f"error: {message}"), err
    assert err.endswith("(--debug shows the traceback)\n") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path, capsys, no_data):
    with pytest.raises(ValueError, match="did you mean 'resnet8'"):
        cli(tmp_path, capsys, "--model", "resnt8", "--debug")


# Field -> a value of the right type but out of range (each rule of validate_preset).
OUT_OF_RANGE = {
    "dataset": "mnist", "methods": (), "ratios": (1, 0), "seeds": (), "train_fraction": 1.5,
    "test_fraction": 0.0, "validation_fraction": 1.0, "evaluate_on": "train", "label_noise": -0.1,
    "batch_size": 0, "eval_batch_size": 0, "epochs_scratch": -1, "epochs_finetune": -1, "sst_epochs": -1,
    "aod_epochs": -1, "lr_scratch": 0.0, "lr_finetune": -0.01, "momentum": 1.0, "weight_decay": -1e-4,
    "lwf_alpha": -1.0, "lwf_temperature": 0.0, "ewc_lambda": -1.0, "num_threads": -1,
    "model": "resnet9x", "device": "gpu0", "scenario": "nope",
}


@pytest.mark.parametrize("field, value", sorted(OUT_OF_RANGE.items()))
def test_every_field_is_range_checked(field, value):
    with pytest.raises(ValueError, match=field if field not in ("model", "scenario") else repr(value)):
        validate_preset(Preset(**{field: value}))


@pytest.mark.parametrize("field, value", [("train_fraction", "0.5"), ("batch_size", 16.0), ("multi_head", 1),
                                          ("ratios", (1, "a")), ("seeds", (0.5,)), ("method_kwargs", []),
                                          ("data_root", 3)])
def test_every_field_is_type_checked(field, value):
    with pytest.raises(ValueError, match=f"preset field {field} must be a "):
        validate_preset(Preset(**{field: value}))


def test_the_presets_and_their_documented_settings_are_valid():
    for preset in PRESETS.values():
        validate_preset(preset)
    validate_preset(PRESETS["quick"].with_settings(["ratios=1,2,3,4", "label_noise=0.1", "data_root=None",
                                                    "model=resnet20-w8", "evaluate_on=valid"]))
    assert PRESETS["quick"].with_settings(["ratios=1,2,3"]).ratios == (1, 2, 3)


def test_a_second_sweep_into_the_same_folder_waits_for_the_run(tmp_path, tiny_data):
    """The run's lock is held (as by another sweep): the sweep says so and waits, training nothing."""
    from filelock import FileLock

    preset = Preset(model="resnet8-w4", methods=("finetune",), seeds=(0,), ratios=(1, 1), epochs_scratch=1,
                    epochs_finetune=1, batch_size=16, eval_batch_size=64, validation_fraction=0.2, num_threads=1)
    run_dir = tmp_path / "finetune" / "seed0"
    run_dir.mkdir(parents=True)
    held = FileLock(str(run_dir / "run.lock"))
    held.acquire()
    waiting = threading.Event()
    logs: list[str] = []

    def log(line):
        logs.append(line)
        if "another sweep is running it" in line:
            waiting.set()

    worker = threading.Thread(target=sweep.run_sweep, args=(preset, tmp_path),
                              kwargs=dict(data=tiny_data, log=log))
    worker.start()
    try:
        assert waiting.wait(120), logs
        assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "tb").exists()
    finally:
        held.release()
        worker.join(600)
    assert (run_dir / "done.json").exists()
    assert logs[0] == f"[finetune seed 0] another sweep is running it (lock {run_dir / 'run.lock'}); " \
                      "waiting for it to finish"
