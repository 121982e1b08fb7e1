"""Ada-QPacknet's Alg. 1 (functional/adaptive_pruning): the boundaries, defaults and dtypes that
mutation testing found unchecked, each against a hand value."""

from __future__ import annotations

import pytest
import torch

from avalanche_sst.functional.adaptive_pruning import (
    draw_candidate_masks,
    fitness,
    select_candidate,
    validate_sparsity_bounds,
    weighted_sparsity_left,
)


def test_sparsity_bounds_are_closed_at_0_and_open_at_1() -> None:
    assert validate_sparsity_bounds(0.0, 0.0) == (0.0, 0.0)
    assert validate_sparsity_bounds(0.3, 0.3) == (0.3, 0.3)
    for bad in ((0.5, 1.0), (0.5, 1.5), (-0.1, 0.5)):
        with pytest.raises(ValueError, match="need 0 <= v_min <= v_max < 1"):
            validate_sparsity_bounds(*bad)


def test_a_population_of_one_and_a_non_bool_mask() -> None:
    cands = draw_candidate_masks([torch.ones(10, dtype=torch.bool)], 1, 0.5, 0.5, torch.Generator().manual_seed(0))
    assert len(cands) == 1 and int(cands[0].masks[0].sum()) == 5  # round((1 - 0.5) * 10)
    with pytest.raises(TypeError, match=r"available\[0\] must be a bool tensor, got torch.float32"):
        draw_candidate_masks([torch.ones(3)], 2, 0.5, 0.5, torch.Generator())


def test_weighted_sparsity_left_reads_counts_as_occupied_flags() -> None:
    # bits used per position (2, 0, 5): two positions are occupied, one is free
    assert weighted_sparsity_left([torch.tensor([2, 0, 5], dtype=torch.uint8)]) == 1.0


def test_fitness_defaults_and_float64_exactness() -> None:
    acc, spa = [0.5, 1.0, 0.9], [100.0, 20.0, 60.0]
    expected = torch.tensor([0.9 * (a / 1.0) + 0.1 * (s / 100.0) for a, s in zip(acc, spa)], dtype=torch.float64)
    scores = fitness(acc, spa)  # default alpha = 0.9, beta = 0.1
    assert scores.dtype == torch.float64 and torch.equal(scores, expected)
    # a single candidate: both terms normalise to 1
    assert fitness([0.5], [7.0]).tolist() == [pytest.approx(1.0)]
    # all-zero terms contribute exactly 0 (no 0 / 0)
    assert torch.equal(fitness([0.0, 0.0], [0.0, 0.0]), torch.zeros(2, dtype=torch.float64))


def test_fitness_rejects_bad_input_with_its_message() -> None:
    with pytest.raises(ValueError, match="need one accuracy and one sparsity per candidate, got 0 and 0"):
        fitness([], [])
    with pytest.raises(ValueError, match="need one accuracy and one sparsity per candidate, got 2 and 1"):
        fitness([0.1, 0.2], [1.0])
    for acc, spa in (([-0.1, 1.0], [1.0, 1.0]), ([0.1, 1.0], [1.0, -1.0])):
        with pytest.raises(ValueError, match="^accuracies and sparsities must be non-negative$"):
            fitness(acc, spa)


def test_selection_uses_its_alpha_and_beta() -> None:
    # defaults: .9 * .95 + .1 * 1 = .955 beats .9 * 1 + .1 * .5 = .95 (alpha = 1.9 would pick 1)
    assert select_candidate([0.95, 1.0], [100.0, 50.0]) == 0
    # alpha = beta = .5: .5 + .05 = .55 < .25 + .5 = .75 (beta = .1 would pick 0)
    assert select_candidate([1.0, 0.5], [10.0, 100.0], alpha=0.5, beta=0.5) == 1
