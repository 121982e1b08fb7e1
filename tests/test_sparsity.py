"""Hand-computed checks of avalanche_sst.functional.sparsity (eq. 1-4 of Lee & Kim 2023)."""

import math

import pytest
import torch

from avalanche_sst.functional import reinit as ri
from avalanche_sst.functional import sparsity as sp


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def test_validate_ratio_accepts_open_interval():
    assert sp.validate_ratio(0.3, "target_ratio") == 0.3
    assert sp.validate_ratio(1e-9, "x") == 1e-9
    assert isinstance(sp.validate_ratio(0.5, "x"), float)


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, 1.5, -0.1, float("nan"), float("inf"), "0.3", None, True])
def test_validate_ratio_rejects_and_names_argument(bad):
    with pytest.raises(ValueError) as exc:
        sp.validate_ratio(bad, "target_ratio")
    msg = str(exc.value)
    assert "target_ratio" in msg
    assert "(0, 1)" in msg
    assert "0.3" in msg  # paper default


def test_validate_reinit_margin_accepts_paper_values():
    assert sp.validate_reinit_margin(0.3, 0.1) == 0.1
    assert sp.validate_reinit_margin(0.3, 0.2) == 0.2  # 0.3 + 0.4 = 0.7 < 1
    assert sp.validate_reinit_margin(0.3, 0.0) == 0.0


@pytest.mark.parametrize("bad", [0.35, 0.4, -0.1, 1.0, float("nan"), "0.1", None])
def test_validate_reinit_margin_rejects(bad):
    # bound for target 0.3: (1 - 0.3) / 2 = 0.35; 0.3 + 2*0.35 = 1.0 is not < 1
    with pytest.raises(ValueError) as exc:
        sp.validate_reinit_margin(0.3, bad)
    assert "margin" in str(exc.value)
    assert "0.35" in str(exc.value)


def test_validate_reinit_margin_rejects_bad_target():
    with pytest.raises(ValueError, match="target_ratio"):
        sp.validate_reinit_margin(1.0, 0.1)


# --------------------------------------------------------------------------
# eq. (3)
# --------------------------------------------------------------------------
def test_cut_epoch_values():
    assert sp.cut_epoch(300) == pytest.approx(100.0)  # 300 / 3
    assert sp.cut_epoch(10) == pytest.approx(10 / 3)  # 3.333...
    assert sp.cut_epoch(10, 0.5) == pytest.approx(5.0)
    assert sp.cut_epoch(10, 1.0) == pytest.approx(10.0)
    assert sp.cut_epoch(1) == pytest.approx(1 / 3)


@pytest.mark.parametrize("frac", [0.0, -0.1, 1.5, float("nan")])
def test_cut_epoch_rejects_fraction(frac):
    with pytest.raises(ValueError, match="cut_fraction"):
        sp.cut_epoch(10, frac)


@pytest.mark.parametrize("e_max", [0, 0.5, -3, float("nan")])
def test_cut_epoch_rejects_max_epochs(e_max):
    with pytest.raises(ValueError, match="max_epochs"):
        sp.cut_epoch(e_max)


# --------------------------------------------------------------------------
# eq. (2)
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0, 1.0),  # (0.3-1)/10*0 + 1 = 1
        (5, 0.65),  # -0.7/10*5 + 1 = -0.35 + 1 = 0.65
        (9, 0.37),  # -0.07*9 + 1 = -0.63 + 1 = 0.37
        (10, 0.3),  # e >= E_cut -> Target_r
        (15, 0.3),
    ],
)
def test_sparsity_ratio_schedule(epoch, expected):
    assert sp.sparsity_ratio(epoch, 0.3, 10) == pytest.approx(expected)


def test_sparsity_ratio_fractional_cut():
    cut = 10 / 3  # E_max = 10
    # epoch 3 < 3.33: -0.7 / (10/3) * 3 + 1 = -0.7 * 0.9 + 1 = 0.37
    assert sp.sparsity_ratio(3, 0.3, cut) == pytest.approx(0.37)
    # epoch 1: -0.7 * 0.3 + 1 = 0.79
    assert sp.sparsity_ratio(1, 0.3, cut) == pytest.approx(0.79)
    # epoch 4 >= 3.33 -> 0.3
    assert sp.sparsity_ratio(4, 0.3, cut) == pytest.approx(0.3)


