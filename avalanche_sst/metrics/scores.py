"""What a step is scored by, per continual-learning setting.

Every number is read from the results of Avalanche's own metrics
(``accuracy_metrics`` with ``experience``, ``stream`` and
``trained_experience``, ``forgetting_metrics``), evaluated on the whole test
stream after each step:

* same-class accumulating data: Top-1 on the whole test set;
* class-incremental: Top-1 on all classes seen so far (Avalanche's
  accuracy on trained experiences, sample-weighted), average incremental
  accuracy (the mean of that over the steps so far) and forgetting;
* task-incremental: the mean over the tasks seen so far of each task's Top-1
  (task label given), and forgetting;
* new-class ("9+1"): old-class and new-class Top-1, their plain mean and the
  sample-weighted mean (Top-1 on all classes);
* unseen-class: Top-1 on the unseen classes.

A new setting is one :func:`register_setting` call.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

# Avalanche's metric names; a key is "<name>/eval_phase/<stream>[/Task<t>[/Exp<e>]]".
STREAM_ACC = "Top1_Acc_Stream"
TRAINED_ACC = "Accuracy_On_Trained_Experiences"
STREAM_FORGETTING = "StreamForgetting"
_EXP_ACC = re.compile(r"^Top1_Acc_Exp/eval_phase/[^/]+/Task\d+/Exp(\d+)$")


def metric(results: Mapping[str, float], name: str) -> float:
    """The value of the one eval-phase key of metric ``name`` (its stream and task suffix vary)."""
    pattern = re.compile(rf"^{re.escape(name)}/eval_phase/[^/]+(/Task\d+)?$")
    keys = [k for k in results if pattern.match(k)]
    if len(keys) != 1:
        raise KeyError(f"expected one metric named {name!r}, found {keys or 'none'}; "
                       "was the stream evaluated with avalanche_sst.metrics.make_evaluator?")
    return float(results[keys[0]])


def experience_accuracies(results: Mapping[str, float]) -> dict[int, float]:
    """Top-1 of each test experience, by experience id."""
    out = {}
    for key, value in results.items():
        m = _EXP_ACC.match(key)
        if m:
            out[int(m.group(1))] = float(value)
    return out


@dataclass(frozen=True)
class StepInfo:
    """What a score may need beyond the metrics: the step (0-based), the
    scores of the earlier steps, and the size of each test experience."""

    step: int
    history: Sequence[Mapping[str, float]]
    test_sizes: Sequence[int]


@dataclass(frozen=True)
class SettingScores:
    setting: str
    primary: str  # the score of the per-step table
    description: str  # the table's header sentence names it
    names: tuple[str, ...]
    compute: Callable[[Mapping[str, float], StepInfo], dict]


SETTING_SCORES: dict[str, SettingScores] = {}


def register_setting(scores: SettingScores) -> SettingScores:
    SETTING_SCORES[scores.setting] = scores
    return scores


def step_scores(setting: str, results: Mapping[str, float], info: StepInfo) -> dict[str, float]:
    """The setting's scores (fractions in [0, 1]) after one step, primary score first."""
    try:
        spec = SETTING_SCORES[setting]
    except KeyError:
        raise ValueError(f"no scores for setting {setting!r}; known: {sorted(SETTING_SCORES)}") from None
    scores = spec.compute(results, info)
    return {name: float(scores[name]) for name in spec.names}


def _forgetting(results) -> float:
    # Avalanche emits no forgetting before a second step; nothing is forgotten yet.
    try:
        return metric(results, STREAM_FORGETTING)
    except KeyError:
        return 0.0


def _same_class(results, info: StepInfo) -> dict:
    return {"top1": metric(results, STREAM_ACC)}


def _class_incremental(results, info: StepInfo) -> dict:
    seen = metric(results, TRAINED_ACC)
    return {
        "top1_seen": seen,
        "avg_incremental": statistics.fmean([h["top1_seen"] for h in info.history] + [seen]),
        "forgetting": _forgetting(results),
    }


def _task_incremental(results, info: StepInfo) -> dict:
    per_task = experience_accuracies(results)
    seen = [per_task[j] for j in range(info.step + 1)]
    return {"mean_task_top1": statistics.fmean(seen), "forgetting": _forgetting(results)}


def _new_class(results, info: StepInfo) -> dict:
    per_exp = experience_accuracies(results)
    old, new = per_exp[0], per_exp[1]
    n_old, n_new = info.test_sizes[0], info.test_sizes[1]
    return {"weighted_mean": (old * n_old + new * n_new) / (n_old + n_new),
            "old": old, "new": new, "mean": (old + new) / 2}


def _unseen_class(results, info: StepInfo) -> dict:
    return {"top1_unseen": metric(results, STREAM_ACC)}


register_setting(SettingScores("same_class", "top1", "Top-1 accuracy (%) on the whole test set",
                               ("top1",), _same_class))
register_setting(SettingScores(
    "class_incremental", "top1_seen", "Top-1 accuracy (%) on the test images of all classes seen so far",
    ("top1_seen", "avg_incremental", "forgetting"), _class_incremental))
register_setting(SettingScores(
    "task_incremental", "mean_task_top1",
    "Mean over the tasks seen so far of each task's Top-1 accuracy (%), task label given",
    ("mean_task_top1", "forgetting"), _task_incremental))
register_setting(SettingScores(
    "new_class", "weighted_mean",
    "Top-1 accuracy (%) on all classes (the sample-weighted mean of old- and new-class accuracy)",
    ("weighted_mean", "old", "new", "mean"), _new_class))
register_setting(SettingScores("unseen_class", "top1_unseen", "Top-1 accuracy (%) on the unseen classes",
                               ("top1_unseen",), _unseen_class))
