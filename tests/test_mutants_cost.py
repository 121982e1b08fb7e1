"""metrics/cost: survivors of its (partial) mutation run — a checkpoint saved before cost
accounting (no cost keys) loads as no steps and leaves the meter outside any experience."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EWCPlugin, LwFPlugin, RWalkPlugin

from avalanche_sst.metrics.cost import (
    FORWARD_COST,
    TRAIN_COST,
    CostMeter,
    charge,
    meters_of,
    passes_per_sample,
)


def test_a_state_without_cost_keys_loads_as_no_steps_outside_an_experience():
    meter = CostMeter()
    meter.load_state_dict({"step_costs": [3, 4.5], "step_breakdown": [{"train": 3}, {"train": 4, "teacher": 0.5}]})
    assert meter.step_costs == [3.0, 4.5] and meter.step_breakdown == [{"train": 3.0}, {"train": 4.0, "teacher": 0.5}]
    meter.load_state_dict({})
    assert meter.step_costs == [] and meter.step_breakdown == []
    assert meter.current == 0.0
    with pytest.warns(UserWarning, match="cost reported outside a training experience is not counted"):
        meter.add(5.0)
    assert meter.current == 0.0 and meter.state_dict() == {"step_costs": [], "step_breakdown": []}


def test_cost_outside_an_experience_warns_once_and_zero_or_fractions_are_accepted():
    import warnings

    meter = CostMeter()
    assert meter.current == 0.0  # a fresh meter is outside any experience
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meter.add(0.0)
        meter.add(0.5, "teacher")
        meter.add(2.0)
    assert [str(w.message) for w in caught] == ["CostMeter: cost reported outside a training experience is not counted"]
    assert meter.current == 0.0 and meter.step_costs == []
    with pytest.raises(ValueError, match="^sample_passes must be >= 0, got -1.0$"):
        meter.add(-1.0)


# ------------------------------------------------------------------ what each plugin adds, by hand
class _PerBatchTeacher(SupervisedPlugin):
    """A plugin whose teacher cost depends on the strategy (the documented protocol passes it)."""

    def extra_passes_per_sample(self, strategy) -> float:
        return FORWARD_COST * strategy.teachers_now


def test_passes_per_sample_by_hand_for_each_recognised_plugin():
    from avalanche.models import MTSimpleMLP

    s = SimpleNamespace(plugins=[_PerBatchTeacher()], teachers_now=2)
    assert passes_per_sample(s) == (TRAIN_COST, 2 * FORWARD_COST)  # the plugin reads the strategy it is given
    rwalk = RWalkPlugin()  # one forward + backward of every mini-batch: training cost, not a teacher
    assert passes_per_sample(SimpleNamespace(plugins=[rwalk])) == (2.0, 0.0)
    lwf = LwFPlugin()
    assert passes_per_sample(SimpleNamespace(plugins=[lwf])) == (1.0, 0.0)  # no previous model yet
    lwf.lwf.prev_model = torch.nn.Linear(2, 2)
    assert passes_per_sample(SimpleNamespace(plugins=[lwf])) == (1.0, FORWARD_COST)
    lwf.lwf.prev_model = MTSimpleMLP()  # LwF runs a multi-task current model a second time
    assert passes_per_sample(SimpleNamespace(plugins=[lwf])) == (2.0, FORWARD_COST)
    bare = SimpleNamespace()  # a strategy without plugins: plain training, no meter to charge
    assert passes_per_sample(bare) == (TRAIN_COST, 0.0) and meters_of(bare) == []
    charge(bare, 3.0)


def test_ewc_importances_are_charged_as_importance_once_per_experience():
    meter = CostMeter()
    s = SimpleNamespace(plugins=[EWCPlugin(ewc_lambda=1.0), meter], experience=SimpleNamespace(dataset=[0] * 7),
                        clock=SimpleNamespace(train_iterations=0))
    meter.before_training_exp(s)
    meter.after_training_exp(s)
    assert meter.step_breakdown == [{"train": 0.0, "teacher": 0.0, "valid": 0.0, "importance": 7 * TRAIN_COST}]
    assert meter.step_costs == [7.0] and [(e.tag, e.value) for e in s.sst_events] == [("cost/sample_passes", 7.0)]
