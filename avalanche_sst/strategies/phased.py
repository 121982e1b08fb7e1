"""Strategies whose experiences run as a sequence of inner phase strategies.

``MultiStepSST`` (scratch / SST / AOD / SST + MSL) and ``EdgeStrategy``
(teacher / student / incremental step) train each experience as several
inner Avalanche strategies. They share the outer training loop and the
evaluator of their phases, which logs through the outer strategy
(``log_scalar`` follows ``sst_parent``) and so has no loggers of its own.
"""

from __future__ import annotations

import warnings

from avalanche.benchmarks.scenarios.generic_scenario import CLExperience
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import trigger_plugins


def phase_evaluator() -> EvaluationPlugin:
    """An evaluator without loggers, minus Avalanche's warning that it has none."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin(loggers=[])


def propagated_plugins(strategy) -> list:
    """The outer strategy's plugins that also reach every phase (e.g. the cost meter, progress bars)."""
    return [p for p in strategy.plugins if getattr(p, "propagate_to_phases", False)]


class PhasedStrategy(SupervisedTemplate):
    """A ``SupervisedTemplate`` whose ``_train_step(exp)`` trains one experience by phases."""

    def train(self, experiences, eval_streams=None, **kwargs):
        if isinstance(experiences, CLExperience):
            experiences = [experiences]
        self.is_training = True
        self.model.train()
        trigger_plugins(self, "before_training")
        for exp in experiences:
            self._train_step(exp)
        trigger_plugins(self, "after_training")
        self.is_training = False
        return self.evaluator.get_last_metrics()

    def _train_step(self, exp: CLExperience) -> None:  # pragma: no cover - each strategy defines it
        raise NotImplementedError
