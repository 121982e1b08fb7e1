"""functional/reinit: the survivors of its mutation run — whole error messages (each names the
argument), booleans and fractions refused as ``n``, the draw's dtype and device, an empty split."""

from __future__ import annotations

import math
import re

import pytest
import torch

from avalanche_sst.functional.reinit import draw_reinit_values, layer_reinit_ranges, mean_abs_split, reinit_range


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("n", [True, 2.5, -1])
def test_draw_refuses_booleans_fractions_and_negatives_as_n(n):
    with pytest.raises(ValueError, match=exactly(f"n must be a non-negative integer, got {n!r}")):
        draw_reinit_values(n, 0.0, 1.0, torch.Generator())


def test_draw_messages_name_low_high_and_generator():
    with pytest.raises(ValueError, match="^low must be a real number, got 'a'"):
        draw_reinit_values(2, "a", 1.0, torch.Generator())
    with pytest.raises(ValueError, match="^high must be a real number, got 'b'"):
        draw_reinit_values(2, 0.0, "b", torch.Generator())
    with pytest.raises(ValueError, match=exactly("generator must be a torch.Generator, got int")):
        draw_reinit_values(2, 0.0, 1.0, 5)


def test_draw_keeps_the_requested_dtype():
    out = draw_reinit_values(3, 0.25, 0.75, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert out.dtype == torch.float64
    u = torch.rand(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(out, 0.25 + 0.5 * u)


def test_draw_is_on_the_generators_device_whatever_the_default_device():
    expected = draw_reinit_values(3, 0.0, 2.0, torch.Generator().manual_seed(1))
    with torch.device("meta"):  # a draw on the default device would land on meta, not the generator's CPU
        out = draw_reinit_values(3, 0.0, 2.0, torch.Generator().manual_seed(1))
    assert out.device.type == "cpu" and torch.equal(out, expected)


def test_layer_ranges_name_abs_gammas():
    with pytest.raises(ValueError, match=exactly("abs_gammas[1] must be a torch.Tensor, got int")):
        layer_reinit_ranges([torch.ones(3), 3], 0.3, 0.1)
    with pytest.raises(ValueError, match=exactly("abs_gammas must be a tensor or a sequence of tensors, got int")):
        layer_reinit_ranges(3, 0.3, 0.1)
    with pytest.raises(ValueError, match=exactly("abs_gammas holds no layer")):
        layer_reinit_ranges([], 0.3, 0.1)


def test_reinit_range_messages():
    with pytest.raises(ValueError, match="^target_ratio must be a number in the open interval"):
        reinit_range(torch.ones(3), 1.5, 0.1)
    with pytest.raises(ValueError, match=exactly("abs_gammas must be a torch.Tensor, got list")):
        reinit_range([0.1, 0.2], 0.3, 0.1)
    with pytest.raises(ValueError, match=exactly("abs_gammas is empty")):
        reinit_range(torch.ones(0), 0.3, 0.1)
    with pytest.raises(ValueError, match=exactly("abs_gammas contains NaN")):
        reinit_range(torch.tensor([0.1, float("nan")]), 0.3, 0.1)
    with pytest.raises(ValueError, match=exactly("abs_gammas must be absolute values (>= 0); pass gamma.abs()")):
        reinit_range(torch.tensor([0.1, -0.2]), 0.3, 0.1)


def test_mean_abs_split_of_no_layer_is_nan_on_both_sides():
    selected, rest = mean_abs_split([], 0.5)
    assert math.isnan(selected) and math.isnan(rest)


def test_mean_abs_split_by_hand():
    # |gamma| = 0.1, 0.4, 0.2, 0.8: the smaller half {0.1, 0.2} and the rest {0.4, 0.8}
    selected, rest = mean_abs_split([torch.tensor([-0.1, 0.4]), torch.tensor([0.2, -0.8])], 0.5)
    assert selected == pytest.approx(0.15, abs=1e-7) and rest == pytest.approx(0.6, abs=1e-7)
