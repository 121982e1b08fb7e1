"""Preflight and forecast (experiments/preflight.py, forecast.py): stand-in data of the real
shapes, the shrunk preset, errors collected with their command, and the forecast's sample-passes
equal to what a real run's CostMeter counts."""

from __future__ import annotations

import pytest
import torch

from avalanche_sst.experiments import forecast as F
from avalanche_sst.experiments.preflight import (STANDIN_LABEL, load_or_standin, run_preflight, scale_epochs,
                                                 scale_variant, standin_data)
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import build_benchmark, run_one


def test_standin_data_has_the_real_datasets_shapes_classes_and_sizes():
    train, test = standin_data("cifar100")
    assert (len(train), len(test)) == (50000, 10000)
    assert train[0][0].shape == (3, 32, 32) and train[0][0].dtype == torch.uint8
    assert sorted(set(train.targets)) == list(range(100)) and train.targets.count(7) == 500
    tiny_train, _ = standin_data("tiny_imagenet")
    assert len(tiny_train) == 100000 and tiny_train[99999][0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="no stand-in for dataset 'mnist'"):
        standin_data("mnist")


def test_a_missing_dataset_is_replaced_and_labelled(tmp_path):
    data, label = load_or_standin(Preset(dataset="cifar10", data_root=str(tmp_path)))
    assert label == STANDIN_LABEL and len(data[0]) == 50000


