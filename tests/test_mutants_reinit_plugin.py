"""Tests that kill the mutation survivors of plugins/reinit (docs/testing.md): its argument
checks and messages, the default seed and a generator that runs on across experiences, a given
zero_tol, the scope reaching eq. 4, the logged range and the once-only warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from avalanche_sst.plugins import ReinitPlugin, SSTPlugin
from test_sst_framework import fake_strategy
from test_sst_options import LAYER1, LAYER2, TwoLayers

torch.set_num_threads(1)


def _model(layer2: torch.Tensor = LAYER2) -> TwoLayers:
    """16 factors: layer 1 at 0.1 .. 1.1, layer 2 at 0 .. 0.04 (Target_r 0.3: its five are the useless)."""
    model = TwoLayers()
    with torch.no_grad():
        model.bn1.weight.copy_(LAYER1)
        model.bn2.weight.copy_(layer2)
    return model


def _later(model):
    strategy = fake_strategy(model)
    strategy.clock.train_exp_counter = 1  # not the first experience: the plugin acts
    return strategy


def _events(strategy, tag: str) -> list[float]:
    return [e.value for e in strategy.sst_events if e.tag == tag]


def test_initial_state_and_argument_messages():
    plugin = ReinitPlugin()
    assert plugin.last_masks == [] and plugin.last_range is None
    assert ReinitPlugin(zero_tol=0).zero_tol == 0 and ReinitPlugin(zero_tol=0.5).zero_tol == 0.5
    with pytest.raises(ValueError, match=r"^zero_tol must be >= 0 or None \(the SSTPlugin's\), got -1$"):
        ReinitPlugin(zero_tol=-1)
    with pytest.raises(ValueError, match=r"^zero_tol must be a real number, got 'a' \(str\)$"):
        ReinitPlugin(zero_tol="a")
    with pytest.raises(ValueError, match=r"^only_freed must be True or False, got 'yes'$"):
        ReinitPlugin(only_freed="yes")
    with pytest.raises(ValueError, match=r"^target_ratio must be a number in the open interval \(0, 1\)"):
        ReinitPlugin(target_ratio=1.5)


def test_default_seed_is_0_and_the_generator_runs_on_across_experiences():
    def draws(plugin, times=1):
        out = []
        for _ in range(times):
            model = _model()
            plugin.before_training_exp(_later(model))
            out.append(model.bn2.weight.detach().clone())
        return out

    default = draws(ReinitPlugin(only_freed=False), times=2)
    assert torch.equal(default[0], draws(ReinitPlugin(seed=0, only_freed=False))[0])
    assert not torch.equal(default[0], draws(ReinitPlugin(seed=1, only_freed=False))[0])
    # the next experience draws on from the plugin's generator: other values from the same gammas
    assert not torch.equal(default[0], default[1])
    assert torch.equal(default[1], draws(ReinitPlugin(seed=0, only_freed=False), times=2)[1])


def test_a_given_zero_tol_is_the_plugins_own():
    """Layer 2 at 0.04, 0, 0.03, 0.01, 0.02: zero_tol 0.025 frees three (0, 0.01, 0.02), where the
    SSTPlugin's 0 would free one and the default 0.01 two."""
    model = _model()
    strategy = _later(model)
    strategy.plugins = [SSTPlugin(zero_tol=0.0)]
    plugin = ReinitPlugin(zero_tol=0.025)
    with pytest.warns(UserWarning, match=r"only 3 of the 5 useless .*zero_tol=0.025\)"):
        plugin.before_training_exp(strategy)
    assert plugin.last_masks[1].tolist() == [False, True, False, True, True]
    assert _events(strategy, "Reinit/count") == [3] and _events(strategy, "Reinit/kept_live") == [2]
    after = model.bn2.weight.detach()
    assert after[0] == LAYER2[0] and after[2] == LAYER2[2]


@pytest.mark.parametrize("scope, expected", [("global", (0.2, 0.95)), ("layer", (0.016, 0.036))])
def test_the_scope_reaches_eq_4_and_the_range_is_logged(scope, expected):
    """Hand ranges of test_sst_options: all 16 factors' 0.4 and 0.9 quantiles (global), layer 2's
    own (layer)."""
    model = _model()
    strategy = _later(model)
    plugin = ReinitPlugin(scope=scope, only_freed=False)
    plugin.before_training_exp(strategy)
    assert plugin.last_range == pytest.approx(expected)
    assert _events(strategy, "Reinit/low") == [plugin.last_range[0]]
    assert _events(strategy, "Reinit/high") == [plugin.last_range[1]]
    assert ((model.bn2.weight >= expected[0] - 1e-7) & (model.bn2.weight <= expected[1] + 1e-7)).all()


def test_live_filters_warn_once():
    """Layer 2 all live (0.5): each experience keeps them and logs it; one warning."""
    plugin = ReinitPlugin()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            strategy = _later(_model(torch.full((5,), 0.5)))
            plugin.before_training_exp(strategy)
            assert _events(strategy, "Reinit/kept_live") == [5]
    assert len(caught) == 1 and str(caught[0].message).startswith("ReinitPlugin: before experience 1 only 0 of the 5")