def test_sparsity_ratio_nonpositive_cut_is_target_at_once():
    assert sp.sparsity_ratio(0, 0.3, 0) == 0.3
    assert sp.sparsity_ratio(0, 0.3, -1.0) == 0.3


def test_sparsity_ratio_validation():
    with pytest.raises(ValueError, match="epoch"):
        sp.sparsity_ratio(-1, 0.3, 10)
    with pytest.raises(ValueError, match="target_ratio"):
        sp.sparsity_ratio(0, 1.0, 10)
    with pytest.raises(ValueError, match="cut_epoch"):
        sp.sparsity_ratio(0, 0.3, float("nan"))


# --------------------------------------------------------------------------
# num_selected
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ratio, n, expected",
    [
        (0.4, 5, 2),  # 2.0
        (0.3, 5, 2),  # 1.5 -> half up -> 2
        (0.25, 2, 1),  # 0.5 -> 1
        (0.1, 4, 0),  # 0.4 -> 0
        (0.3, 10, 3),  # 3.0000000000000004 -> 3
        (0.65, 10, 7),  # 6.5 -> 7
        (1.0, 7, 7),
        (0.0, 7, 0),
        (0.5, 0, 0),
    ],
)
def test_num_selected(ratio, n, expected):
    assert sp.num_selected(ratio, n) == expected


def test_num_selected_validation():
    with pytest.raises(ValueError, match="ratio"):
        sp.num_selected(1.2, 5)
    with pytest.raises(ValueError, match="ratio"):
        sp.num_selected(float("nan"), 5)
    with pytest.raises(ValueError, match="n must"):
        sp.num_selected(0.5, -1)
    with pytest.raises(ValueError, match="n must"):
        sp.num_selected(0.5, 2.0)


# --------------------------------------------------------------------------
# select_smallest
# --------------------------------------------------------------------------
def test_select_smallest_global_ranking():
    g1 = torch.tensor([0.5, -0.1, 0.3])
    g2 = torch.tensor([0.05, 0.9])
    # N = 5, round(0.4*5) = 2; |g| sorted: 0.05 (g2[0]), 0.1 (g1[1]), 0.3, 0.5, 0.9
    m1, m2 = sp.select_smallest([g1, g2], 0.4)
    assert m1.dtype == torch.bool and m2.dtype == torch.bool
    assert m1.tolist() == [False, True, False]
    assert m2.tolist() == [True, False]


def test_select_smallest_ties_broken_by_position():
    g1 = torch.tensor([0.1, -0.1, 0.2])
    g2 = torch.tensor([0.1])
    # N = 4, k = round(0.5*4) = 2; |g| = 0.1, 0.1, 0.2, 0.1 -> first two 0.1s by position
    m1, m2 = sp.select_smallest([g1, g2], 0.5)
    assert m1.tolist() == [True, True, False]
    assert m2.tolist() == [False]
    # k = round(0.75*4) = 3 -> all three 0.1s
    m1, m2 = sp.select_smallest([g1, g2], 0.75)
    assert m1.tolist() == [True, True, False]
    assert m2.tolist() == [True]


def test_select_smallest_extremes_shapes_and_no_side_effects():
    g1 = torch.tensor([[0.4, -0.2], [0.0, 0.6]], requires_grad=True)
    g2 = torch.tensor([0.3])
    before = g1.detach().clone()
    m1, m2 = sp.select_smallest([g1, g2], 1.0)
    assert m1.shape == (2, 2) and m1.all() and m2.all()
    m1, m2 = sp.select_smallest([g1, g2], 0.0)
    assert not m1.any() and not m2.any()
    # N = 5, k = round(0.6*5) = 3: |g| = 0.4, 0.2, 0.0, 0.6, 0.3 -> 0.0, 0.2, 0.3
    m1, m2 = sp.select_smallest([g1, g2], 0.6)
    assert m1.tolist() == [[False, True], [True, False]]
    assert m2.tolist() == [True]
    assert torch.equal(g1.detach(), before)
    assert g1.grad is None
    assert sp.select_smallest([], 0.3) == []


