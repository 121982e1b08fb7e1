"""DML and LwM losses (functional/baseline_losses): every bad input names its argument, DML's KL
uses the given temperature, Grad-CAM maps are L2-normalised per sample. Hand values throughout."""

from __future__ import annotations

import math

import pytest
import torch

from avalanche_sst.functional.baseline_losses import attention_distillation_loss, dml_loss, grad_cam_map


def test_errors_name_the_argument() -> None:
    good2, good4 = torch.zeros(2, 3), torch.zeros(1, 2, 2, 2)
    cases = [
        (lambda: grad_cam_map([0.0], good4), r"^activations must be a torch.Tensor, got list$"),
        (lambda: grad_cam_map(good4, [0.0]), r"^gradients must be a torch.Tensor, got list$"),
        (lambda: grad_cam_map(torch.zeros(2, 3), torch.zeros(2, 3)),
         r"^activations must be 4-D \[B, C, H, W\], got shape \(2, 3\)$"),
        (lambda: grad_cam_map(good4, torch.zeros(1, 2, 2, 3)),
         r"^shape mismatch: activations has shape \(1, 2, 2, 2\) but gradients has shape \(1, 2, 2, 3\)$"),
        (lambda: attention_distillation_loss([0.0], good2), r"^map_student must be a torch.Tensor, got list$"),
        (lambda: attention_distillation_loss(good2, [0.0]), r"^map_teacher must be a torch.Tensor, got list$"),
        (lambda: attention_distillation_loss(torch.zeros(3), torch.zeros(3)),
         r"^map_student must be 2-D \[B, H\*W\], got shape \(3,\)$"),
        (lambda: attention_distillation_loss(good2, torch.zeros(2, 4)),
         r"^shape mismatch: map_student has shape \(2, 3\) but map_teacher has shape \(2, 4\)$"),
        (lambda: dml_loss(good2, torch.zeros(2, 4), torch.tensor([0, 1])), r"logits_self .*logits_peer"),
        (lambda: dml_loss(good2, good2, torch.tensor([0, 1, 2])), r"^targets must be 1-D with one class index per row "
                                                                   r"of logits_self \(batch 2\), got shape \(3,\)$"),
        (lambda: dml_loss(good2, good2, torch.tensor([0, 1]), kl_weight=-1.0),
         r"^kl_weight must be a finite number >= 0, got -1.0$"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_dml_pair_errors_name_both_logits() -> None:
    with pytest.raises(ValueError) as err:
        dml_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    assert "logits_self" in str(err.value) and "logits_peer" in str(err.value)
    assert "XX" not in str(err.value)


def test_dml_kl_uses_the_temperature() -> None:
    """Self logits (0, 0), peer (2, 0), target 0: CE = ln 2; at T = 2 the peer's softmax is
    (e / (e + 1), 1 / (e + 1)) and the self's is uniform, KL = sum p ln(2 p)."""
    self_logits, peer = torch.zeros(1, 2), torch.tensor([[2.0, 0.0]])
    p = torch.softmax(peer / 2, dim=1)[0].tolist()
    expected = math.log(2) + sum(q * math.log(2 * q) for q in p)
    assert dml_loss(self_logits, peer, torch.tensor([0]), temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_grad_cam_map_is_l2_normalised_per_sample() -> None:
    """One channel, gradient mean 1: the map is ReLU(A) = (3, 4, 0, 0) -> (0.6, 0.8, 0, 0); a second
    sample with map (0, 0, 1, 0) stays (0, 0, 1, 0); an all-zero map stays zero."""
    a = torch.tensor([[[[3.0, 4.0], [-1.0, 0.0]]], [[[0.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    out = grad_cam_map(a, torch.ones_like(a))
    assert torch.allclose(out, torch.tensor([[0.6, 0.8, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    tiny = grad_cam_map(torch.full((1, 1, 1, 2), 1e-7), torch.ones(1, 1, 1, 2))
    assert torch.allclose(tiny, torch.full((1, 2), 2 ** -0.5))  # eps = 1e-12 does not damp small maps
