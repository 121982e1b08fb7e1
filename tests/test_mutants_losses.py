"""functional/losses: the survivors of its mutation run — whole error messages (each names the
argument at fault), the and/or of the input checks probed on the input that separates them, the
attention map normalised per sample, and msl_loss passing its temperature and beta on (hand values)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from avalanche_sst.functional.losses import (adaptive_weights, attention_map, attention_transfer_loss,
                                             distillation_loss, js_divergence, kl_divergence, msl_loss)


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_divergences_name_their_arguments():
    good = torch.zeros(1, 2)
    for fn in (kl_divergence, js_divergence):
        with pytest.raises(ValueError, match=exactly("logits_p must be 2-D [batch, classes], got shape (2,)")):
            fn(torch.zeros(2), good)
        with pytest.raises(ValueError, match=exactly("logits_q must be 2-D [batch, classes], got shape (2,)")):
            fn(good, torch.zeros(2))
        with pytest.raises(ValueError, match=exactly("temperature must be a finite number > 0, got 0")):
            fn(good, good, temperature=0)


def test_distillation_names_its_arguments():
    with pytest.raises(ValueError, match=exactly("shape mismatch: student_logits has shape (1, 2) but "
                                                 "teacher_logits has shape (1, 3)")):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=exactly("temperature must be a finite number > 0, got -1.0")):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature=-1.0)
    with pytest.raises(ValueError, match=exactly("temperature must be a real number, got '2'")):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature="2")


def test_attention_map_messages_and_per_sample_normalisation():
    with pytest.raises(ValueError, match=exactly("features must be a torch.Tensor, got list")):
        attention_map([1.0])
    with pytest.raises(ValueError, match=exactly("features must be 4-D [B, C, H, W], got shape (2, 3)")):
        attention_map(torch.zeros(2, 3))
    # two samples of different scale: each row has unit norm (a norm over the whole batch would not)
    feats = torch.tensor([[[[1.0, 2.0]]], [[[30.0, 40.0]]]])  # [2, 1, 1, 2]
    at = attention_map(feats)
    assert torch.allclose(at, torch.tensor([[1.0, 4.0], [900.0, 1600.0]]) /
                          torch.tensor([[math.sqrt(17.0)], [math.sqrt(900.0 ** 2 + 1600.0 ** 2)]]))


def test_attention_transfer_names_its_arguments():
    block = torch.ones(1, 2, 3, 3)
    with pytest.raises(ValueError, match=exactly("student_feats must be a tensor or a sequence of tensors, "
                                                 "got int")):
        attention_transfer_loss(3, block)
    with pytest.raises(ValueError, match=exactly("student_feats must be a tensor or a sequence of tensors, "
                                                 "got str")):
        attention_transfer_loss("ab", block)
    with pytest.raises(ValueError, match=exactly("teacher_feats must be a tensor or a sequence of tensors, "
                                                 "got int")):
        attention_transfer_loss(block, 3)
    with pytest.raises(ValueError, match=exactly("teacher_feats[1] must be a torch.Tensor, got int")):
        attention_transfer_loss([block, block], [block, 3])
    with pytest.raises(ValueError, match=exactly("student_feats and teacher_feats must hold at least one block")):
        attention_transfer_loss([], [])
    with pytest.raises(ValueError, match=exactly("beta must be a finite number >= 0, got -1")):
        attention_transfer_loss(block, block, beta=-1)


def test_attention_transfer_checks_each_side_of_a_block():
    s4, t3 = torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3)
    # only the teacher is not 4-D: an "and" of the two conditions would let it through
    with pytest.raises(ValueError, match=exactly("block 0: student_feats and teacher_feats must be 4-D "
                                                 "[B, C, H, W], got (1, 2, 3, 3) and (1, 2, 3)")):
        attention_transfer_loss(s4, t3)
    with pytest.raises(ValueError, match=exactly("block 0: student_feats (1, 2, 3, 3) and teacher_feats "
                                                 "(2, 2, 3, 3) must have the same batch and spatial sizes")):
        attention_transfer_loss(s4, torch.ones(2, 2, 3, 3))


def test_msl_loss_passes_temperature_and_beta_on():
    # KD at T = 2 (times T^2) and AT with beta = 10, by hand
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]])
    s_feats, t_feats = torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[2.0, 1.0]]]])
    out = msl_loss(student, teacher, s_feats, t_feats, beta=10.0, temperature=2.0)
    kd = 4.0 * kl(softmax([0.0, math.log(3.0) / 2]), [0.5, 0.5])
    at = 10.0 * ((1 - 4) ** 2 + (4 - 1) ** 2) / 17.0 / 2  # maps (1, 4)/sqrt(17) and (4, 1)/sqrt(17)
    assert out.kd.item() == pytest.approx(kd, rel=1e-5)
    assert out.at.item() == pytest.approx(at, rel=1e-5)
    assert out.total.item() == pytest.approx(kd + at, rel=1e-5)


def test_adaptive_weights_messages_and_float32_from_numbers():
    with pytest.raises(ValueError, match=exactly("ce_1 must be a scalar tensor or a real number, got str")):
        adaptive_weights("1.0", 1.0)
    with pytest.raises(ValueError, match=exactly("ce_2 must be a scalar tensor or a real number, got bool")):
        adaptive_weights(1.0, True)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # numbers become float32 weights whatever the default dtype
    try:
        w_1, w_2 = adaptive_weights(1.0, 3.0)
    finally:
        torch.set_default_dtype(previous)
    assert w_1.dtype == torch.float32 and w_2.dtype == torch.float32
    assert (w_1.item(), w_2.item()) == (0.25, 0.75)


def test_adaptive_weights_name_the_bad_cross_entropy():
    with pytest.raises(ValueError, match=exactly("ce_1 must be a finite cross-entropy >= 0, got -1.0")):
        adaptive_weights(-1.0, 1.0)
    with pytest.raises(ValueError, match=exactly("ce_2 must be a finite cross-entropy >= 0, got nan")):
        adaptive_weights(1.0, float("nan"))


def test_adaptive_weights_promote_both_to_the_wider_dtype():
    w_1, w_2 = adaptive_weights(torch.tensor(1.0, dtype=torch.float64), torch.tensor(3.0))
    assert (w_1.dtype, w_2.dtype) == (torch.float64, torch.float64) and (w_1.item(), w_2.item()) == (0.25, 0.75)
    # both zero: (0.5, 0.5) in the promoted dtype, whichever argument is the wider one
    for ce_1, ce_2 in ((torch.tensor(0.0), torch.tensor(0.0, dtype=torch.float64)),
                       (torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.0))):
        w_1, w_2 = adaptive_weights(ce_1, ce_2)
        assert (w_1.dtype, w_2.dtype) == (torch.float64, torch.float64) and (w_1.item(), w_2.item()) == (0.5, 0.5)


def test_equal_weights_stay_on_the_inputs_device_whatever_the_default_device():
    ce_1, ce_2 = torch.tensor(0.0), torch.tensor(0.0)
    with torch.device("meta"):  # a tensor made on the default device would land on meta
        w_1, w_2 = adaptive_weights(ce_1, ce_2)
    assert (w_1.device.type, w_2.device.type) == ("cpu", "cpu") and (w_1.item(), w_2.item()) == (0.5, 0.5)


def _views(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.randn(2, 3, dtype=dtype) for _ in range(4)], torch.tensor([0, 2])


def test_aod_losses_name_every_argument():
    from avalanche_sst.functional.losses import aod_losses

    (l1f, l1c, l2f, l2c), y = _views()
    bad = torch.zeros(3)
    for i, name in enumerate(("logits_1f", "logits_1c", "logits_2f", "logits_2c")):
        args = [l1f, l1c, l2f, l2c]
        args[i] = bad
        with pytest.raises(ValueError, match=exactly(f"{name} must be 2-D [batch, classes], got shape (3,)")):
            aod_losses(*args, y)
    for i, name in enumerate(("logits_1c", "logits_2f", "logits_2c"), start=1):
        args = [l1f, l1c, l2f, l2c]
        args[i] = torch.zeros(2, 4)
        with pytest.raises(ValueError, match=exactly(f"shape mismatch: logits_1f has shape (2, 3) but {name} has "
                                                     f"shape (2, 4)")):
            aod_losses(*args, y)
    with pytest.raises(ValueError, match=exactly("targets must be 1-D with one class index per row of logits_1f "
                                                 "(batch 2), got shape (3,)")):
        aod_losses(l1f, l1c, l2f, l2c, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=exactly("alpha must be a finite number >= 0, got -1")):
        aod_losses(l1f, l1c, l2f, l2c, y, alpha=-1)


def test_aod_losses_fixed_weights_and_zero_terms_in_the_logits_dtype():
    from avalanche_sst.functional.losses import aod_losses

    views, y = _views(torch.float64)
    out = aod_losses(*views, y, adaptive=False, use_kd=False, use_cr=False)
    for t in (out.w_1, out.w_2, out.kd_1, out.kd_2, out.cr_1, out.cr_2):
        assert t.dtype == torch.float64
    assert (out.w_1.item(), out.w_2.item(), out.kd_1.item(), out.cr_2.item()) == (0.5, 0.5, 0.0, 0.0)


def test_aod_losses_fixed_weights_and_zero_terms_on_the_logits_device():
    from avalanche_sst.functional.losses import aod_losses

    views, y = _views()
    expected = aod_losses(*views, y, adaptive=False, use_kd=False, use_cr=False)
    with torch.device("meta"):  # a tensor made on the default device would land on meta
        out = aod_losses(*views, y, adaptive=False, use_kd=False, use_cr=False)
    for name in ("total_1", "w_1", "w_2", "kd_1", "kd_2", "cr_1", "cr_2"):
        got = getattr(out, name)
        assert got.device.type == "cpu" and torch.equal(got, getattr(expected, name)), name


def test_kl_and_js_divide_both_logits_by_the_temperature():
    # at T = 2, p = softmax((0, ln 3)/2) and q = softmax((0, ln 2)/2), by hand
    logits_p = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    logits_q = torch.tensor([[0.0, math.log(2.0)]], dtype=torch.float64)
    p = softmax([0.0, math.log(3.0) / 2])
    q = softmax([0.0, math.log(2.0) / 2])
    m = [(a + b) / 2 for a, b in zip(p, q)]
    assert kl_divergence(logits_p, logits_q, temperature=2.0).item() == pytest.approx(kl(p, q), rel=1e-12)
    assert js_divergence(logits_p, logits_q, temperature=2.0).item() == \
        pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m), rel=1e-12)


def test_aod_totals_of_both_students_by_hand():
    from avalanche_sst.functional.losses import aod_losses

    ln3 = math.log(3.0)
    l1f, l1c = [0.0, ln3], [0.0, 0.0]
    l2f, l2c = [0.0, 0.0], [ln3, 0.0]
    as_t = lambda z: torch.tensor([z], dtype=torch.float64)  # noqa: E731
    out = aod_losses(as_t(l1f), as_t(l1c), as_t(l2f), as_t(l2c), torch.tensor([1]), alpha=0.5)
    p1f, p1c, p2f, p2c = softmax(l1f), softmax(l1c), softmax(l2f), softmax(l2c)
    ce_1, ce_2 = -math.log(p1f[1]), -math.log(p2f[1])
    w_1, w_2 = ce_1 / (ce_1 + ce_2), ce_2 / (ce_1 + ce_2)
    m = [(a + b) / 2 for a, b in zip(p1f, p2f)]
    js = 0.5 * kl(p1f, m) + 0.5 * kl(p2f, m)  # symmetric: L_KD^1 = L_KD^2 here
    total_1 = w_2 * ce_1 + w_1 * js + 0.5 * kl(p1f, p1c)
    total_2 = w_1 * ce_2 + w_2 * js + 0.5 * kl(p2f, p2c)
    assert out.total_1.item() == pytest.approx(total_1, rel=1e-12)
    assert out.total_2.item() == pytest.approx(total_2, rel=1e-12)
