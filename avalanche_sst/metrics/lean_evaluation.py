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

from functools import partial

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


_CALLBACK_PREFIXES = ("before_", "after_")


class LeanEvaluationPlugin(EvaluationPlugin):
    """``EvaluationPlugin`` that sends a callback only to the metrics and loggers that act on it.

    Avalanche's ``EvaluationPlugin.__getattribute__`` (a Python call on every
    attribute read of the plugin) exists to forward ``before_*``/``after_*``
    callbacks to the metrics. Here attribute reads are Python's own again, and
    the forwarding lives in ``__getattr__``, which runs only for a name not
    found otherwise: a callback that nobody acts on is no attribute at all, so
    Avalanche's ``trigger_plugins`` (``if hasattr(plugin, callback)``) skips
    the plugin without the call and the experience copy a call costs.
    """

    __getattribute__ = object.__getattribute__

    def __getattr__(self, item: str):
        if item.startswith(_CALLBACK_PREFIXES) and "metrics" in self.__dict__:
            metrics, logger_acts = self._acting_on(item)
            if metrics or logger_acts:
                return partial(self._forward, item)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    def _forward(self, callback: str, strategy, **kwargs):
        return self._update_metrics_and_loggers(strategy, callback)

    def _acting_on(self, callback: str) -> tuple:
        """(the metrics that act on ``callback``, whether a logger does), cached per metric and logger count."""
        acting = self.__dict__.setdefault("_acting", {})
        key = (callback, len(self.metrics), len(self.loggers))
        if key not in acting:
            metrics = [m for m in self.metrics if handles(m, callback)]
            acting[key] = (metrics, any(handles(logger, callback) for logger in self.loggers))
        return acting[key]

    def _update_metrics_and_loggers(self, strategy, callback: str):
        metrics, logger_acts = self._acting_on(callback)
        if not metrics and not logger_acts:
            return []
        every_metric = self.metrics
        self.metrics = metrics
        try:
            return super()._update_metrics_and_loggers(strategy, callback)
        finally:
            self.metrics = every_metric
