"""A run that diverges is recorded (NaN scores from its step on), the sweep goes on, and the selection rule
never keeps a grid point at which a seed diverged. The case that stopped the m2kd_fig4 selection: iCaRL at
a rate too high for it, whose NaN outputs Avalanche's iCaRL loss refuses with a RuntimeError."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from avalanche_sst.experiments.divergence import diverged, diverged_tail, weights_finite
from avalanche_sst.experiments.selection import best_mean, best_shared
from avalanche_sst.experiments.sweep import run_sweep
from avalanche_sst.plugins.guard import NonFiniteLossError
from test_settings_sweep import tiny


def _net(weight=1.0, running_var=1.0):
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        net[0].weight.fill_(weight)
        net[1].running_var.fill_(running_var)
    return net


def test_weights_finite_reads_parameters_and_float_buffers_only():
    assert weights_finite(_net())
    assert not weights_finite(_net(weight=math.nan))
    assert not weights_finite(_net(weight=math.inf))
    assert not weights_finite(_net(running_var=math.inf))  # a buffer (iCaRL's class means are buffers)
    assert weights_finite(nn.Module())  # nothing to check


def test_which_errors_mean_divergence():
    finite = SimpleNamespace(model=_net(), mb_output=torch.ones(2))
    assert diverged(NonFiniteLossError("x"), finite)  # the guard refused the loss; weights still finite
    assert not diverged(RuntimeError("a bug"), finite)  # anything else with a finite network is raised
    assert diverged(RuntimeError("bce"), SimpleNamespace(model=_net(), mb_output=torch.tensor([1.0, math.nan])))
    assert diverged(RuntimeError("bce"), SimpleNamespace(model=_net(weight=math.nan), mb_output=None))
    assert not diverged(KeyboardInterrupt(), SimpleNamespace(model=_net(weight=math.nan), mb_output=None))


def test_diverged_tail_by_hand():
    scores = [{"top1_seen": 0.9, "group_acc_1": 0.9}]
    out_scores, costs, memory, inference = diverged_tail(("top1_seen",), 4, 2, 30.0, scores, [100.0], [5.0], [7.0])
    assert out_scores[0] == scores[0] and len(out_scores) == 4
    assert all(set(s) == {"top1_seen", "group_acc_1"} and all(math.isnan(v) for v in s.values())
               for s in out_scores[1:])  # the first step's keys, per-group scores included
    assert costs == [100.0, 30.0, 0.0, 0.0]  # the diverged step's partial cost, then no training
    assert memory[0] == 5.0 and inference[0] == 7.0 and all(math.isnan(v) for v in memory[1:] + inference[1:])
    # diverged at the end of a step the meter already counted: its cost is not added twice
    assert diverged_tail(("a",), 2, 1, 99.0, [], [100.0], [], [])[1] == [100.0, 0.0]
    assert [list(s) for s in diverged_tail(("a",), 2, 1, 0.0, [], [], [], [])[0]] == [["a"], ["a"]]  # no step scored


def test_a_grid_point_with_a_diverged_seed_is_never_chosen():
    scores = {"icarl:lr_factor=1": [0.40, 0.41, 0.39],
              "icarl:lr_factor=31.6": [0.90, 0.90, math.nan],  # better seeds, but one diverged
              "lwf_mc:lr_factor=1": [math.nan, 0.1, 0.1],
              "lwf_mc:lr_factor=31.6": [0.05, 0.05, 0.05]}
    best = best_mean(scores, ["lr_factor"])
    assert best["icarl"] == ("icarl:lr_factor=1", pytest.approx(0.40))
    assert best["lwf_mc"][0] == "lwf_mc:lr_factor=31.6"
    with pytest.raises(ValueError, match="icarl: a run diverged at every grid point"):
        best_mean({"icarl:lr_factor=1": [math.nan], "icarl:lr_factor=3.16": [0.2, math.nan]}, ["lr_factor"])
    # the diverged point first: a plain max() over NaN means would keep it
    shared, mean = best_shared({"a:lr_factor=10": [0.9], "b:lr_factor=10": [math.nan],
                                "a:lr_factor=1": [0.3], "b:lr_factor=1": [0.3]}, ["lr_factor"])
    assert shared == {"lr_factor": 1.0} and mean == pytest.approx(0.3)


def test_a_sweep_records_diverged_runs_and_goes_on(tmp_path, tiny_data):
    # lr 0.05 x 2e7: iCaRL's loss raises on its NaN outputs inside step 1; fine-tuning's CE does not
    # raise, and its step ends with NaN weights; the plain fine-tuning run is untouched by both.
    methods = ("icarl:lr_factor=2e7", "finetune:lr_factor=2e7", "finetune")
    # two seeds: the tables' mean ± std over seeds must take the NaN scores
    preset = tiny(methods=methods, seeds=(0, 1))
    results = {r.method: r for r in run_sweep(preset, tmp_path, data=tiny_data, log=lambda s: None) if r.seed == 0}
    for name in methods[:2]:
        r = results[name]
        assert r.diverged_at == 1 and all(math.isnan(a) for a in r.accuracies) and len(r.scores) == 2
        done = json.loads((tmp_path / name.replace(":", "_") / "seed0" / "done.json").read_text())
        assert done["diverged_at_step"] == 1 and r.costs[1] == 0.0 and r.costs[0] > 0
    assert results["finetune:lr_factor=2e7"].costs[0] == results["finetune"].costs[0]  # the whole step ran
    assert results["icarl:lr_factor=2e7"].costs[0] < results["finetune"].costs[0]  # stopped within the step
    plain = results["finetune"]
    assert plain.diverged_at is None and all(0 < a <= 1 for a in plain.accuracies)
    assert "diverged_at_step" not in json.loads((tmp_path / "finetune" / "seed0" / "done.json").read_text())
    assert (tmp_path / "runs.csv").read_text().count("nan") > 0
    table = (tmp_path / "table.md").read_text()
    assert "| icarl:lr_factor=2e7 | diverged | diverged |\n" in table  # the per-step table
    assert "| icarl:lr_factor=2e7 | diverged | diverged | diverged |\n" in table  # last step's three scores
    # rerunning reads the diverged runs back instead of training them again
    logs: list[str] = []
    again = {r.method: r for r in run_sweep(preset, tmp_path, data=tiny_data, log=logs.append)}
    assert again["icarl:lr_factor=2e7"].diverged_at == 1
    assert not any("DIVERGED" in line for line in logs)


def test_a_table_cell_of_a_diverged_run_says_so():
    from avalanche_sst.experiments.paper.formatting import fmt_cell, parse_cell

    assert fmt_cell(math.nan, math.nan) == "diverged" and parse_cell("diverged") is None
    assert fmt_cell(61.349, 0.123) == "61.35 ± 0.12" and parse_cell(fmt_cell(61.349, 0.123)) == (61.35, 0.12)
    from avalanche_sst.experiments.tables import markdown_table, mean_std

    assert all(math.isnan(v) for v in mean_std([0.5, math.nan, 0.7]))  # statistics.stdev raises on a NaN
    assert mean_std([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(0.1414, abs=1e-4))

    assert markdown_table({"icarl": [(98.0, 0.5), (math.nan, math.nan)]}).splitlines()[-1] == \
        "| icarl | 98.00 ± 0.50 | diverged |"


def test_the_selection_record_names_a_diverged_seed(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "select_on_validation", Path(__file__).parents[1] / "experiments" / "select_on_validation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    per_seed = {"icarl:lr_factor=1": {0: 0.4, 1: 0.5}, "icarl:lr_factor=10": {0: math.nan, 1: 0.9}}
    best = best_mean({k: list(v.values()) for k, v in per_seed.items()}, ["lr_factor"])
    text = script.write_record(tmp_path, "cmd", {"lr_factor": (1.0, 10.0)}, [0, 1], per_seed, best, "top1")
    assert "| icarl:lr_factor=10 | diverged | 90.00 | diverged |" in text
    assert "| icarl:lr_factor=1 | 40.00 | 50.00 | 45.00 |" in text
    assert "a grid point with a diverged seed is never chosen" in text
    assert "Chosen (best mean): icarl:lr_factor=1 (45.00%)" in text
