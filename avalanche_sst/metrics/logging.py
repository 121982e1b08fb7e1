"""Evaluation set-up and method-specific scalars.

Accuracy and loss go through Avalanche's ``EvaluationPlugin`` (epoch,
experience and stream level; no per-iteration metrics or progress bars).
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


def make_evaluator(log_dir: Optional[str | Path] = None, text: bool = False) -> EvaluationPlugin:
    """Accuracy and loss at epoch, experience and stream level, accuracy on the
    experiences trained so far, and stream forgetting (the scores of every
    setting, :mod:`avalanche_sst.metrics.scores`, read these).

    With ``log_dir``, TensorBoard event files go to ``log_dir/tb`` and
    Avalanche's CSV logs to ``log_dir/csv``; ``text`` adds a plain text log.
    """
    loggers = []
    if log_dir is not None:
        log_dir = Path(log_dir)
        loggers.append(TensorboardLogger(tb_log_dir=str(log_dir / "tb")))
        loggers.append(CSVLogger(log_folder=str(log_dir / "csv")))
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
