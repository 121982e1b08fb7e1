"""Selective layer-wise knowledge transfer from a cloud teacher to an edge student.

Zhao, Chen & Zhao, "Enabling Deep Learning on Edge Devices through Filter
Pruning and Knowledge Transfer", sec. 4.1 (incremental learning of new data)
and sec. 4.2 (unseen classes from unlabelled images). The math lives in
:mod:`avalanche_sst.functional.edge_transfer`; this plugin wires it into Avalanche:

* the teacher is frozen and in eval mode; each training mini-batch goes
  through it with hooks on its blocks;
* the strategy's loss is replaced by ``l1*J1 + l2*sum_b J_b + l3*J3``
  (``J1 + sum_b J_b`` with ``use_labels=False``: labels are never read);
* with ``train_only_last_convs`` (the paper's rule) only the last conv of
  each group and the classifier learn: every other parameter has
  ``requires_grad=False`` and is taken out of the optimizer for the
  experience, so momentum and weight decay cannot move it either, and
  every BatchNorm runs in eval mode (running statistics frozen);
* every term and the chosen block pairs are logged with ``log_scalar``.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from avalanche_sst.functional.edge_transfer import BlockPair, edge_kt_loss
from avalanche_sst.metrics import log_scalar
from avalanche_sst.metrics.cost import FORWARD_COST
from avalanche_sst.models.introspection import capture_block_outputs, classifier
from avalanche_sst.models.student import group_last_convs, residual_groups

__all__ = ["EdgeKTPlugin", "LastConvsOnlyPlugin", "edge_trainable_parameters"]


def edge_trainable_parameters(student: nn.Module) -> list[nn.Parameter]:
    """The last conv of each group and the classifier: what the incremental step updates."""
    modules = [*group_last_convs(student), classifier(student)]
    return [p for m in modules for p in m.parameters()]


def _split(flat: list[torch.Tensor], sizes: list[int]) -> list[list[torch.Tensor]]:
    out, start = [], 0
    for n in sizes:
        out.append(flat[start : start + n])
        start += n
    return out


class LastConvsOnlyPlugin(SupervisedPlugin):
    """Sec. 4.1's update rule: only the last conv of each group and the classifier learn.

    For one experience every other parameter gets ``requires_grad=False``
    and leaves the optimizer (momentum and weight decay cannot move it), and
    every BatchNorm runs in eval mode (running statistics frozen). All is
    restored after the experience.
    """

    def __init__(self) -> None:
        super().__init__()
        self._saved_requires_grad: dict[nn.Parameter, bool] = {}
        self._saved_groups: list[list] = []

    def before_training_exp(self, strategy, **kwargs):
        trainable = {id(p) for p in edge_trainable_parameters(strategy.model)}
        self._saved_requires_grad = {p: p.requires_grad for p in strategy.model.parameters()}
        for p in strategy.model.parameters():
            p.requires_grad_(id(p) in trainable)
            if id(p) not in trainable:
                p.grad = None
        optimizer = strategy.optimizer
        self._saved_groups = [list(g["params"]) for g in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) in trainable]
        for p in list(optimizer.state):
            if id(p) not in trainable:
                del optimizer.state[p]
        self._freeze_batchnorm(strategy)

    @staticmethod
    def _freeze_batchnorm(strategy) -> None:
        for m in strategy.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    # Avalanche switches the model to train mode at train() and after periodic evaluation.
    def before_training_epoch(self, strategy, **kwargs):
        self._freeze_batchnorm(strategy)

    def before_training_iteration(self, strategy, **kwargs):
        self._freeze_batchnorm(strategy)

    def after_training_exp(self, strategy, **kwargs):
        for group, params in zip(strategy.optimizer.param_groups, self._saved_groups):
            group["params"] = params
        for p, flag in self._saved_requires_grad.items():
            p.requires_grad_(flag)
        self._saved_groups, self._saved_requires_grad = [], {}


class EdgeKTPlugin(SupervisedPlugin):
    """Knowledge transfer from ``teacher`` to the strategy's model (the student).

    :param teacher: the trained cloud model (``resnet_cifar``/``wide_resnet``);
        the student must have the same groups and no block wider than the
        teacher's in its group.
    :param l1, l2, l3: weights of J1, sum_b J_b and J3 (paper: all 1).
    :param use_labels: False for sec. 4.2 (unseen classes): J3 is dropped
        and the mini-batch labels are never read.
    :param teacher_classes: the label ids the teacher knows (its logits and
        the student's are compared there); default: its first outputs.
    :param train_only_last_convs: update only the last conv of each group and
        the classifier, BatchNorm statistics frozen (sec. 4.1); False trains
        every layer (a student learning from scratch).
    """

    def __init__(
        self,
        teacher: nn.Module,
        l1: float = 1.0,
        l2: float = 1.0,
        l3: float = 1.0,
        use_labels: bool = True,
        teacher_classes: Optional[Sequence[int]] = None,
        train_only_last_convs: bool = True,
    ) -> None:
        super().__init__()
        self.teacher_blocks = [len(g) for g in residual_groups(teacher, "EdgeKTPlugin")]
        for name, value in (("l1", l1), ("l2", l2), ("l3", l3)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"EdgeKTPlugin: {name} must be a number >= 0, got {value!r}")
        self.teacher = teacher
        self.l1, self.l2, self.l3 = float(l1), float(l2), float(l3)
        self.use_labels = use_labels
        self.teacher_classes = None if teacher_classes is None else [int(c) for c in teacher_classes]
        self.train_only_last_convs = train_only_last_convs
        self.last_terms: dict[str, float] = {}
        self.last_pairs: list[BlockPair] = []
        self._hooks: Optional[ExitStack] = None
        self._freezer = LastConvsOnlyPlugin() if train_only_last_convs else None

    def extra_passes_per_sample(self, strategy) -> float:
        """The teacher's forward of every training sample, for :class:`~avalanche_sst.metrics.cost.CostMeter`."""
        return FORWARD_COST

    # ------------------------------------------------------------------ set-up
    def before_training_exp(self, strategy, **kwargs):
        student = strategy.model
        self.student_blocks = [len(g) for g in residual_groups(student, "EdgeKTPlugin (the student)")]
        if len(self.student_blocks) != len(self.teacher_blocks):
            raise ValueError(
                f"EdgeKTPlugin: the student has {len(self.student_blocks)} groups, the teacher "
                f"{len(self.teacher_blocks)}; build the student with build_student(teacher, widths)"
            )
        self.teacher.to(strategy.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self._hooks = ExitStack()
        t_blocks = [b for g in residual_groups(self.teacher) for b in g]
        s_blocks = [b for g in residual_groups(student) for b in g]
        self._teacher_out = self._hooks.enter_context(capture_block_outputs(self.teacher, t_blocks))
        self._student_out = self._hooks.enter_context(capture_block_outputs(student, s_blocks))
        if self._freezer is not None:
            self._freezer.before_training_exp(strategy)

    def before_training_epoch(self, strategy, **kwargs):
        if self._freezer is not None:
            self._freezer.before_training_epoch(strategy)

    def before_training_iteration(self, strategy, **kwargs):
        if self._freezer is not None:
            self._freezer.before_training_iteration(strategy)

    # ------------------------------------------------------------------ loss
    def before_backward(self, strategy, **kwargs):
        student_maps = _split(list(self._student_out), self.student_blocks)
        with torch.no_grad():
            teacher_logits = self.teacher(strategy.mb_x)
        teacher_maps = _split(list(self._teacher_out), self.teacher_blocks)
        labels = strategy.mb_y if self.use_labels else None
        total, terms, pairs = edge_kt_loss(
            teacher_logits, strategy.mb_output, teacher_maps, student_maps, labels,
            self.l1, self.l2, self.l3, self.teacher_classes,
        )
        strategy.loss = total  # the paper's loss replaces the criterion's
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        self.last_terms["total"] = float(total.detach())
        self.last_pairs = pairs
        for name, value in self.last_terms.items():
            log_scalar(strategy, f"edge_kt/{name}", value)
        for pair in pairs:
            log_scalar(strategy, f"edge_kt/pair/group{pair.group + 1}.{pair.student_block}", pair.teacher_block)

    # ------------------------------------------------------------------ tear-down
    def after_training_exp(self, strategy, **kwargs):
        if self._hooks is not None:
            self._hooks.close()
            self._hooks = None
        if self._freezer is not None:
            self._freezer.after_training_exp(strategy)
