"""The losses of M2KD as small pure functions.

Zhou, Mai, Zhang, Xu, Wu & Davis, "M2KD: Incremental Learning via
Multi-model and Multi-level Knowledge Distillation", BMVC 2020, eq. 1-4.

Conventions (METHOD.md, "M2KD"): scores are sigmoids of logits; every
"cross entropy" is the binary cross entropy over the seen units (as iCaRL),
reduced as a mean over samples and seen units; units of future steps (the
columns of a grown head beyond ``boundaries[-1]``) get no loss.

``boundaries`` are the cumulative unit counts ``[C_1, ..., C_P]`` after each
step, the current one last: step k (0-based) owns units
``boundaries[k-1] : boundaries[k]`` (``0`` for k = 0). ``teacher_scores[k]``
(for every k < P-1) are the sigmoid scores of snapshot k, at least
``boundaries[k]`` columns wide.

* :func:`mmd_targets` / :func:`mmd_loss` -- L_MMD (eq. 2): snapshot k's
  scores for step k's units, one-hot labels for the current units. With a
  single previous snapshot it is LwF-MC / iCaRL's loss (eq. 1).
* :func:`ad_loss` -- L_AD (eq. 3): the same distillation on the auxiliary
  head's scores for the old units, plus ``alpha`` times the label BCE over
  all seen units.
* :func:`m2kd_loss` -- eq. 4: ``L_MMD + lam * L_AD``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ad_loss", "check_boundaries", "m2kd_loss", "mmd_loss", "mmd_targets", "seen_bce"]


def check_boundaries(boundaries: Sequence[int], n_teachers: int, width: int) -> list[int]:
    """Validate ``boundaries`` against the number of teachers and the logits' width."""
    b = [int(c) for c in boundaries]
    if not b or any(c2 <= c1 for c1, c2 in zip([0, *b], b)):
        raise ValueError(f"boundaries must be increasing positive unit counts [C_1, ..., C_P], got {b}")
    if n_teachers != len(b) - 1:
        raise ValueError(f"{len(b)} steps in boundaries={b} need {len(b) - 1} teacher score tensors "
                         f"(one per previous step), got {n_teachers}")
    if width < b[-1]:
        raise ValueError(f"the logits have {width} units but boundaries={b} needs {b[-1]}; "
                         f"grow the head before computing the loss")
    return b


def seen_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Sigmoid BCE, mean over samples and the ``targets.shape[1]`` seen units."""
    return F.binary_cross_entropy_with_logits(logits[:, : targets.shape[1]], targets)


def _one_hot(labels: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    if labels.numel() and int(labels.max()) >= width:
        raise ValueError(f"label {int(labels.max())} is outside the {width} seen units")
    return F.one_hot(labels.long(), width).to(dtype)


def mmd_targets(labels: Tensor, teacher_scores: Sequence[Tensor], boundaries: Sequence[int],
                dtype: torch.dtype = torch.float32) -> Tensor:
    """Eq. 2's targets over the C seen units: snapshot k's scores on step k's units, labels after."""
    b = check_boundaries(boundaries, len(teacher_scores), width=boundaries[-1] if boundaries else 0)
    targets = _one_hot(labels, b[-1], dtype)
    for k, scores in enumerate(teacher_scores):
        lo = b[k - 1] if k else 0
        targets[:, lo: b[k]] = scores[:, lo: b[k]].to(dtype)
    return targets


def mmd_loss(logits: Tensor, labels: Tensor, teacher_scores: Sequence[Tensor],
             boundaries: Sequence[int]) -> Tensor:
    """L_MMD (eq. 2) as the mean sigmoid BCE over samples and seen units."""
    check_boundaries(boundaries, len(teacher_scores), logits.shape[1])
    return seen_bce(logits, mmd_targets(labels, teacher_scores, boundaries, logits.dtype))


def ad_loss(aux_logits: Tensor, labels: Tensor, aux_teacher_scores: Sequence[Tensor],
            boundaries: Sequence[int], alpha: float = 0.5) -> Tensor:
    """L_AD (eq. 3): distillation on the old units plus ``alpha`` x label BCE over all seen units.

    Both terms are sums over their units divided by N x C (C = seen units),
    the reduction of :func:`mmd_loss`, so ``alpha`` weighs them as in eq. 3.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got alpha={alpha!r}")
    b = check_boundaries(boundaries, len(aux_teacher_scores), aux_logits.shape[1])
    logits = aux_logits[:, : b[-1]]
    n, c = logits.shape
    label_term = F.binary_cross_entropy_with_logits(
        logits, _one_hot(labels, c, logits.dtype), reduction="sum")
    distill_term = logits.new_zeros(())
    for k, scores in enumerate(aux_teacher_scores):
        lo = b[k - 1] if k else 0
        distill_term = distill_term + F.binary_cross_entropy_with_logits(
            logits[:, lo: b[k]], scores[:, lo: b[k]].to(logits.dtype), reduction="sum")
    return (distill_term + alpha * label_term) / (n * c)


def m2kd_loss(l_mmd: Tensor, l_ad: Tensor, lam: float = 1.0) -> Tensor:
    """Eq. 4: ``L_total = L_MMD + lam * L_AD``."""
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got lam={lam!r}")
    return l_mmd + lam * l_ad
