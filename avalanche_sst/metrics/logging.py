"""Evaluation set-up and method-specific scalars.

Accuracy and loss go through Avalanche's ``EvaluationPlugin`` (epoch,
experience and stream level; no per-iteration metrics or progress bars).
TensorBoard puts every method's evaluation scalars on one shared x-axis, the
step (the number of finished training experiences), and again under
``by_cost/<tag>`` against the cumulative training cost in sample-passes
(:mod:`avalanche_sst.metrics.cost`), so runs of different methods line up
(Avalanche's own axis, the strategy's training iterations, stays at 0 for a
strategy that trains in inner phases). :class:`LearningRateLogger` adds the
learning rate of every phase, ``lr/<phase>``, on the cost axis.
Method plugins log their own scalars (SP_r, loss terms, teacher updates) with
:func:`log_scalar`, which writes to every ``TensorboardLogger`` of the
strategy's evaluator and records the event in ``strategy.sst_events`` so
tests and tables can read the phase order without parsing event files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics
from avalanche.logging import CSVLogger, TensorboardLogger, TextLogger
from avalanche.training.plugins import EvaluationPlugin

from .device_accuracy import device_metrics
from .lean_evaluation import LeanEvaluationPlugin


@dataclass
class EventLog:
    tag: str
    value: float
    step: int


#: Prefix of the TensorBoard tags that repeat the evaluation scalars against cumulative training cost.
COST_AXIS_PREFIX = "by_cost/"


def cumulative_cost(strategy) -> Optional[float]:
    """Training sample-passes so far (finished steps plus the running one), from the run's
    first :class:`~avalanche_sst.metrics.cost.CostMeter`; ``None`` without one."""
    from avalanche_sst.metrics.cost import meters_of  # here: cost imports this module

    meters = meters_of(log_root(strategy)) or meters_of(strategy)
    if not meters:
        return None
    return float(sum(meters[0].step_costs)) + meters[0].current


class StepAxisTensorboardLogger(TensorboardLogger):
    """Avalanche's TensorBoard logger with evaluation scalars on the shared axes.

    Each evaluation-phase value is logged at x = the number of finished training
    experiences (``clock.train_exp_counter``: 1 after the first step) and, when the
    strategy has a cost meter, again as ``by_cost/<tag>`` at x = cumulative sample-passes
    (rounded to an int, as TensorBoard steps are ints). Training-phase values keep
    Avalanche's x (training iterations).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._eval_step: Optional[int] = None
        self._eval_cost: Optional[int] = None

    def before_eval(self, strategy, metric_values, **kwargs):  # Avalanche calls a logger's callbacks by name
        self._eval_step = int(log_root(strategy).clock.train_exp_counter)
        cost = cumulative_cost(strategy)
        self._eval_cost = None if cost is None else int(round(cost))

    def log_single_metric(self, name, value, x_plot):
        if "/eval_phase/" not in name or self._eval_step is None:
            return super().log_single_metric(name, value, x_plot)
        super().log_single_metric(name, value, self._eval_step)
        if self._eval_cost is not None and isinstance(value, (int, float)):
            super().log_single_metric(COST_AXIS_PREFIX + name, value, self._eval_cost)


class LearningRateLogger(SupervisedPlugin):
    """Logs ``lr/<phase>`` (the first parameter group's rate) at every training epoch's
    start, at x = cumulative sample-passes: the rate every phase of every method trained
    with, on one axis (phases named by :func:`phase_name`). ``propagate_to_phases``:
    composite strategies hand it to their inner phase strategies, where the epochs run."""

    propagate_to_phases = True

    def before_training_epoch(self, strategy, **kwargs):
        optimizer = getattr(strategy, "optimizer", None)
        if optimizer is None or not optimizer.param_groups:
            return
        cost = cumulative_cost(strategy)
        step = int(round(cost)) if cost is not None else None
        log_scalar(strategy, f"lr/{phase_name(strategy)}", float(optimizer.param_groups[0]["lr"]), step)


