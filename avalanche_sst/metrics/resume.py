"""What an evaluator must keep across an interruption, in plain types for a ``weights_only`` checkpoint.

A resumed run must score and log as if it had never stopped. Two things live
outside the model and the method's state:

* the metrics' memory: Avalanche's forgetting keeps each experience's accuracy
  right after it was trained (``Forgetting.initial``), and the accuracy on
  trained experiences keeps the last trained experience. Without them,
  forgetting after a resume compares against nothing and reads 0.
* the log files: Avalanche's ``CSVLogger`` truncates its files when it is built,
  and TensorBoard's writer starts a new event file. :func:`log_sizes` records
  each file's length at a checkpoint; on resume, :func:`trim_event_files` and
  :class:`ResumableCSVLogger` cut every file back to that length (dropping what
  the interrupted step had written after it) and continue from there, so every
  row and every (tag, step) scalar appears exactly once.

Avalanche's own checkpointing (``avalanche.training.checkpoint``) dill-pickles
the whole strategy, which ``torch.load(weights_only=True)`` refuses by design;
this module saves the few values that matter instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from avalanche.evaluation.metrics.forgetting_bwt import Forgetting
from avalanche.logging import CSVLogger, TensorboardLogger

# Integer attributes of Avalanche's metrics that carry over from one step to the next
# (TrainedExperienceAccuracy, GenericExperienceForgetting).
_INT_ATTRIBUTES = ("_current_experience", "train_exp_id")

EVENT_FILE_PREFIX = "events.out.tfevents."


def metric_state_dict(evaluator) -> list[dict]:
    """Per metric of ``evaluator`` (in order): its type name, forgetting's initial values, its counters."""
    states = []
    for metric in evaluator.metrics:
        state: dict = {"type": type(metric).__name__}
        forgetting = getattr(metric, "forgetting", None)
        if isinstance(forgetting, Forgetting):
            state["initial"] = {int(k): float(v) for k, v in forgetting.initial.items()}
        for name in _INT_ATTRIBUTES:
            value = getattr(metric, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                state[name] = value
        states.append(state)
    return states


def load_metric_state_dict(evaluator, states: list[dict]) -> None:
    """Restore what :func:`metric_state_dict` saved into an evaluator built with the same metrics."""
    types = [type(m).__name__ for m in evaluator.metrics]
    saved = [s["type"] for s in states]
    if types != saved:
        raise ValueError(f"the checkpoint's evaluator had the metrics {saved}, this one has {types}; "
                         "resume with the evaluator the run started with (make_evaluator)")
    for metric, state in zip(evaluator.metrics, states):
        if "initial" in state:
            metric.forgetting.initial = {int(k): float(v) for k, v in state["initial"].items()}
        for name in _INT_ATTRIBUTES:
            if name in state:
                setattr(metric, name, int(state[name]))


def _log_folders(evaluator) -> dict[str, Path]:
    folders = {}
    for logger in getattr(evaluator, "loggers", []) or []:
        if isinstance(logger, TensorboardLogger):
            logger.writer.flush()  # every event so far on disk: the recorded length ends at a record boundary
            folders["tb"] = Path(logger.writer.log_dir)
        elif isinstance(logger, CSVLogger):
            logger.training_file.flush()
            logger.eval_file.flush()
            folders["csv"] = Path(logger.log_folder)
    return folders


def log_sizes(evaluator) -> dict[str, dict[str, int]]:
    """``{"tb": {file: bytes}, "csv": {file: bytes}}``: the evaluator's log files as they are now
    (flushed first). Each run folder has one writer at a time (the sweep's per-run lock)."""
    return {kind: {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
            for kind, folder in _log_folders(evaluator).items()}


def trim_event_files(tb_dir: os.PathLike | str, sizes: dict[str, int]) -> None:
    """Cut ``tb_dir``'s event files back to the recorded ``sizes``; delete those written later."""
    tb_dir = Path(tb_dir)
    if not tb_dir.is_dir():
        return
    for path in tb_dir.iterdir():
        if not path.name.startswith(EVENT_FILE_PREFIX):
            continue
        if path.name not in sizes:
            path.unlink()
        elif path.stat().st_size > sizes[path.name]:
            os.truncate(path, sizes[path.name])


class ResumableCSVLogger(CSVLogger):
    """Avalanche's ``CSVLogger``; with ``keep`` (``{file name: bytes}`` from :func:`log_sizes`) it
    continues the files of an interrupted run: their first ``keep[name]`` bytes stay, the rest
    (rows of the step that did not finish) is dropped."""

    def __init__(self, log_folder=None, keep: Optional[dict[str, int]] = None):
        folder = Path(log_folder if log_folder is not None else "csvlogs")
        kept = {}
        for name, size in (keep or {}).items():
            if (folder / name).is_file():
                kept[name] = (folder / name).read_bytes()[:size]
        super().__init__(log_folder)  # opens the files with "w" and writes the headers
        for handle in (self.training_file, self.eval_file):
            name = Path(handle.name).name
            if name in kept:
                handle.seek(0)
                handle.truncate()
                handle.write(kept[name].decode())
                handle.flush()
