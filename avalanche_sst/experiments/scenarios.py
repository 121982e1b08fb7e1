"""The scenarios a preset can name (``Preset.scenario``), each with the
continual-learning setting it belongs to. A new scenario is one
:func:`register_scenario` call; its arguments come from
``Preset.scenario_kwargs`` (plus the preset's ``validation_fraction``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Scenario:
    name: str
    setting: str  # a key of avalanche_sst.metrics.scores.SETTING_SCORES
    build: Callable  # build(train, test, preset, seed) -> benchmark


SCENARIOS: dict[str, Scenario] = {}


def register_scenario(scenario: Scenario) -> Scenario:
    SCENARIOS[scenario.name] = scenario
    return scenario


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose from {sorted(SCENARIOS)} "
                         "(e.g. --set scenario=class_incremental)") from None


def _same_class(train, test, preset, seed):
    from avalanche_sst.benchmarks import same_class_accumulating

    return same_class_accumulating(train, test, ratios=preset.ratios, seed=seed,
                                   validation_fraction=preset.validation_fraction,
                                   label_noise=preset.label_noise, **preset.scenario_kwargs)


def _from_module(function_name: str):
    def build(train, test, preset, seed):
        from avalanche_sst.benchmarks import scenarios

        kwargs = dict(seed=seed, validation_fraction=preset.validation_fraction)
        kwargs.update(preset.scenario_kwargs)
        return getattr(scenarios, function_name)(train, test, **kwargs)

    return build


register_scenario(Scenario("same_class", "same_class", _same_class))
register_scenario(Scenario("class_incremental", "class_incremental", _from_module("class_incremental")))
register_scenario(Scenario("task_incremental", "task_incremental", _from_module("task_incremental")))
register_scenario(Scenario("permuted", "task_incremental", _from_module("permuted")))
register_scenario(Scenario("new_class", "new_class", _from_module("new_class")))
register_scenario(Scenario("unseen_class", "unseen_class", _from_module("unseen_class")))