def test_epochs_are_scaled_together_keeping_their_order():
    p = Preset(epochs_scratch=80, epochs_finetune=95, sst_epochs=5, aod_epochs=5,
               method_kwargs={"m2kd": {"finetune_epochs": 15, "lam": 1.0}, "x": {"epochs": (50, 20)}})
    s = scale_epochs(p, 2)  # factor 2/95
    assert (s.epochs_scratch, s.epochs_finetune, s.sst_epochs, s.aod_epochs) == (2, 2, 1, 1)
    assert s.method_kwargs == {"m2kd": {"finetune_epochs": 1, "lam": 1.0}, "x": {"epochs": (1, 1)}}
    assert scale_variant("edge_kt:epochs_student=60,threshold=0.9", lambda v: v // 30) == \
        "edge_kt:epochs_student=2,threshold=0.9"


def _tiny_preset(methods, **changes) -> Preset:
    return Preset(model="resnet8-w4", methods=methods, ratios=(1, 1), batch_size=16, eval_batch_size=16,
                  epochs_scratch=2, epochs_finetune=1, sst_epochs=2, aod_epochs=1, **changes)


@pytest.mark.parametrize("method", ["finetune", "lwf", "ewc", "cumulative", "sst", "sst:use_msl=False"])
def test_forecast_sample_passes_equal_the_cost_meter_of_a_real_run(method, make_data, tmp_path):
    data = make_data(24, seed=0), make_data(6, seed=1)
    preset = _tiny_preset((method,))
    train, valid = F.step_sizes(build_benchmark(preset, 0, data))
    forecast, exact = F.run_sample_passes(method, preset, train, valid)
    run = run_one(preset, method, 0, build_benchmark(preset, 0, data), tmp_path, log=lambda s: None)
    assert exact and forecast == pytest.approx(sum(run.costs), rel=1e-9)


def test_h100_time_is_flops_at_the_stated_utilisation_or_the_launch_floor():
    flops, ops = F.model_flops_and_ops(torch.nn.Linear(4, 3), (4,), batch=2)
    assert flops == 48  # forward 2*4*3 + weight gradient 2*4*3 per sample (the input needs no gradient)
    assert ops > 0
    assert F.h100_seconds_per_sample_pass(1e9, 100, 10) == pytest.approx(100 * 5e-6 / 10)
    assert F.h100_seconds_per_sample_pass(1e12, 100, 10) == pytest.approx(1e12 / (494.7e12 * 0.25))


def test_preflight_runs_every_method_writes_the_forecast_and_collects_errors(make_data, tmp_path):
    data = make_data(24, seed=0), make_data(6, seed=1)
    preset = _tiny_preset(("finetune", "ewc:ewc_lambda=-"))  # the second cannot be built
    logs = []
    results = run_preflight({"mine": [("sweep", preset)]}, tmp_path, iterations=1, command="the command",
                            data=data, log=logs.append)
    ok, bad = results
    assert ok.ok and ok.steps == 2 and ok.sample_passes > 0 and ok.train_seconds > 0
    assert not bad.ok and "ewc_lambda" in bad.error
    text = (tmp_path / "preflight.md").read_text()
    finetune_row = next(line for line in text.splitlines() if "`finetune`" in line)
    forecast, _ = F.run_sample_passes("finetune", preset, *F.step_sizes(build_benchmark(preset, 0, data)))
    assert finetune_row.startswith(f"| mine | sweep | `finetune` | 1 | {forecast:.3g} | ")
    failed_row = next(line for line in text.splitlines() if "`ewc:ewc_lambda=-`" in line)
    assert "| - | - | - |" in failed_row  # forecast from the preset, nothing measured
    assert "1 of 2 runs FAILED" in text and "reproduce: the command" in text
    from avalanche_sst.experiments.provenance import code_provenance, provenance_text

    assert f"Command: `the command`; code: {provenance_text([code_provenance()])}." in text  # names its commit
    assert any("[preflight mine/sweep finetune] passed" in line for line in logs)


def test_cli_refuses_a_preflight_batch_below_one(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "paper_tables.py"
    spec = importlib.util.spec_from_file_location("paper_tables_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit):
        cli.main(["table3", "--preset", "paper", "--preflight", "--preflight-batch", "0"])
    assert "--preflight-batch: must be >= 1, got 0" in capsys.readouterr().err


def test_a_gpu_preset_is_checked_on_the_cpu_where_no_gpu_is_visible_and_every_line_says_so(monkeypatch):
    from avalanche_sst.experiments.preflight import preflight_device

    gpu, cpu = Preset(name="g", device="cuda"), Preset(name="c", device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, note = preflight_device(None, [gpu, cpu])
    assert device == "cpu" and note.startswith("ON CPU") and "cuda" in note
    assert preflight_device(None, [cpu]) == (None, "")  # the presets' own device: no note
    assert preflight_device("cuda", [gpu]) == ("cuda", "")  # asked for explicitly: no fallback
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert preflight_device(None, [gpu]) == (None, "")


class _EpochIterations:
    """Counts the training iterations of every epoch, in the run's strategy and in each phase's."""

    propagate_to_phases = True

    def __init__(self):
        self.per_epoch: list[int] = []

    def __getattr__(self, name):  # every other Avalanche callback: nothing to do
        if name.startswith(("before_", "after_")):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def before_training_epoch(self, strategy, **kwargs):
        self.per_epoch.append(0)

    def after_training_iteration(self, strategy, **kwargs):
        self.per_epoch[-1] += 1


def _naive(plugins, epochs=3):
    from avalanche.training.templates import SupervisedTemplate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    return SupervisedTemplate(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                              criterion=torch.nn.CrossEntropyLoss(), train_mb_size=2, train_epochs=epochs,
                              plugins=plugins, evaluator=None)


def test_iteration_cap_ends_every_epoch_after_n_batches_and_every_epoch_still_runs(make_data):
    from avalanche.core import SupervisedPlugin

    from avalanche_sst.experiments.preflight import IterationCap

    bench = build_benchmark(_tiny_preset(("finetune",)), 0, (make_data(24, seed=0), make_data(6, seed=1)))
    exp = bench.train_stream[0]
    assert len(exp.dataset) >= 10  # uncapped, an epoch holds 5 or more batches of 2
    counter = _EpochIterations()
    _naive([IterationCap(2), counter]).train(exp)
    assert counter.per_epoch == [2, 2, 2]

    class StopAfterFirstEpoch(SupervisedPlugin):  # a method's own early stop
        def after_training_epoch(self, strategy, **kwargs):
            strategy.stop_training()

    counter = _EpochIterations()
    _naive([StopAfterFirstEpoch(), IterationCap(2), counter]).train(exp)
    assert counter.per_epoch == [2, 0]  # the early stop holds: the cap leaves the flag alone


def test_iteration_cap_reaches_every_phase_of_the_framework(make_data, tmp_path):
    from avalanche_sst.experiments.preflight import IterationCap

    data = make_data(24, seed=0), make_data(6, seed=1)
    preset = _tiny_preset(("sst",))
    uncapped, capped = _EpochIterations(), _EpochIterations()
    run_one(preset, "sst", 0, build_benchmark(preset, 0, data), tmp_path / "a", [uncapped], log=lambda s: None)
    run_one(preset, "sst", 0, build_benchmark(preset, 0, data), tmp_path / "b", [IterationCap(1), capped],
            log=lambda s: None)
    assert len(capped.per_epoch) == len(uncapped.per_epoch) > 4  # every epoch of every phase, both steps
    assert min(uncapped.per_epoch) > 1 and set(capped.per_epoch) == {1}


def test_each_sweeps_data_and_full_benchmark_are_made_once(make_data, tmp_path, monkeypatch):
    import avalanche_sst.experiments.preflight as P
    import avalanche_sst.experiments.sweep as S

    data = make_data(24, seed=0), make_data(6, seed=1)
    builds, loads = [], []
    build, load = S.build_benchmark, P.load_or_standin
    monkeypatch.setattr(S, "build_benchmark", lambda *a, **k: builds.append(1) or build(*a, **k))
    monkeypatch.setattr(P, "load_or_standin", lambda *a, **k: loads.append(1) or load(*a, **k))
    methods = ("finetune", "lwf", "ewc")
    results = run_preflight({"mine": [("sweep", _tiny_preset(methods))]}, tmp_path, iterations=1, data=data,
                            log=lambda s: None)
    assert all(r.ok for r in results)
    assert len(loads) == 1
    assert len(builds) == 1 + len(methods)  # the full-size one, then each run's shrunk one


def test_a_preflight_stopped_midway_keeps_the_runs_it_finished(make_data, tmp_path, monkeypatch):
    import avalanche_sst.experiments.preflight as P

    data = make_data(24, seed=0), make_data(6, seed=1)
    (tmp_path / "preflight.md").write_text("an earlier preflight's forecast")
    run = P.preflight_run

    def stopped_at_ewc(preset, method, *args, **kwargs):
        if method == "ewc":
            raise KeyboardInterrupt  # Ctrl-C, or the machine taken back
        return run(preset, method, *args, **kwargs)

    monkeypatch.setattr(P, "preflight_run", stopped_at_ewc)
    with pytest.raises(KeyboardInterrupt):
        run_preflight({"mine": [("sweep", _tiny_preset(("finetune", "lwf", "ewc")))]}, tmp_path, iterations=1,
                      data=data, log=lambda s: None)
    kept = P.read_results_json(tmp_path / "preflight.json")
    assert [(r.method, r.ok) for r in kept] == [("finetune", True), ("lwf", True)]
    assert not (tmp_path / "preflight.md").exists()  # no forecast of another preflight left behind


_PEAK_SCRIPT = """
import torch
from avalanche_sst.experiments.peak_memory import peak_memory, reset_peak_memory
cpu = torch.device("cpu")
big = torch.ones(400 * 2 ** 20 // 4)  # an earlier run's 400 MiB, touched, then freed
assert reset_peak_memory(cpu)
after_big = peak_memory(cpu, True)[0]
del big
assert reset_peak_memory(cpu)
print(after_big, *peak_memory(cpu, True), sep="|")
"""


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_each_runs_cpu_peak_memory_starts_afresh_not_at_an_earlier_runs_peak():
    import subprocess
    import sys

    # a fresh process: the suite's own allocator may keep freed memory resident
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, check=True).stdout
    after_big, small, kind = out.strip().split("|")
    assert kind == "run peak RSS" and float(small) < float(after_big) - 300
    from avalanche_sst.experiments.peak_memory import peak_memory

    # where the peak cannot be reset, the label says it is the whole process's
    assert peak_memory(torch.device("cpu"), False)[1] == "process peak RSS"
