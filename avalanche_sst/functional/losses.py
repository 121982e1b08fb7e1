"""Loss functions of AOD, MSL and the compared methods.

Implements, as pure functions on tensors:

* eq. (5)-(8) of Lee & Kim, IEEE Access 2023 -- adaptive online distillation
  (AOD): consistency regularization ``L_CR = KL(P_F || P_C)`` (eq. 5), the
  adaptive weights ``W_KD^k = L_CE^k / (L_CE^1 + L_CE^2)`` (eq. 6), the
  Jensen-Shannon distillation ``L_KD^k`` and the totals ``L_1``, ``L_2``
  (eq. 7, 8): :func:`aod_losses`.
* eq. (9) -- multi-step loss ``L_MS = KL(P_T || P_S) + (sum_i L_AT)/n`` with
  the attention transfer loss of Zagoruyko & Komodakis, "Paying More
  Attention to Attention", ICLR 2017: :func:`msl_loss`.
The baselines of Table 7 (DML, LwM) are in :mod:`.baseline_losses`.

Conventions: logits are ``[batch, classes]``; probabilities are
temperature-scaled softmaxes ``softmax(z / T)``; logarithms are natural (losses
in nats); every loss is summed over classes / positions and averaged over the
batch. "Detached" arguments receive no gradient from the loss.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from avalanche_sst.functional.checks import check_tensor, check_logits, check_same_shape, check_logit_pair, check_targets, positive, non_negative

__all__ = [
    "kl_divergence",
    "distillation_loss",
    "js_divergence",
    "attention_map",
    "attention_transfer_loss",
    "adaptive_weights",
    "AODLosses",
    "aod_losses",
    "MSLLosses",
    "msl_loss",
]

Features = Union[Tensor, Sequence[Tensor]]


# --------------------------------------------------------------------------
# divergences
# --------------------------------------------------------------------------
def kl_divergence(logits_p: Tensor, logits_q: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(p || q)`` in nats, the divergence of eq. (5) and eq. (9).

    ``p = softmax(logits_p / T)``, ``q = softmax(logits_q / T)``; summed over
    classes, averaged over the batch. No ``T^2`` factor (see
    :func:`distillation_loss`). Gradient flows into both arguments; detach the
    one that should not learn.
    """
    logits_p, logits_q = check_logit_pair(logits_p, "logits_p", logits_q, "logits_q")
    t = positive(temperature, "temperature")
    log_p = F.log_softmax(logits_p / t, dim=1)
    log_q = F.log_softmax(logits_q / t, dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0
) -> Tensor:
    """Hinton logit distillation ``KL(p_T || p_S) * T^2`` (first term of eq. 9).

    The teacher is detached. At ``T = 1`` this is exactly ``KL(p_T || p_S)``.
    """
    student_logits, teacher_logits = check_logit_pair(
        student_logits, "student_logits", teacher_logits, "teacher_logits"
    )
    t = positive(temperature, "temperature")
    return kl_divergence(teacher_logits.detach(), student_logits, t) * (t * t)


def js_divergence(logits_p: Tensor, logits_q: Tensor, temperature: float = 1.0) -> Tensor:
    """Jensen-Shannon divergence ``JS(p || q)`` of eq. (7), in nats.

    ``JS = 0.5 KL(p || m) + 0.5 KL(q || m)`` with ``m = (p + q) / 2``,
    ``p = softmax(logits_p / T)``, ``q = softmax(logits_q / T)``; summed over
    classes, averaged over the batch. Symmetric, in ``[0, ln 2]``. Gradient
    flows into both arguments; the AOD caller detaches the peer.
    """
    logits_p, logits_q = check_logit_pair(logits_p, "logits_p", logits_q, "logits_q")
    t = positive(temperature, "temperature")
    log_p = F.log_softmax(logits_p / t, dim=1)
    log_q = F.log_softmax(logits_q / t, dim=1)
    # log m = log((p + q) / 2), computed stably in log space.
    log_m = torch.logsumexp(torch.stack([log_p, log_q], dim=0), dim=0) - math.log(2.0)
    kl_pm = F.kl_div(log_m, log_p, log_target=True, reduction="batchmean")
    kl_qm = F.kl_div(log_m, log_q, log_target=True, reduction="batchmean")
    return 0.5 * kl_pm + 0.5 * kl_qm


# --------------------------------------------------------------------------
# attention transfer (eq. 9, second term)
# --------------------------------------------------------------------------
def attention_map(features: Tensor) -> Tensor:
    """Activation-based attention map of Zagoruyko & Komodakis (used in eq. 9).

    ``F.normalize(x.pow(2).mean(1).flatten(1))``: channel mean of the squared
    activations of ``features`` ``[B, C, H, W]``, flattened to ``[B, H*W]``
    and L2-normalized per sample.
    """
    x = check_tensor(features, "features")
    if x.dim() != 4:
        raise ValueError(f"features must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")
    return F.normalize(x.pow(2).mean(1).flatten(1), p=2.0, dim=1)