def make_evaluator(log_dir: Optional[str | Path] = None, text: bool = False,
                   resume_logs: Optional[dict] = None) -> EvaluationPlugin:
    """Accuracy and loss at epoch, experience and stream level, accuracy on the
    experiences trained so far, and stream forgetting (the scores of every
    setting, :mod:`avalanche_sst.metrics.scores`, read these).

    With ``log_dir``, TensorBoard event files go to ``log_dir/tb`` (evaluation scalars on
    the shared axes, :class:`StepAxisTensorboardLogger`) and Avalanche's CSV logs to
    ``log_dir/csv``; ``text`` adds a plain text log. ``resume_logs`` (what
    :func:`~avalanche_sst.metrics.resume.log_sizes` recorded at a checkpoint) continues the
    files of an interrupted run: what was written after that checkpoint is cut off first.
    """
    loggers = []
    if log_dir is not None:
        from avalanche_sst.metrics.resume import ResumableCSVLogger, trim_event_files

        log_dir = Path(log_dir)
        if resume_logs is not None:
            trim_event_files(log_dir / "tb", resume_logs.get("tb", {}))
        loggers.append(StepAxisTensorboardLogger(tb_log_dir=str(log_dir / "tb")))
        loggers.append(ResumableCSVLogger(log_folder=str(log_dir / "csv"),
                                          keep=None if resume_logs is None else resume_logs.get("csv", {})))
    if text:
        loggers.append(TextLogger())
    return LeanEvaluationPlugin(
        # Accumulated on the device, read once per epoch/experience/stream: no host sync per iteration.
        device_metrics(accuracy_metrics(epoch=True, experience=True, stream=True, trained_experience=True)),
        device_metrics(loss_metrics(epoch=True, experience=True, stream=True)),
        device_metrics(forgetting_metrics(stream=True)),
        loggers=loggers,
    )


def _tensorboard_writers(strategy):
    evaluator = getattr(strategy, "evaluator", None)
    for logger in getattr(evaluator, "loggers", []) or []:
        if isinstance(logger, TensorboardLogger):
            yield logger.writer


def log_root(strategy):
    """The strategy whose loggers receive the scalars.

    A composite strategy (``MultiStepSST``) runs its phases as inner
    strategies whose ``sst_parent`` points to it, so every phase logs into
    the one run the user sees.
    """
    while getattr(strategy, "sst_parent", None) is not None:
        strategy = strategy.sst_parent
    return strategy


def phase_name(strategy) -> str:
    """``train`` for a plain strategy; the current phase of a composite one (e.g. ``sst``, ``aod``).

    ``MultiStepSST`` runs each phase as an inner strategy whose ``sst_parent`` is the
    strategy the sweep built, and records the phases in ``phase_history``.
    """
    root = log_root(strategy)
    if root is not strategy:
        history = getattr(root, "phase_history", None)
        return str(history[-1][1]) if history else type(strategy).__name__
    return "eval" if not getattr(strategy, "is_training", True) else "train"


def default_step(strategy) -> int:
    """A monotonic x-axis: the root's phase-epoch counter, else its iterations."""
    root = log_root(strategy)
    if hasattr(root, "sst_epoch_counter"):
        return int(root.sst_epoch_counter)
    return int(strategy.clock.train_iterations)


def log_scalar(strategy, tag: str, value: float, step: Optional[int] = None) -> None:
    """Log a method scalar to TensorBoard and to ``root.sst_events``."""
    value = float(value)
    root = log_root(strategy)
    if step is None:
        step = default_step(strategy)
    if not hasattr(root, "sst_events"):
        root.sst_events = []
    root.sst_events.append(EventLog(tag, value, step))
    for writer in _tensorboard_writers(root):
        writer.add_scalar(tag, value, step)


def log_histogram(strategy, tag: str, values: torch.Tensor, step: Optional[int] = None) -> None:
    """Log a histogram (e.g. |gamma| after sparsity training, the paper's Fig. 3)."""
    if step is None:
        step = default_step(strategy)
    for writer in _tensorboard_writers(log_root(strategy)):
        writer.add_histogram(tag, values.detach().cpu(), step)
