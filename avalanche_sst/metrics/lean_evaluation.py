"""Avalanche's ``EvaluationPlugin`` without the dispatch of callbacks nobody handles.

``EvaluationPlugin`` forwards every ``before_*``/``after_*`` callback to every
metric and logger, and for each one first copies the current experience
(``experience.logging()``). A training iteration fires eight callbacks, each
sent to the ten default metrics; only the two training-epoch metrics act,
in one of them (``after_training_iteration``). The other calls and copies
are pure overhead, a noticeable part of an iteration on a small model.

:class:`LeanEvaluationPlugin` sends a callback only to the metrics that act
on it, and skips it when none does and no logger implements it. A metric
does not act when its method is the empty one of Avalanche's base plugin
classes, or is ``GenericPluginMetric``'s iteration callback of the other
phase (an eval metric in a training iteration: it only checks its mode and
returns). Nothing could be emitted or logged in the skipped calls, so the
results are the same.
"""

from __future__ import annotations

from avalanche.core import BasePlugin, BaseSGDPlugin, SupervisedPlugin
from avalanche.evaluation.metric_definitions import GenericPluginMetric, PluginMetric
from avalanche.training.plugins import EvaluationPlugin

# Classes whose callback methods are all empty (``pass``).
_EMPTY_CALLBACK_OWNERS = (BasePlugin, BaseSGDPlugin, SupervisedPlugin, PluginMetric)


# GenericPluginMetric's iteration callbacks: (the mode they act in, whether only with reset_at="iteration").
_ITERATION_CALLBACKS = {
    "before_training_iteration": ("train", True),
    "after_training_iteration": ("train", False),
    "before_eval_iteration": ("eval", True),
    "after_eval_iteration": ("eval", False),
}


def handles(obj, callback: str) -> bool:
    """Whether calling ``obj.<callback>`` can do anything (see the module docstring)."""
    for cls in type(obj).__mro__:
        if callback in cls.__dict__:
            if cls in _EMPTY_CALLBACK_OWNERS:
                return False
            if cls is GenericPluginMetric and callback in _ITERATION_CALLBACKS:
                mode, only_per_iteration_reset = _ITERATION_CALLBACKS[callback]
                return obj._mode == mode and (not only_per_iteration_reset or obj._reset_at == "iteration")
            return True
    return False


class LeanEvaluationPlugin(EvaluationPlugin):
    """``EvaluationPlugin`` that sends a callback only to the metrics and loggers that act on it."""

    def _update_metrics_and_loggers(self, strategy, callback: str):
        acting = self.__dict__.setdefault("_acting", {})
        key = (callback, len(self.metrics), len(self.loggers))
        if key not in acting:
            metrics = [m for m in self.metrics if handles(m, callback)]
            acting[key] = (metrics, any(handles(logger, callback) for logger in self.loggers))
        metrics, logger_acts = acting[key]
        if not metrics and not logger_acts:
            return []
        every_metric = self.metrics
        self.metrics = metrics
        try:
            return super()._update_metrics_and_loggers(strategy, callback)
        finally:
            self.metrics = every_metric