def test_select_smallest_single_tensor_and_validation():
    (m,) = sp.select_smallest(torch.tensor([3.0, 1.0, 2.0]), 0.34)  # round(1.02) = 1
    assert m.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="ratio"):
        sp.select_smallest([torch.tensor([1.0])], 1.5)
    with pytest.raises(ValueError, match="NaN"):
        sp.select_smallest([torch.tensor([1.0, float("nan")])], 0.5)
    with pytest.raises(ValueError, match=r"gammas\[1\]"):
        sp.select_smallest([torch.tensor([1.0]), [2.0]], 0.5)


# --------------------------------------------------------------------------
# counting and the early switch
# --------------------------------------------------------------------------
def test_count_and_fraction_at_or_below():
    gammas = [torch.tensor([0.0, -0.125, 0.5]), torch.tensor([0.25, -0.0625])]
    # |g| <= 0.125: 0.0, 0.125, 0.0625 -> 3 of 5
    assert sp.count_at_or_below(gammas, 0.125) == 3
    assert sp.fraction_at_or_below(gammas, 0.125) == pytest.approx(0.6)
    # tol 0: only the exact zero
    assert sp.count_at_or_below(gammas, 0.0) == 1
    assert sp.fraction_at_or_below(gammas, 0.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="zero_tol"):
        sp.count_at_or_below(gammas, -1.0)
    with pytest.raises(ValueError, match="no scaling factors"):
        sp.fraction_at_or_below([], 0.1)


def test_effective_sparsity_ratio_early_switch():
    # Target 0.4, N = 5 -> num_selected = round(2.0) = 2 factors must be <= tol.
    # Scheduled at epoch 2 with cut 10: (0.4-1)/10*2 + 1 = -0.12 + 1 = 0.88
    one_zero = [torch.tensor([0.0, 0.5, 0.3]), torch.tensor([0.2, 0.9])]
    two_zero = [torch.tensor([0.0, 0.5, 0.3]), torch.tensor([1e-4, 0.9])]
    assert sp.effective_sparsity_ratio(2, 0.4, 10, one_zero, 1e-3) == pytest.approx(0.88)
    assert sp.effective_sparsity_ratio(2, 0.4, 10, two_zero, 1e-3) == pytest.approx(0.4)
    assert sp.early_switch_reached(0.4, two_zero, 1e-3) is True
    assert sp.early_switch_reached(0.4, one_zero, 1e-3) is False
    # latched by the caller: stays at Target_r even when the count drops again
    assert sp.effective_sparsity_ratio(2, 0.4, 10, one_zero, 1e-3, already_switched=True) == 0.4
    # after E_cut the schedule is Target_r anyway
    assert sp.effective_sparsity_ratio(12, 0.4, 10, one_zero, 1e-3) == pytest.approx(0.4)


# --------------------------------------------------------------------------
# eq. (1): penalty on the selected set
# --------------------------------------------------------------------------
def test_l1_subgradient_signs_and_mask():
    gamma = torch.tensor([0.5, -0.2, 0.0, -0.7], requires_grad=True)
    mask = torch.tensor([True, True, True, False])
    # 0.01 * sign: [+0.01, -0.01, 0 (sign 0), 0 (unmasked)]
    out = sp.l1_subgradient(gamma, mask, 0.01)
    assert torch.allclose(out, torch.tensor([0.01, -0.01, 0.0, 0.0]))
    assert not out.requires_grad
    assert out.dtype == gamma.dtype


def test_l1_subgradient_validation():
    gamma = torch.tensor([0.5, -0.2])
    with pytest.raises(ValueError, match="mask shape"):
        sp.l1_subgradient(gamma, torch.tensor([True]), 0.1)
    with pytest.raises(ValueError, match="bool"):
        sp.l1_subgradient(gamma, torch.tensor([1.0, 0.0]), 0.1)
    with pytest.raises(ValueError, match="lam"):
        sp.l1_subgradient(gamma, torch.tensor([True, False]), -0.1)


def test_soft_threshold_in_place():
    gamma = torch.nn.Parameter(torch.tensor([0.5, -0.2, 0.05, -0.7]))
    mask = torch.tensor([True, True, True, False])
    # masked: 0.5-0.1=0.4, -(0.2-0.1)=-0.1, max(0.05-0.1,0)=0; unmasked -0.7 kept
    out = sp.soft_threshold_(gamma, mask, 0.1)
    assert out is gamma
    assert torch.allclose(gamma.detach(), torch.tensor([0.4, -0.1, 0.0, -0.7]))
    with pytest.raises(ValueError, match="threshold"):
        sp.soft_threshold_(gamma, mask, -0.1)


