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
* the baselines of Table 7: deep mutual learning (Zhang et al., "Deep Mutual
  Learning", CVPR 2018, :func:`dml_loss`) and Learning without Memorizing
  (Dhar et al., CVPR 2019, :func:`grad_cam_map`,
  :func:`attention_distillation_loss`).

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
    "dml_loss",
    "grad_cam_map",
    "attention_distillation_loss",
]

Features = Union[Tensor, Sequence[Tensor]]


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------
def _check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_logits(x: object, name: str) -> Tensor:
    t = _check_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [batch, classes], got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must have a non-empty batch and class dimension, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _check_same_shape(a: Tensor, name_a: str, b: Tensor, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"shape mismatch: {name_a} has shape {tuple(a.shape)} but {name_b} has shape "
            f"{tuple(b.shape)}"
        )


def _check_logit_pair(a: object, name_a: str, b: object, name_b: str) -> tuple[Tensor, Tensor]:
    ta = _check_logits(a, name_a)
    tb = _check_logits(b, name_b)
    _check_same_shape(ta, name_a, tb, name_b)
    return ta, tb


def _check_targets(targets: object, logits: Tensor, name_logits: str) -> Tensor:
    t = _check_tensor(targets, "targets")
    if t.dim() != 1 or t.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be 1-D with one class index per row of {name_logits} "
            f"(batch {logits.shape[0]}), got shape {tuple(t.shape)}"
        )
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"targets must be an integer class-index tensor, got dtype {t.dtype}")
    return t.long()


def _positive(value: object, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _non_negative(value: object, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


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
    logits_p, logits_q = _check_logit_pair(logits_p, "logits_p", logits_q, "logits_q")
    t = _positive(temperature, "temperature")
    log_p = F.log_softmax(logits_p / t, dim=1)
    log_q = F.log_softmax(logits_q / t, dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0
) -> Tensor:
    """Hinton logit distillation ``KL(p_T || p_S) * T^2`` (first term of eq. 9).

    The teacher is detached. At ``T = 1`` this is exactly ``KL(p_T || p_S)``.
    """
    student_logits, teacher_logits = _check_logit_pair(
        student_logits, "student_logits", teacher_logits, "teacher_logits"
    )
    t = _positive(temperature, "temperature")
    return kl_divergence(teacher_logits.detach(), student_logits, t) * (t * t)


def js_divergence(logits_p: Tensor, logits_q: Tensor, temperature: float = 1.0) -> Tensor:
    """Jensen-Shannon divergence ``JS(p || q)`` of eq. (7), in nats.

    ``JS = 0.5 KL(p || m) + 0.5 KL(q || m)`` with ``m = (p + q) / 2``,
    ``p = softmax(logits_p / T)``, ``q = softmax(logits_q / T)``; summed over
    classes, averaged over the batch. Symmetric, in ``[0, ln 2]``. Gradient
    flows into both arguments; the AOD caller detaches the peer.
    """
    logits_p, logits_q = _check_logit_pair(logits_p, "logits_p", logits_q, "logits_q")
    t = _positive(temperature, "temperature")
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
    x = _check_tensor(features, "features")
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
    b = _non_negative(beta, "beta")
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
    logits_1f = _check_logits(logits_1f, "logits_1f")
    for name, x in (("logits_1c", logits_1c), ("logits_2f", logits_2f), ("logits_2c", logits_2c)):
        _check_logits(x, name)
        _check_same_shape(logits_1f, "logits_1f", x, name)
    y = _check_targets(targets, logits_1f, "logits_1f")
    a = _non_negative(alpha, "alpha")

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


# --------------------------------------------------------------------------
# compared methods (Table 7)
# --------------------------------------------------------------------------
def dml_loss(
    logits_self: Tensor,
    logits_peer: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    kl_weight: float = 1.0,
) -> Tensor:
    """Deep mutual learning (Zhang et al. 2018), one student's loss.

    ``CE(logits_self, y) + kl_weight * KL(p_peer || p_self)`` with the peer
    detached; the KL uses softmax at ``temperature`` without a ``T^2`` factor
    (the original uses ``T = 1``, where both agree).
    """
    logits_self, logits_peer = _check_logit_pair(
        logits_self, "logits_self", logits_peer, "logits_peer"
    )
    y = _check_targets(targets, logits_self, "logits_self")
    w = _non_negative(kl_weight, "kl_weight")
    ce = F.cross_entropy(logits_self, y)
    return ce + w * kl_divergence(logits_peer.detach(), logits_self, temperature)


def grad_cam_map(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM attention map of LwM (Dhar et al. 2019), ``[B, H*W]``.

    Channel weights ``w_c`` = ``gradients`` averaged over H and W; map =
    ``ReLU(sum_c w_c * A_c)``, flattened and L2-normalized per sample
    (``F.normalize`` with ``eps=1e-12``, so an all-zero map stays zero).
    Gradient flows into whatever of ``activations`` / ``gradients`` carries a
    graph; the caller decides (e.g. ``create_graph=True`` for the student).
    """
    a = _check_tensor(activations, "activations")
    g = _check_tensor(gradients, "gradients")
    if a.dim() != 4:
        raise ValueError(f"activations must be 4-D [B, C, H, W], got shape {tuple(a.shape)}")
    _check_same_shape(a, "activations", g, "gradients")
    weights = g.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(dim=1))
    return F.normalize(cam.flatten(1), p=2.0, dim=1, eps=1e-12)


def attention_distillation_loss(map_student: Tensor, map_teacher: Tensor) -> Tensor:
    """LwM attention distillation: L1 distance of the two (normalized) maps.

    ``sum_j |map_student - map_teacher|`` over positions, averaged over the
    batch; the teacher map is detached. Maps are ``[B, H*W]``.
    """
    s = _check_tensor(map_student, "map_student")
    t = _check_tensor(map_teacher, "map_teacher")
    if s.dim() != 2:
        raise ValueError(f"map_student must be 2-D [B, H*W], got shape {tuple(s.shape)}")
    _check_same_shape(s, "map_student", t, "map_teacher")
    return (s - t.detach()).abs().sum(dim=1).mean()
