"""Loss functions of the SST paper's compared methods (Lee & Kim 2023, Table 7).

* deep mutual learning (Zhang et al., "Deep Mutual Learning", CVPR 2018):
  :func:`dml_loss`;
* Learning without Memorizing (Dhar et al., CVPR 2019): :func:`grad_cam_map`,
  :func:`attention_distillation_loss`.

Conventions as in :mod:`avalanche_sst.functional.losses`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from avalanche_sst.functional.checks import check_tensor, check_same_shape, check_logit_pair, check_targets, non_negative
from avalanche_sst.functional.losses import kl_divergence

__all__ = ["dml_loss", "grad_cam_map", "attention_distillation_loss"]


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
    logits_self, logits_peer = check_logit_pair(
        logits_self, "logits_self", logits_peer, "logits_peer"
    )
    y = check_targets(targets, logits_self, "logits_self")
    w = non_negative(kl_weight, "kl_weight")
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
    a = check_tensor(activations, "activations")
    g = check_tensor(gradients, "gradients")
    if a.dim() != 4:
        raise ValueError(f"activations must be 4-D [B, C, H, W], got shape {tuple(a.shape)}")
    check_same_shape(a, "activations", g, "gradients")
    weights = g.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(dim=1))
    return F.normalize(cam.flatten(1), p=2.0, dim=1, eps=1e-12)


def attention_distillation_loss(map_student: Tensor, map_teacher: Tensor) -> Tensor:
    """LwM attention distillation: L1 distance of the two (normalized) maps.

    ``sum_j |map_student - map_teacher|`` over positions, averaged over the
    batch; the teacher map is detached. Maps are ``[B, H*W]``.
    """
    s = check_tensor(map_student, "map_student")
    t = check_tensor(map_teacher, "map_teacher")
    if s.dim() != 2:
        raise ValueError(f"map_student must be 2-D [B, H*W], got shape {tuple(s.shape)}")
    check_same_shape(s, "map_student", t, "map_teacher")
    return (s - t.detach()).abs().sum(dim=1).mean()
