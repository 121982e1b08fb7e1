"""Per-group accuracy and prediction shares in class-incremental learning.

A class-incremental run learns its classes in groups, one group per step.
Its accuracy on all classes seen so far hides *where* the errors go: a method
may keep the old groups' units strong and never learn the new group, or
(more often without exemplars) predict the newest group for almost every
image. Two numbers per group tell them apart, after each step, over the
evaluated images of every class seen so far:

* ``group_acc_<g>``: Top-1 on the images of group ``g``'s classes;
* ``group_share_<g>``: the share of those images predicted as one of group
  ``g``'s classes (the shares of the seen groups plus
  ``group_share_unseen``, predictions of a class not yet trained, sum to 1).

Groups are numbered from 1 in the order of the evaluated stream's experiences
(experience ``k`` of a class-incremental test stream holds step ``k``'s
classes). :func:`group_scores` is the math; :class:`ClassGroupPredictions` is
the Avalanche plugin that collects an evaluation's predictions and logs the
numbers to TensorBoard (``groups/<name>``, at x = steps trained); the sweep
keeps them with each step's scores (``runs.csv``, ``done.json``).
"""

from __future__ import annotations

from typing import Mapping

import torch
from avalanche.core import SupervisedPlugin

from .logging import log_scalar

__all__ = ["ClassGroupPredictions", "group_columns", "group_scores"]

UNSEEN = "group_share_unseen"


def group_scores(predictions: torch.Tensor, targets: torch.Tensor, class_group: Mapping[int, int],
                 seen_groups: int) -> dict[str, float]:
    """Accuracy on each seen group's images and the share of predictions falling in each group.

    :param predictions, targets: predicted and true class of each evaluated image (1-D, equal length).
    :param class_group: class -> its group (0-based: the step that learns it).
    :param seen_groups: groups trained so far; images of later groups are left out.
    :return: ``group_acc_<g>`` and ``group_share_<g>`` for g = 1..seen_groups, and
        ``group_share_unseen``; fractions in [0, 1].
    """
    if predictions.shape != targets.shape or predictions.dim() != 1:
        raise ValueError(f"predictions and targets must be 1-D of one length, got shapes "
                         f"{tuple(predictions.shape)} and {tuple(targets.shape)}")
    if seen_groups < 1:
        raise ValueError(f"seen_groups must be >= 1 (a step was trained), got seen_groups={seen_groups}")
    missing = sorted({int(t) for t in targets.unique()} - set(class_group))
    if missing:
        raise ValueError(f"targets {missing} have no group in class_group {dict(class_group)}")
    size = max(max(class_group) + 1, int(predictions.max()) + 1 if predictions.numel() else 0)
    lookup = torch.full((size,), -1, dtype=torch.long)  # -1: a class of no evaluated group
    for cls, group in class_group.items():
        lookup[cls] = group
    true_group = lookup[targets.long()]
    kept = true_group < seen_groups
    predicted_group = lookup[predictions.long()][kept]
    true_group, correct = true_group[kept], (predictions == targets)[kept]
    total = int(kept.sum())
    out: dict[str, float] = {}
    for g in range(seen_groups):
        members = true_group == g
        out[f"group_acc_{g + 1}"] = float(correct[members].float().mean()) if members.any() else float("nan")
    for g in range(seen_groups):
        out[f"group_share_{g + 1}"] = float((predicted_group == g).sum()) / total if total else float("nan")
    seen = (predicted_group >= 0) & (predicted_group < seen_groups)
    out[UNSEEN] = float((~seen).sum()) / total if total else float("nan")
    return out


def group_columns(keys) -> list[str]:
    """The group score names among ``keys``, in column order: accuracies by group, shares by group, unseen."""
    def order(key: str):
        kind, _, group = key.rpartition("_")
        return (kind != "group_acc", group == "unseen", int(group) if group.isdigit() else 0)

    return sorted({k for k in keys if k.startswith(("group_acc_", "group_share_"))}, key=order)


class ClassGroupPredictions(SupervisedPlugin):
    """Collects each evaluation's predictions and computes :func:`group_scores` for it.

    Groups come from the evaluated stream itself (experience ``k``'s classes are group
    ``k``); the groups seen are the experiences trained so far (``clock.train_exp_counter``).
    After every evaluation ``last`` holds the scores (empty when nothing was trained yet)
    and each is logged to TensorBoard as ``groups/<name>``.
    """

    def __init__(self):
        super().__init__()
        self.last: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        self._predictions: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._class_group: dict[int, int] = {}

    def before_eval(self, strategy, *args, **kwargs):
        self._reset()

    def before_eval_exp(self, strategy, *args, **kwargs):
        experience = strategy.experience
        for cls in experience.classes_in_this_experience:
            self._class_group.setdefault(int(cls), int(experience.current_experience))

    def after_eval_iteration(self, strategy, *args, **kwargs):
        self._predictions.append(strategy.mb_output.detach().argmax(dim=1).cpu())
        self._targets.append(strategy.mb_y.detach().cpu())

    def after_eval(self, strategy, *args, **kwargs):
        seen = int(strategy.clock.train_exp_counter)
        if seen < 1 or not self._predictions:
            self.last = {}
            return
        self.last = group_scores(torch.cat(self._predictions), torch.cat(self._targets), self._class_group, seen)
        for name, value in self.last.items():
            log_scalar(strategy, f"groups/{name}", value, seen)
        self._reset()
