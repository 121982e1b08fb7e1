"""Tests that kill the mutation survivors of plugins/sst (docs/testing.md): the proximal
variant's soft-threshold step by hand, the argument checks and messages, eq. 3's cut fraction,
the per-epoch scalars under a log prefix, the |gamma| histogram (the paper's Fig. 3) and the
short-phase warning's numbers, and the plugin's name in its refusals."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from avalanche.logging import TensorboardLogger
from avalanche.training.plugins import EWCPlugin
from torch import nn

from avalanche_sst.plugins import SSTPlugin
from test_sst_framework import fake_strategy
from test_sst_options import TwoLayers

torch.set_num_threads(1)

#: 16 factors, |gamma| 0.1 .. 1.6 with alternating signs: layer 1 holds 11, layer 2 five
GAMMAS = torch.tensor([(-1) ** i * 0.1 * (i + 1) for i in range(16)])


def _model(values: torch.Tensor = GAMMAS) -> TwoLayers:
    model = TwoLayers()
    with torch.no_grad():
        model.bn1.weight.copy_(values[:11])
        model.bn2.weight.copy_(values[11:])
    return model


def _gammas(model) -> torch.Tensor:
    return torch.cat([model.bn1.weight.detach(), model.bn2.weight.detach()])


def _events(strategy, tag: str) -> list[float]:
    return [e.value for e in strategy.sst_events if e.tag == tag]


def _at_target(plugin, model):
    """The plugin after before_training_epoch at epoch 3 of 6 (past E_cut = 2: SP_r = Target_r)."""
    strategy = fake_strategy(model, epoch=3, train_epochs=6)
    plugin.before_training_exp(strategy)
    plugin.before_training_epoch(strategy)
    return strategy


def test_proximal_soft_thresholds_the_selected_factors_after_the_update():
    """Target_r 0.25 of 16 -> the 4 smallest |gamma| (0.1 .. 0.4, indices 0-3) are selected;
    lr 0.5 and lam 0.4 -> threshold 0.2: 0.1 and -0.2 go to 0, 0.3 -> 0.1, -0.4 -> -0.2."""
    model = _model()
    plugin = SSTPlugin(target_ratio=0.25, lam=0.4, proximal=True)
    strategy = _at_target(plugin, model)
    strategy.optimizer = SimpleNamespace(param_groups=[{"lr": 0.5}, {"lr": 5.0}])  # the first group's lr
    for f in (model.bn1, model.bn2):
        f.weight.grad = torch.ones_like(f.weight)
    plugin.after_backward(strategy)  # proximal: the gradient is left alone ...
    assert torch.equal(model.bn1.weight.grad, torch.ones(11)) and torch.equal(model.bn2.weight.grad, torch.ones(5))
    plugin.after_update(strategy)  # ... the step shrinks the selected factors instead
    expected = GAMMAS.clone()
    expected[:4] = torch.tensor([0.0, -0.0, 0.1, -0.2])
    assert torch.allclose(_gammas(model), expected, atol=1e-6, rtol=0)
    assert torch.equal(_gammas(model)[4:], GAMMAS[4:])


def test_the_subgradient_variant_leaves_the_update_alone():
    model = _model()
    plugin = SSTPlugin(target_ratio=0.25, lam=0.4)
    strategy = _at_target(plugin, model)
    strategy.optimizer = SimpleNamespace(param_groups=[{"lr": 0.5}])
    plugin.after_update(strategy)
    assert torch.equal(_gammas(model), GAMMAS)


def test_argument_checks_and_messages():
    assert SSTPlugin(lam=0).lam == 0.0 and SSTPlugin(cut_fraction=1).cut_fraction == 1.0
    with pytest.raises(ValueError, match=r"^lam must be >= 0, got -1$"):
        SSTPlugin(lam=-1)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=rf"^cut_fraction must be in \(0, 1\], got {bad} \(paper: 1/3\)$"):
            SSTPlugin(cut_fraction=bad)
    with pytest.raises(ValueError, match=r"^zero_tol must be >= 0, got -0.5$"):
        SSTPlugin(zero_tol=-0.5)
    with pytest.raises(ValueError, match=r"^target_ratio must be a number in the open interval"):
        SSTPlugin(target_ratio=0)
    with pytest.raises(ValueError, match=r"^SSTPlugin needs a model with BatchNorm2d layers"):
        SSTPlugin().before_training_exp(fake_strategy(nn.Sequential(nn.Conv2d(1, 2, 3))))


def test_a_fresh_plugin_has_selected_nothing_and_sits_at_eq_2s_start():
    plugin = SSTPlugin()
    assert plugin.factors == [] and plugin.masks == [] and plugin.sp_ratio == 1.0
    assert plugin.switched is False and plugin.reached_target is None


def test_the_cut_fraction_sets_e_cut():
    """cut_fraction 0.5 of 6 epochs: E_cut = 3, so SP_r = (0.3 - 1) / 3 * e + 1 = 1, 0.7667, 0.5333, 0.3."""
    model = _model()
    plugin = SSTPlugin(target_ratio=0.3, cut_fraction=0.5, zero_tol=0.0)
    strategy = fake_strategy(model, train_epochs=6)
    plugin.before_training_exp(strategy)
    ratios = []
    for epoch in range(4):
        strategy.clock.train_exp_epochs = epoch
        plugin.before_training_epoch(strategy)
        ratios.append(plugin.sp_ratio)
    assert ratios == pytest.approx([1.0, 1 - 0.7 / 3, 1 - 1.4 / 3, 0.3])


def test_each_epoch_logs_its_scalars_under_the_prefix():
    """Target_r 0.25 of 16 past E_cut: SP_r 0.25, 4 selected, the two factors at |gamma| <= 0.2 are
    2/16 'at zero' with zero_tol 0.2, target count 4."""
    model = _model()
    plugin = SSTPlugin(target_ratio=0.25, zero_tol=0.2, log_prefix="S2")
    strategy = _at_target(plugin, model)
    assert [(e.tag, e.value) for e in strategy.sst_events] == [
        ("S2/sp_ratio", 0.25), ("S2/selected", 4.0), ("S2/fraction_at_zero", 0.125), ("S2/target_count", 4.0)]


class _Recorder:
    def __init__(self):
        self.histograms, self.scalars = [], []

    def add_histogram(self, tag, values, step):
        self.histograms.append((tag, values))

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value))


def test_the_abs_gamma_histogram_goes_to_tensorboard():
    logger = TensorboardLogger.__new__(TensorboardLogger)  # no event files: a recording writer
    logger.writer = _Recorder()
    model = _model()
    plugin = SSTPlugin(target_ratio=0.25, zero_tol=0.5)
    strategy = _at_target(plugin, model)
    strategy.evaluator = SimpleNamespace(loggers=[logger])
    plugin.after_training_exp(strategy)
    [(tag, values)] = logger.writer.histograms
    assert tag == "SST/abs_gamma" and torch.equal(values, GAMMAS.abs())


def test_the_short_phase_warning_names_the_kth_gamma_and_the_iterations():
    """Target_r 0.05 of 16 -> 1 factor; none at |gamma| <= 0.01: the 1-th smallest is 0.1."""
    model = _model()
    plugin = SSTPlugin(target_ratio=0.05)
    strategy = _at_target(plugin, model)
    strategy.clock.train_exp_iterations = 7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugin.after_training_exp(strategy)
    [message] = [str(w.message) for w in caught]
    assert "short of Target_r * N = 1 (target_ratio=0.05; the 1-th smallest |gamma| is 0.1) after 7 iterations" in message


def test_a_divergent_ewc_step_is_refused_in_the_plugins_name():
    model = _model()
    ewc = EWCPlugin(ewc_lambda=1e4)
    ewc.importances = {0: {"w": torch.tensor([1.0])}}  # curvature 2 * 1e4 * 1 at lr 0.1: far past the limit
    strategy = fake_strategy(model, epoch=0, train_epochs=6)
    strategy.clock.train_exp_counter = 1
    strategy.plugins = [ewc]
    strategy.optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    plugin = SSTPlugin()
    plugin.before_training_exp(strategy)
    with pytest.raises(ValueError, match=r"^SSTPlugin: at lr=0.1 \(momentum 0.9\) SGD diverges on EWC's penalty"):
        plugin.before_training_epoch(strategy)
