"""SST math (functional/sparsity): the boundary values, tie-breaking, devices and error messages
that mutation testing found unchecked, each against a hand value.

Error messages are matched from their start (``^name must``) so that a message naming another
argument, or a renamed one ("XXepochXX must ..."), fails the test.
"""

from __future__ import annotations

import pytest
import torch

from avalanche_sst.functional.sparsity import (
    as_tensor_list,
    count_at_or_below,
    cut_epoch,
    early_switch_reached,
    flat_abs,
    fraction_at_or_below,
    l1_subgradient,
    num_selected,
    real,
    select_smallest,
    soft_threshold_,
    sparsity_ratio,
    validate_reinit_margin,
)

# ``meta`` tensors have a device but no data: they show whether a result follows the device of
# its inputs (the code moves everything to one device) without a GPU.
META = "meta"


# --------------------------------------------------------------------------- real / inputs
def test_real_reads_a_one_element_tensor_and_rejects_others() -> None:
    assert real(torch.tensor(0.25), "x") == 0.25
    assert real(torch.tensor([2.5]), "x") == 2.5
    with pytest.raises(ValueError, match=r"^x must be a real number, got tensor\(\[1\., 1\.\]\) \(Tensor\)$"):
        real(torch.ones(2), "x")
    with pytest.raises(ValueError, match=r"^x must be a real number, got tensor\(True\) \(Tensor\)$"):
        real(torch.tensor(True), "x")
    with pytest.raises(ValueError, match=r"^lr must be a real number, got 'a' \(str\)$"):
        real("a", "lr")


def test_as_tensor_list_rejects_non_sequences_and_strings_by_name() -> None:
    with pytest.raises(ValueError, match=r"^gammas must be a tensor or a sequence of tensors, got int$"):
        as_tensor_list(5)
    with pytest.raises(ValueError, match=r"^gammas must be a tensor or a sequence of tensors, got str$"):
        as_tensor_list("ab")
    with pytest.raises(ValueError, match=r"^gammas\[1\] must be a torch\.Tensor, got int$"):
        as_tensor_list([torch.ones(1), 3])


def test_flat_abs_of_nothing_is_empty_and_follows_the_first_device() -> None:
    assert flat_abs([]).numel() == 0
    assert torch.equal(flat_abs([torch.tensor([-1.0, 2.0]), torch.tensor([[-3.0]])]),
                       torch.tensor([1.0, 2.0, 3.0]))
    mixed = flat_abs([torch.ones(2, device=META), torch.ones(3)])
    assert mixed.device.type == META and mixed.shape == (5,)


# --------------------------------------------------------------------------- eq. (2), (3)
def test_schedule_error_messages_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^epoch must be a real number"):
        sparsity_ratio("a", 0.3, 3.0)
    with pytest.raises(ValueError, match=r"^target_ratio must be a number in the open interval"):
        sparsity_ratio(0, 1.5, 3.0)
    with pytest.raises(ValueError, match=r"^cut_epoch must be a real number"):
        sparsity_ratio(0, 0.3, "a")
    with pytest.raises(ValueError, match=r"^max_epochs must be a real number"):
        cut_epoch("a")
    with pytest.raises(ValueError, match=r"^cut_fraction must be a real number"):
        cut_epoch(9, "a")
    with pytest.raises(ValueError, match=r"^ratio must be a real number"):
        num_selected("a", 3)


def test_schedule_with_a_cut_below_one_epoch() -> None:
    # E_cut = 0.5: SP_r = (0.3 - 1) / 0.5 * 0.25 + 1 = 0.65 at e = 0.25, 1 at e = 0
    assert sparsity_ratio(0.25, 0.3, 0.5) == pytest.approx(0.65, abs=1e-12)
    assert sparsity_ratio(0, 0.3, 1.0) == 1.0
    assert sparsity_ratio(0.5, 0.3, 1.0) == pytest.approx(0.65, abs=1e-12)


