"""functional/m2kd_losses: the survivors of its mutation run — L_AD over three steps (each old step
distilled on its own units only), the dtype the losses come out in, the defaults alpha = 0.5 and
lam = 1, the bounds alpha = 0 and lam = 0 accepted, and the whole error messages."""

from __future__ import annotations

import math
import re

import pytest
import torch

from avalanche_sst.functional.m2kd_losses import ad_loss, check_boundaries, m2kd_loss, mmd_loss, mmd_targets


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def bce(x: float, y: float) -> float:
    """Sigmoid BCE of one logit against one target, by hand: log(1 + e^x) - x*y."""
    return math.log1p(math.exp(x)) - x * y


def test_ad_loss_distills_each_old_step_on_its_own_units_only():
    # three steps of one unit each: aux teacher 0 owns unit 0, aux teacher 1 owns unit 1, unit 2 is new;
    # two samples, so a per-slice mean instead of a sum would halve the distillation term
    x = [[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]]
    s0 = torch.tensor([[0.2, 0.9, 0.9], [0.6, 0.9, 0.9]])
    s1 = torch.tensor([[0.7, 0.3, 0.9], [0.1, 0.8, 0.9]])  # its unit 0 (0.7, 0.1) must not be read
    labels = [2, 0]
    label_term = sum(bce(x[r][j], float(j == labels[r])) for r in range(2) for j in range(3))
    distill_term = sum(bce(x[r][0], s0[r, 0].item()) + bce(x[r][1], s1[r, 1].item()) for r in range(2))
    expected = (distill_term + 0.25 * label_term) / (2 * 3)
    got = ad_loss(torch.tensor(x), torch.tensor(labels), [s0, s1], [1, 2, 3], alpha=0.25)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ad_loss_default_alpha_is_one_half_and_zero_is_allowed():
    x = [0.5, -1.0]
    logits, labels = torch.tensor([x]), torch.tensor([1])
    label_term = bce(x[0], 0) + bce(x[1], 1)
    assert ad_loss(logits, labels, [], [2]).item() == pytest.approx(0.5 * label_term / 2, rel=1e-6)
    assert ad_loss(logits, labels, [], [2], alpha=0).item() == 0.0
    with pytest.raises(ValueError, match=exactly("alpha must be >= 0, got alpha=-1")):
        ad_loss(logits, labels, [], [2], alpha=-1)


def test_ad_loss_keeps_the_logits_dtype_whatever_the_teachers():
    logits = torch.tensor([[0.5, -1.0]])
    scores = torch.tensor([[0.2, 0.4]], dtype=torch.float64)
    out = ad_loss(logits, torch.tensor([1]), [scores], [1, 2])
    assert out.dtype == torch.float32


def test_mmd_loss_computes_in_the_logits_dtype():
    # float64 logits and teacher scores: targets cast to float32 would both round 0.1 and return float32
    logits = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    scores = torch.tensor([[0.1]], dtype=torch.float64)
    out = mmd_loss(logits, torch.tensor([1]), [scores], [1, 2])
    assert out.dtype == torch.float64
    assert out.item() == pytest.approx((bce(0.3, 0.1) + bce(-0.2, 1.0)) / 2, rel=1e-14)


def test_mmd_targets_refuse_empty_boundaries_by_name():
    with pytest.raises(ValueError, match=exactly("boundaries must be increasing positive unit counts "
                                                 "[C_1, ..., C_P], got []")):
        mmd_targets(torch.tensor([0]), [], [])


def test_a_label_at_the_width_is_outside_the_seen_units():
    with pytest.raises(ValueError, match=exactly("label 3 is outside the 3 seen units")):
        mmd_targets(torch.tensor([0, 3]), [], [3])
    assert mmd_targets(torch.tensor([2]), [], [3]).tolist() == [[0.0, 0.0, 1.0]]


def test_check_boundaries_messages_count_teachers_and_units():
    with pytest.raises(ValueError, match=exactly("3 steps in boundaries=[2, 4, 6] need 2 teacher score tensors "
                                                 "(one per previous step), got 1")):
        check_boundaries([2, 4, 6], 1, 6)
    with pytest.raises(ValueError, match=exactly("the logits have 5 units but boundaries=[2, 4, 6] needs 6; "
                                                 "grow the head before computing the loss")):
        check_boundaries([2, 4, 6], 2, 5)


def test_m2kd_loss_default_lam_is_one_and_small_lams_are_allowed():
    l_mmd, l_ad = torch.tensor(1.0), torch.tensor(2.0)
    assert m2kd_loss(l_mmd, l_ad).item() == 3.0
    assert m2kd_loss(l_mmd, l_ad, lam=0).item() == 1.0
    assert m2kd_loss(l_mmd, l_ad, lam=0.5).item() == 2.0
    with pytest.raises(ValueError, match=exactly("lam must be >= 0, got lam=-1")):
        m2kd_loss(l_mmd, l_ad, lam=-1)
