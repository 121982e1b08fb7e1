"""RWalk (Chaudhry et al. 2018) as a sweep method: Avalanche's RWalkPlugin NaN'd in
our sweeps for two reasons of its own, reproduced here first with the plain
plugin, then fixed by ``GuardedRWalkPlugin``; the guarded method keeps finite
losses, is charged its extra forward + backward, and resumes bit-identically."""

from __future__ import annotations

import json
import math

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin, RWalkPlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.benchmarks.scenarios import class_incremental
from avalanche_sst.experiments.methods import METHODS
from avalanche_sst.experiments.methods.avalanche_baselines import GuardedRWalkPlugin, rwalk_penalties
from avalanche_sst.experiments.sweep import run_sweep
from avalanche_sst.models import build_model
from avalanche_sst.plugins.guard import FiniteLossGuard

from conftest import make_images
from test_settings_sweep import CrashAfterFirstStep, tiny


def test_penalties_hand_values():
    imp = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([2.0])}
    scores = {"a": torch.tensor([-1.0, 2.0]), "b": torch.tensor([4.0])}
    out = rwalk_penalties(imp, scores)  # max F = 3, max s = 4; negative scores are relu'd out
    assert torch.allclose(out["a"], torch.tensor([1 / 3, 1 + 2 / 4]))
    assert torch.allclose(out["b"], torch.tensor([2 / 3 + 1]))


def test_penalties_without_scores_keep_the_importance_instead_of_nan():
    imp = {"a": torch.tensor([1.0, 4.0])}
    out = rwalk_penalties(imp, {"a": torch.zeros(2)})  # no delta_t checkpoint yet: every score 0
    assert torch.equal(out["a"], torch.tensor([0.25, 1.0]))
    assert torch.equal(rwalk_penalties({"a": torch.zeros(2)}, {"a": torch.zeros(2)})["a"], torch.zeros(2))


class Record(SupervisedPlugin):
    """Each training iteration's loss and the model's mode at its forward pass."""

    def __init__(self):
        super().__init__()
        self.losses, self.modes = [], []

    def after_forward(self, strategy, **kwargs):
        self.modes.append(strategy.model.training)

    def before_backward(self, strategy, **kwargs):
        self.losses.append((strategy.clock.train_exp_counter, float(strategy.loss.detach())))


def _two_steps(plugin):
    """2 class-incremental steps of 2 classes x 12 images, batch 8: 3 iterations < delta_t = 10."""
    bench = class_incremental(make_images(12, seed=0, classes=4), make_images(4, seed=1, classes=4),
                              classes_per_step=2, seed=0, augment=False)
    torch.manual_seed(0)
    model = build_model("resnet8-w2", num_classes=4, in_channels=1)
    record = Record()
    strategy = SupervisedTemplate(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                                  train_mb_size=8, train_epochs=1, evaluator=EvaluationPlugin(loggers=[]),
                                  plugins=[plugin, record])
    for exp in bench.train_stream:
        strategy.train(exp)
    return record, model


def test_avalanches_plugin_nans_and_trains_in_eval_mode_the_guarded_one_does_not():
    record, model = _two_steps(RWalkPlugin())
    assert not any(record.modes)  # every training forward ran in eval mode: BatchNorm never learned
    assert torch.equal(model.bn1.running_mean, torch.zeros_like(model.bn1.running_mean))
    step2 = [loss for step, loss in record.losses if step == 1]
    assert len(step2) == 3 and all(math.isnan(loss) for loss in step2)  # 0/0 penalties

    record, model = _two_steps(GuardedRWalkPlugin())
    assert all(record.modes)
    assert not torch.equal(model.bn1.running_mean, torch.zeros_like(model.bn1.running_mean))
    assert len(record.losses) == 6 and all(math.isfinite(loss) for _, loss in record.losses)


def test_rwalk_sweep_is_finite_charged_and_resumes_bit_identically(tmp_path, tiny_data):
    assert {"class_incremental", "task_incremental", "same_class"} <= set(METHODS["rwalk"].settings)
    preset = tiny(methods=("rwalk",))  # 2 steps of 2 classes x 40 samples, batch 16, 1 epoch
    guard = lambda m, s: [FiniteLossGuard("rwalk")]  # noqa: E731  (raises on a non-finite loss)
    run_sweep(preset, tmp_path / "straight", data=tiny_data, log=lambda s: None, extra_plugins=guard)
    done = json.loads((tmp_path / "straight" / "rwalk" / "seed0" / "done.json").read_text())
    assert done["costs"] == [2 * 80, 2 * 80]  # each sample: the training pass + RWalk's own forward + backward
    with pytest.raises(RuntimeError, match="crash"):
        run_sweep(preset, tmp_path / "resumed", data=tiny_data, log=lambda s: None,
                  extra_plugins=lambda m, s: [CrashAfterFirstStep(True)])
    ckpt = torch.load(tmp_path / "resumed" / "rwalk" / "seed0" / "checkpoint.pt", weights_only=True)
    assert set(ckpt["method"]) == {"iter_importance", "exp_params", "exp_scores", "exp_penalties"}
    run_sweep(preset, tmp_path / "resumed", data=tiny_data, log=lambda s: None)
    a = torch.load(tmp_path / "resumed" / "rwalk" / "seed0" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "rwalk" / "seed0" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert all(torch.equal(a["method"][n][k], b["method"][n][k]) for n in b["method"] for k in b["method"][n])
    assert (tmp_path / "resumed" / "table.csv").read_text() == (tmp_path / "straight" / "table.csv").read_text()