def test_schedule_at_the_cut_epoch_is_exactly_target() -> None:
    # the linear branch gives (0.3 - 1) / 3 * 3 + 1 = 0.30000000000000004 in floats;
    # at e = E_cut eq. (2) takes the second branch, Target_r itself
    assert sparsity_ratio(3, 0.3, 3.0) == 0.3
    assert sparsity_ratio(10, 0.1, 10.0) == 0.1


def test_reinit_margin_bound_uses_twice_the_margin() -> None:
    # 0.3 + 2 * 0.3 = 0.9 < 1 is valid (3 * 0.3 would not be)
    assert validate_reinit_margin(0.3, 0.3) == 0.3
    with pytest.raises(ValueError, match=r"^target_ratio must be a number in the open interval"):
        validate_reinit_margin(1.5, 0.1)


# --------------------------------------------------------------------------- selection
def test_ties_are_broken_by_position_even_when_many() -> None:
    # 5000 equal factors: torch's unstable CPU sort does not keep index order at this size
    n = 5000
    (mask,) = select_smallest([torch.zeros(n)], 0.5)
    expected = torch.zeros(n, dtype=torch.bool)
    expected[: n // 2] = True
    assert torch.equal(mask, expected)


def test_select_smallest_nan_message() -> None:
    with pytest.raises(ValueError, match=r"^gammas contain NaN; cannot rank scaling factors$"):
        select_smallest([torch.tensor([1.0, float("nan")])], 0.5)


# --------------------------------------------------------------------------- early switch
def test_zero_tol_and_switch_messages_name_the_argument() -> None:
    g = [torch.tensor([0.0, 1.0])]
    with pytest.raises(ValueError, match=r"^zero_tol must be a real number"):
        count_at_or_below(g, "a")
    with pytest.raises(ValueError, match=r"^target_ratio must be a number in the open interval"):
        early_switch_reached(1.5, g, 0.0)
    with pytest.raises(ValueError, match=r"^gammas holds no scaling factors; the fraction is undefined$"):
        fraction_at_or_below([], 0.0)


def test_no_factors_count_zero_and_switch_at_once() -> None:
    assert count_at_or_below([], 0.5) == 0
    assert early_switch_reached(0.3, [], 0.0) is True


# --------------------------------------------------------------------------- eq. (1) penalty
def test_check_mask_messages_name_the_type() -> None:
    with pytest.raises(ValueError, match=r"^gamma must be a torch\.Tensor, got list$"):
        l1_subgradient([1.0], torch.tensor([True]), 0.1)
    with pytest.raises(ValueError, match=r"^mask must be a torch\.Tensor, got list$"):
        l1_subgradient(torch.ones(1), [True], 0.1)


def test_l1_subgradient_lambda_zero_and_messages() -> None:
    gamma = torch.tensor([-2.0, 0.0, 3.0])
    mask = torch.tensor([True, True, False])
    assert torch.equal(l1_subgradient(gamma, mask, 0.0), torch.zeros(3))
    assert torch.equal(l1_subgradient(gamma, mask, 0.5), torch.tensor([-0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"^lam must be a real number"):
        l1_subgradient(gamma, mask, "a")


def test_l1_subgradient_moves_the_mask_to_gamma() -> None:
    out = l1_subgradient(torch.ones(3, device=META), torch.tensor([True, False, True]), 0.5)
    assert out.device.type == META and out.dtype == torch.float32


def test_soft_threshold_zero_and_messages_and_device() -> None:
    gamma = torch.tensor([-2.0, 0.5, 3.0])
    mask = torch.tensor([True, True, False])
    assert torch.equal(soft_threshold_(gamma.clone(), mask, 0.0), gamma)
    assert torch.equal(soft_threshold_(gamma.clone(), mask, 1.0), torch.tensor([-1.0, 0.0, 3.0]))
    with pytest.raises(ValueError, match=r"^threshold must be a real number"):
        soft_threshold_(gamma.clone(), mask, "a")
    on_meta = soft_threshold_(torch.ones(3, device=META), mask, 0.5)
    assert on_meta.device.type == META