def _as_feature_list(feats: Features, name: str) -> list[Tensor]:
    if isinstance(feats, Tensor):
        return [feats]
    if not isinstance(feats, Sequence) or isinstance(feats, (str, bytes)):
        raise ValueError(f"{name} must be a tensor or a sequence of tensors, got {type(feats).__name__}")
    out = list(feats)
    for i, f in enumerate(out):
        if not isinstance(f, Tensor):
            raise ValueError(f"{name}[{i}] must be a torch.Tensor, got {type(f).__name__}")
    return out


def attention_transfer_loss(
    student_feats: Features, teacher_feats: Features, beta: float = 1000.0
) -> Tensor:
    """Attention transfer loss, averaged over blocks: eq. (9)'s ``(sum_i L_AT)/n``.

    Per block ``i``: ``beta * mean((at(s_i) - at(t_i))^2)`` with
    :func:`attention_map` (mean over batch and positions, as in Zagoruyko &
    Komodakis's reference code; ``beta = 1000`` per METHOD.md). The result is
    the mean over the ``n`` blocks. Accepts one tensor or equal-length
    sequences of per-block ``[B, C, H, W]`` tensors; channel counts may
    differ between student and teacher, batch and spatial sizes may not.
    The teacher is detached.
    """
    s_list = _as_feature_list(student_feats, "student_feats")
    t_list = _as_feature_list(teacher_feats, "teacher_feats")
    if len(s_list) != len(t_list):
        raise ValueError(
            f"student_feats has {len(s_list)} blocks but teacher_feats has {len(t_list)}"
        )
    if not s_list:
        raise ValueError("student_feats and teacher_feats must hold at least one block")
    b = non_negative(beta, "beta")
    losses = []
    for i, (s, t) in enumerate(zip(s_list, t_list)):
        if s.dim() != 4 or t.dim() != 4:
            raise ValueError(
                f"block {i}: student_feats and teacher_feats must be 4-D [B, C, H, W], got "
                f"{tuple(s.shape)} and {tuple(t.shape)}"
            )
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"block {i}: student_feats {tuple(s.shape)} and teacher_feats {tuple(t.shape)} "
                "must have the same batch and spatial sizes"
            )
        diff = attention_map(s) - attention_map(t.detach())
        losses.append(b * diff.pow(2).mean())
    return torch.stack(losses).mean()


