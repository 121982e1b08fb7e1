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
