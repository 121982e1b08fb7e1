"""Tests that kill the mutation survivors of plugins/msl (docs/testing.md): eq. 9 with the
plugin's beta and temperature, the teacher run in the student's autocast precision, the epoch
means it logs, the teacher-update rule and its validation cost, the first-experience rule and
what an experience leaves behind. The hooks are driven directly on a one-block model."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from avalanche_sst.functional.losses import msl_loss
from avalanche_sst.metrics.cost import FORWARD_COST, CostMeter
from avalanche_sst.models import capture_block_outputs
from avalanche_sst.plugins import msl as msl_module
from avalanche_sst.plugins.msl import MSLPlugin

torch.set_num_threads(1)


class OneBlock(nn.Module):
    """A stem, one residual-stage stand-in (``blocks``) and the ``fc`` head."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU())])
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.blocks[0](self.stem(x)).mean((2, 3)))


def _criterion(output, target):
    return output.sum() * 0


def _strategy(model, counter: int = 1, exp: int = 1, valid=None, plugins=()):
    clock = SimpleNamespace(train_exp_counter=counter, train_iterations=0, train_exp_epochs=0)
    return SimpleNamespace(model=model, clock=clock, experience=SimpleNamespace(current_experience=exp),
                           _criterion=_criterion, sst_valid_dataset=valid, plugins=list(plugins),
                           device=torch.device("cpu"), evaluator=None)


def _x(seed: int) -> torch.Tensor:
    return torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(seed))


def _events(strategy, tag: str) -> list[float]:
    return [e.value for e in getattr(strategy, "sst_events", []) if e.tag == tag]


def _step(strategy, x):
    """One training iteration's loss through the criterion MSL installed."""
    strategy.mb_x = x
    return strategy._criterion(strategy.model(x), None)


def _expected(model, teacher, x, beta, temperature, dtype=None):
    """Eq. 9 by msl_loss on the student's and the teacher's block outputs, the teacher run under
    CPU autocast in ``dtype`` (None: float32)."""
    with capture_block_outputs(model) as sf, capture_block_outputs(teacher) as tf:
        if dtype is None:
            out = model(x)
            with torch.no_grad():
                tl = teacher(x)
        else:
            with torch.autocast("cpu", dtype=dtype):
                out = model(x)
                with torch.no_grad():
                    tl = teacher(x)
        return msl_loss(out.float(), tl.float(), [f.float() for f in sf], [f.float() for f in tf],
                        beta=beta, temperature=temperature).total


def test_defaults_bounds_and_messages():
    plugin = MSLPlugin()
    assert (plugin.beta, plugin.temperature) == (1000.0, 1.0)  # Zagoruyko & Komodakis' beta, T = 1
    assert plugin.teacher is None and plugin.active is False
    assert plugin.extra_passes_per_sample(None) == 0.0
    assert MSLPlugin(beta=0).beta == 0.0 and MSLPlugin(beta=0.5).beta == 0.5  # beta = 0: KL alone
    with pytest.raises(ValueError, match=r"^beta must be >= 0, got -1$"):
        MSLPlugin(beta=-1)
    with pytest.raises(ValueError, match=r"^temperature must be > 0, got 0$"):
        MSLPlugin(temperature=0)