# --------------------------------------------------------------------------
# AOD (eq. 5-8)
# --------------------------------------------------------------------------
def _scalar(x: object, name: str, ref: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        if x.numel() != 1:
            raise ValueError(f"{name} must be a scalar loss, got shape {tuple(x.shape)}")
        return x.detach().reshape(())
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        kw = {} if ref is None else {"device": ref.device}
        return torch.tensor(float(x), dtype=torch.float32, **kw)
    raise ValueError(f"{name} must be a scalar tensor or a real number, got {type(x).__name__}")


def adaptive_weights(ce_1: Tensor | float, ce_2: Tensor | float) -> tuple[Tensor, Tensor]:
    """Eq. (6): ``W_KD^k = L_CE^k / (L_CE^1 + L_CE^2)``, detached.

    Returns ``(W_KD^1, W_KD^2)`` as 0-dim tensors that sum to 1. If both
    cross-entropies are 0 the weights are ``(0.5, 0.5)``. Inputs must be
    non-negative finite scalars (checked; this reads the values).
    """
    c1 = _scalar(ce_1, "ce_1")
    c2 = _scalar(ce_2, "ce_2", ref=c1)
    c2 = c2.to(device=c1.device, dtype=torch.promote_types(c1.dtype, c2.dtype))
    c1 = c1.to(c2.dtype)
    for c, name in ((c1, "ce_1"), (c2, "ce_2")):
        v = float(c)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite cross-entropy >= 0, got {v!r}")
    total = c1 + c2
    if float(total) == 0.0:
        half = torch.full((), 0.5, dtype=c1.dtype, device=c1.device)
        return half, half.clone()
    return c1 / total, c2 / total


@dataclass
class AODLosses:
    """Per-batch AOD losses of eq. (5)-(8) for the two students.

    ``total_k`` is ``L_k`` (eq. 7/8, the one to backpropagate for student k);
    ``ce_k``, ``kd_k``, ``cr_k`` the parts; ``w_1``, ``w_2`` the ``W_KD``
    weights of eq. (6) (detached). Disabled terms are 0-dim zero tensors.
    """

    total_1: Tensor
    total_2: Tensor
    ce_1: Tensor
    ce_2: Tensor
    kd_1: Tensor
    kd_2: Tensor
    cr_1: Tensor
    cr_2: Tensor
    w_1: Tensor
    w_2: Tensor


def aod_losses(
    logits_1f: Tensor,
    logits_1c: Tensor,
    logits_2f: Tensor,
    logits_2c: Tensor,
    targets: Tensor,
    alpha: float = 0.5,
    adaptive: bool = True,
    use_kd: bool = True,
    use_cr: bool = True,
) -> AODLosses:
    """AOD losses, eq. (5)-(8), for two students on the flip/colour view pair.

    ``logits_kF`` / ``logits_kC``: student k on the flipped view ``B_F`` and
    the colour-jittered view ``B_C``; ``targets`` the class indices.

    * ``L_CE^k = CE(logits_kF, y)``.
    * ``W_KD^k = L_CE^k / (L_CE^1 + L_CE^2)`` (eq. 6), per batch, detached.
    * ``L_KD^1 = JS(p_1F || p_2F)`` with ``logits_2F`` detached, and
      ``L_KD^2 = JS(p_2F || p_1F)`` with ``logits_1F`` detached (eq. 7).
    * ``L_CR^k = KL(p_kF || p_kC)`` (eq. 5); gradient flows into both views of
      student k.
    * ``L_1 = W^2 L_CE^1 + W^1 L_KD^1 + alpha L_CR^1`` (eq. 7),
      ``L_2 = W^1 L_CE^2 + W^2 L_KD^2 + alpha L_CR^2`` (eq. 8); temperature 1.

    ``L_1`` depends on student 1's logits only, so ``L_1 + L_2`` can be
    backpropagated at once. Switches (the ablation of the paper's Table 3):

    * general training: ``use_kd=False, use_cr=False`` -> ``L_k = L_CE^k``;
    * general KD: ``adaptive=False, use_cr=False`` -> ``0.5 L_CE^k + 0.5 L_KD^k``;
    * adaptive KD: ``use_cr=False``;
    * adaptive KD + CR: the defaults.

    ``adaptive=False`` uses 0.5 for every W. ``use_kd=False`` drops the KD term
    and gives the CE term weight 1 (``kd_k`` are then zero; ``w_k`` are still
    reported). ``use_cr=False`` drops the CR term (``cr_k`` zero).
    """
    logits_1f = check_logits(logits_1f, "logits_1f")
    for name, x in (("logits_1c", logits_1c), ("logits_2f", logits_2f), ("logits_2c", logits_2c)):
        check_logits(x, name)
        check_same_shape(logits_1f, "logits_1f", x, name)
    y = check_targets(targets, logits_1f, "logits_1f")
    a = non_negative(alpha, "alpha")

    ce_1 = F.cross_entropy(logits_1f, y)
    ce_2 = F.cross_entropy(logits_2f, y)
    if adaptive:
        w_1, w_2 = adaptive_weights(ce_1.detach(), ce_2.detach())
    else:
        w_1 = torch.full((), 0.5, dtype=ce_1.dtype, device=ce_1.device)
        w_2 = w_1.clone()
    zero = torch.zeros((), dtype=ce_1.dtype, device=ce_1.device)

    if use_kd:
        kd_1 = js_divergence(logits_1f, logits_2f.detach())
        kd_2 = js_divergence(logits_2f, logits_1f.detach())
        total_1 = w_2 * ce_1 + w_1 * kd_1
        total_2 = w_1 * ce_2 + w_2 * kd_2
    else:
        kd_1, kd_2 = zero, zero.clone()
        total_1 = ce_1
        total_2 = ce_2
    if use_cr:
        cr_1 = kl_divergence(logits_1f, logits_1c)
        cr_2 = kl_divergence(logits_2f, logits_2c)
        total_1 = total_1 + a * cr_1
        total_2 = total_2 + a * cr_2
    else:
        cr_1, cr_2 = zero.clone(), zero.clone()
    return AODLosses(
        total_1=total_1, total_2=total_2, ce_1=ce_1, ce_2=ce_2, kd_1=kd_1, kd_2=kd_2,
        cr_1=cr_1, cr_2=cr_2, w_1=w_1, w_2=w_2,
    )


# --------------------------------------------------------------------------
# MSL (eq. 9)
# --------------------------------------------------------------------------
@dataclass
class MSLLosses:
    """Eq. (9) parts: ``total = kd + at``."""

    total: Tensor
    kd: Tensor
    at: Tensor


def msl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_feats: Features,
    teacher_feats: Features,
    beta: float = 1000.0,
    temperature: float = 1.0,
) -> MSLLosses:
    """Eq. (9): ``L_MS = KL(P_T || P_S) + (sum_{i=1}^n L_AT)/n`` (no cross-entropy).

    ``kd`` is :func:`distillation_loss` (``KL(p_T || p_S) * T^2``, exactly
    ``KL(p_T || p_S)`` at the default ``T = 1``); ``at`` is
    :func:`attention_transfer_loss` over the per-block features (mean over
    blocks, ``beta = 1000``). All teacher tensors are detached.
    """
    kd = distillation_loss(student_logits, teacher_logits, temperature)
    at = attention_transfer_loss(student_feats, teacher_feats, beta)
    return MSLLosses(total=kd + at, kd=kd, at=at)
