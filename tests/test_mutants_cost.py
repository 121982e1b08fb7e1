"""metrics/cost: survivors of its (partial) mutation run — a checkpoint saved before cost
accounting (no cost keys) loads as no steps and leaves the meter outside any experience."""

from __future__ import annotations

import pytest

from avalanche_sst.metrics.cost import CostMeter


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