def test_the_loss_is_eq_9_with_the_plugins_beta_and_temperature():
    """beta = 10, T = 2 (neither msl_loss's default); a float32 student runs no autocast at all
    (an autocast in float32 on CPU would warn at every iteration)."""
    model, teacher = OneBlock(0), OneBlock(1)
    plugin = MSLPlugin(beta=10.0, temperature=2.0, update_teacher=False, teacher=teacher)
    strategy = _strategy(model)
    plugin.before_training_exp(strategy)
    assert plugin.extra_passes_per_sample(strategy) == FORWARD_COST
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = _step(strategy, _x(0))
    expected = _expected(model, copy.deepcopy(teacher), _x(0), 10.0, 2.0)
    assert torch.equal(loss, expected)
    assert not torch.allclose(expected, _expected(model, copy.deepcopy(teacher), _x(0), 1000.0, 1.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_teacher_runs_in_the_students_autocast_precision(dtype):
    model, teacher = OneBlock(0), OneBlock(1)
    plugin = MSLPlugin(beta=10.0, update_teacher=False, teacher=teacher)
    strategy = _strategy(model)
    plugin.before_training_exp(strategy)
    strategy.mb_x = _x(0)
    with torch.autocast("cpu", dtype=dtype):  # as AutocastPlugin: the forward only ...
        out = model(_x(0))
    assert out.dtype == dtype
    loss = strategy._criterion(out, None)  # ... the criterion runs outside autocast
    expected = _expected(model, copy.deepcopy(teacher), _x(0), 10.0, 1.0, dtype)
    assert torch.equal(loss, expected)
    other = torch.bfloat16 if dtype == torch.float16 else torch.float16
    # a teacher in float32 or in the other low precision gives another loss
    fp32_teacher = _expected(model, copy.deepcopy(teacher), _x(0), 10.0, 1.0, None)
    assert not torch.equal(expected, fp32_teacher)
    assert not torch.equal(expected, _expected(model, copy.deepcopy(teacher), _x(0), 10.0, 1.0, other))


def test_each_epoch_logs_the_mean_of_its_terms():
    """Epochs of 3, 1 and 0 iterations: MSL/kd and MSL/at are the means of that epoch's terms."""
    model, teacher = OneBlock(0), OneBlock(1)
    plugin = MSLPlugin(update_teacher=False, teacher=teacher)
    strategy = _strategy(model)
    plugin.before_training_exp(strategy)
    means = []
    for epoch, iterations in enumerate((3, 1, 0)):
        plugin.before_training_epoch(strategy)
        kd, at = [], []
        for i in range(iterations):
            _step(strategy, _x(10 * epoch + i))
            kd.append(float(strategy.loss_terms["msl_kd"]))
            at.append(float(strategy.loss_terms["msl_at"]))
        plugin.after_training_epoch(strategy)
        means.append((sum(kd) / len(kd), sum(at) / len(at)) if iterations else (0.0, 0.0))
    assert means[0][0] > 0 and means[0][1] > 0
    assert _events(strategy, "MSL/kd") == pytest.approx([m[0] for m in means], rel=1e-12, abs=0)
    assert _events(strategy, "MSL/at") == pytest.approx([m[1] for m in means], rel=1e-12, abs=0)


def test_teacher_replaced_only_by_a_strictly_better_student_and_validation_is_charged(monkeypatch):
    """Scripted accuracies: teacher 0.5, students 0.5 (a tie keeps the teacher), 0.7, 0.9:
    two updates. Each epoch charges a forward of the 6 validation samples for the student, the
    first one also for the teacher: (6 + 3 * 6) / 3 = 8 sample-passes."""
    scripted = iter([0.5, 0.5, 0.7, 0.9])
    devices = []

    def fake_accuracy(m, data, device, batch_size=1000):
        devices.append(device)
        return next(scripted)

    monkeypatch.setattr(msl_module, "accuracy", fake_accuracy)
    model = OneBlock(0)
    valid = TensorDataset(torch.zeros(6, 1, 6, 6), torch.zeros(6, dtype=torch.long))
    meter = CostMeter()
    plugin = MSLPlugin(teacher=OneBlock(1))
    strategy = _strategy(model, valid=valid, plugins=[meter])
    meter.before_training_exp(strategy)
    plugin.before_training_exp(strategy)
    for epoch in range(3):
        plugin.before_training_epoch(strategy)
        with torch.no_grad():
            model.fc.bias.fill_(float(epoch))  # the student changes each epoch
        plugin.after_training_epoch(strategy)
        if epoch == 0:
            assert not torch.equal(plugin.teacher.fc.bias, model.fc.bias)
    assert _events(strategy, "MSL/teacher_update") == [0.0, 1.0, 1.0]
    assert plugin.teacher_updates == 2
    assert _events(strategy, "MSL/student_valid_acc") == [0.5, 0.7, 0.9]
    assert _events(strategy, "MSL/teacher_valid_acc") == [0.5, 0.7, 0.9]
    assert torch.equal(plugin.teacher.fc.bias, torch.full((3,), 2.0))  # the last better student
    assert devices == [strategy.device] * 4  # validation runs where the strategy trains
    meter.after_training_exp(strategy)
    assert meter.step_breakdown[0]["valid"] == pytest.approx(8.0, abs=1e-12)


def test_first_experience_rule_the_given_teacher_and_the_skip_warning():
    # a fresh strategy given a later experience holds a trained model: MSL runs
    later = _strategy(OneBlock(0), counter=0, exp=1)
    plugin = MSLPlugin(update_teacher=False)
    plugin.before_training_exp(later)
    assert plugin.active and torch.equal(plugin.teacher.fc.weight, later.model.fc.weight)
    plugin.after_training_exp(later)
    # the strategy's second experience, even if it is the stream's experience 0 again: MSL runs
    again = _strategy(OneBlock(0), counter=1, exp=0)
    plugin = MSLPlugin(update_teacher=False)
    plugin.before_training_exp(again)
    assert plugin.active
    plugin.after_training_exp(again)
    # a given teacher is what MSL distils from, even in the first experience
    given = OneBlock(1)
    first = _strategy(OneBlock(0), counter=0, exp=0)
    plugin = MSLPlugin(update_teacher=False, teacher=given)
    plugin.before_training_exp(first)
    assert plugin.active and torch.equal(plugin.teacher.fc.weight, given.fc.weight)
    assert not torch.equal(plugin.teacher.fc.weight, first.model.fc.weight)
    plugin.after_training_exp(first)
    # nothing trained and no teacher: MSL stands aside, logs each skip and warns once
    plugin = MSLPlugin(update_teacher=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            plugin.before_training_exp(first)
            assert not plugin.active and plugin.extra_passes_per_sample(first) == 0.0
    assert [str(w.message) for w in caught] == [
        "MSLPlugin: no trained teacher in the strategy's first experience; training it with the strategy's own "
        "criterion (MSL starts at the next experience). Pass teacher=... to distil from a given model from the "
        "start."]
    assert _events(first, "MSL/skipped") == [1.0, 1.0]


def test_an_experience_leaves_the_strategy_as_it_found_it():
    model = OneBlock(0)
    strategy = _strategy(model)
    plugin = MSLPlugin(update_teacher=False, teacher=OneBlock(1))
    plugin.before_training_exp(strategy)
    assert strategy._criterion is not _criterion and not model.fc.weight.requires_grad
    plugin.after_training_exp(strategy)
    assert strategy._criterion is _criterion
    assert plugin.active is False and plugin.extra_passes_per_sample(strategy) == 0.0
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_input_errors_name_the_plugin_and_the_fix():
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(32, 3))
    with pytest.raises(ValueError, match=r"^MSLPlugin needs a model with residual blocks; "):
        MSLPlugin(update_teacher=False).before_training_exp(_strategy(flat))
    with pytest.raises(ValueError, match=(
            r"^MSLPlugin\(update_teacher=True\) needs validation data: pass valid_stream=benchmark.valid_stream "
            r"\(build the benchmark with validation_fraction > 0\), or set update_teacher=False$")):
        MSLPlugin().before_training_exp(_strategy(OneBlock(0)))