# --------------------------------------------------------------------------
# eq. (4)
# --------------------------------------------------------------------------
def test_reinit_range_on_known_vector():
    v = torch.tensor([0.7, 0.0, 1.0, 0.3, 0.5, 0.1, 0.9, 0.2, 0.6, 0.4, 0.8])  # 0..10/10 shuffled
    # n = 11: q 0.3+0.1 = 0.4 -> position 0.4*10 = 4 -> 0.4; q 1-0.1 = 0.9 -> position 9 -> 0.9
    low, high = ri.reinit_range(v, 0.3, 0.1)
    assert low == pytest.approx(0.4, abs=1e-6) and high == pytest.approx(0.9, abs=1e-6)
    # margin 0.2: q 0.5 -> 0.5; q 0.8 -> 0.8
    low, high = ri.reinit_range(v, 0.3, 0.2)
    assert low == pytest.approx(0.5, abs=1e-6) and high == pytest.approx(0.8, abs=1e-6)


def test_reinit_range_interpolates_linearly():
    v = torch.tensor([3.0, 0.0, 2.0, 1.0])  # sorted 0, 1, 2, 3 (n = 4)
    # q 0.4 -> position 0.4*3 = 1.2 -> 1 + 0.2*(2-1) = 1.2
    # q 0.9 -> position 0.9*3 = 2.7 -> 2 + 0.7*(3-2) = 2.7
    low, high = ri.reinit_range(v, 0.3, 0.1)
    assert low == pytest.approx(1.2) and high == pytest.approx(2.7)
    # margin 0: q 0.3 -> position 0.9 -> 0.9; q 1 -> 3
    low, high = ri.reinit_range(v, 0.3, 0.0)
    assert low == pytest.approx(0.9) and high == pytest.approx(3.0)


def test_reinit_range_validation():
    v = torch.tensor([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="margin"):
        ri.reinit_range(v, 0.3, 0.35)
    with pytest.raises(ValueError, match="target_ratio"):
        ri.reinit_range(v, 0.0, 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        ri.reinit_range(torch.tensor([-1.0, 1.0]), 0.3, 0.1)
    with pytest.raises(ValueError, match="1-D"):
        ri.reinit_range(v.reshape(1, 3), 0.3, 0.1)
    with pytest.raises(ValueError, match="empty"):
        ri.reinit_range(torch.tensor([]), 0.3, 0.1)


def test_draw_reinit_values_range_reproducible_and_private_rng():
    torch.manual_seed(123)
    expected_global = torch.rand(3)
    torch.manual_seed(123)
    a = ri.draw_reinit_values(500, 0.2, 0.6, torch.Generator().manual_seed(7))
    # the global RNG was not advanced by the draw
    assert torch.equal(torch.rand(3), expected_global)
    b = ri.draw_reinit_values(500, 0.2, 0.6, torch.Generator().manual_seed(7))
    c = ri.draw_reinit_values(500, 0.2, 0.6, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (500,)
    assert bool((a >= 0.2).all()) and bool((a < 0.6).all())
    # uniform on [0.2, 0.6): mean 0.4, sd 0.4/sqrt(12) = 0.115; sd of mean ~0.0052
    assert float(a.mean()) == pytest.approx(0.4, abs=0.03)
    # spread covers most of the range
    assert float(a.min()) < 0.25 and float(a.max()) > 0.55


def test_draw_reinit_values_edge_and_validation():
    g = torch.Generator().manual_seed(0)
    assert torch.equal(ri.draw_reinit_values(3, 0.5, 0.5, g), torch.full((3,), 0.5))
    assert ri.draw_reinit_values(0, 0.1, 0.2, g).numel() == 0
    with pytest.raises(ValueError, match="low"):
        ri.draw_reinit_values(3, 0.6, 0.2, g)
    with pytest.raises(ValueError, match="generator"):
        ri.draw_reinit_values(3, 0.1, 0.2, None)
    with pytest.raises(ValueError, match="n must"):
        ri.draw_reinit_values(-1, 0.1, 0.2, g)
    with pytest.raises(ValueError, match="high"):
        ri.draw_reinit_values(2, 0.1, math.inf, g)
