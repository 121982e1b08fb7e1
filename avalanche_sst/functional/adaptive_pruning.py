"""Adaptive pruning with sparsity-level identification (Ada-QPacknet, Pietron
et al., ECAI 2023, sec. 3.1, Alg. 1, eq. 6-9): pure functions.

* eq. 8-9: a candidate mask keeps, in every layer, a random subset of the
  positions that still have capacity; the layer's sparsity ``s`` (the
  fraction of those positions left out) is drawn uniformly in
  ``[v_min, v_max]``, so the task's density over them is ``1 - s``
  (:func:`draw_candidate_masks`, local ``torch.Generator``).
* eq. 6: a layer's sparsity left = the fraction of its positions no task
  uses; eq. 7: the weighted sparsity ``sum_i |theta_i| * Y_i``
  (:func:`weighted_sparsity_left`).
* Alg. 1 line 13: fitness ``alpha * A / max(A) + beta * Y / max(Y)`` and its
  argmax (:func:`fitness`, :func:`select_candidate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["Candidate", "draw_candidate_masks", "fitness", "select_candidate", "validate_sparsity_bounds",
           "weighted_sparsity_left"]


@dataclass
class Candidate:
    """One lottery-ticket candidate: per layer its drawn sparsity and its keep mask."""

    sparsity: list[float]
    masks: list[Tensor]


def validate_sparsity_bounds(v_min: float, v_max: float) -> tuple[float, float]:
    """``(v_min, v_max)`` as floats with ``0 <= v_min <= v_max < 1``, else a ValueError."""
    v_min, v_max = float(v_min), float(v_max)
    if not 0.0 <= v_min <= v_max < 1.0:
        raise ValueError(f"need 0 <= v_min <= v_max < 1 (sparsity bounds; the paper uses 0.45 and 0.85), "
                         f"got v_min={v_min}, v_max={v_max}")
    return v_min, v_max


def draw_candidate_masks(
    available: Sequence[Tensor],
    population: int,
    v_min: float,
    v_max: float,
    generator: torch.Generator,
) -> list[Candidate]:
    """``population`` candidates over the ``available`` positions of each layer (eq. 8-9).

    In each layer a candidate's sparsity ``s ~ U[v_min, v_max]`` and it keeps
    ``round((1 - s) * n_available)`` available positions chosen uniformly at
    random; positions without capacity are never kept.
    """
    v_min, v_max = validate_sparsity_bounds(v_min, v_max)
    if int(population) < 1:
        raise ValueError(f"population must be >= 1 (the paper's P_S = 16), got {population}")
    for i, a in enumerate(available):
        if a.dtype != torch.bool:
            raise TypeError(f"available[{i}] must be a bool tensor, got {a.dtype}")
    candidates = []
    for _ in range(int(population)):
        sparsity, masks = [], []
        for a in available:
            s = v_min + (v_max - v_min) * float(torch.rand((), generator=generator))
            idx = a.reshape(-1).nonzero().squeeze(1)
            n_keep = int(round((1.0 - s) * idx.numel()))
            chosen = idx[torch.randperm(idx.numel(), generator=generator)[:n_keep]]
            mask = torch.zeros(a.numel(), dtype=torch.bool)
            mask[chosen] = True
            sparsity.append(s)
            masks.append(mask.reshape(a.shape))
        candidates.append(Candidate(sparsity, masks))
    return candidates


def weighted_sparsity_left(occupied: Sequence[Tensor]) -> float:
    """Eq. 6-7: ``sum_i |theta_i| * Y_i`` with ``Y_i`` the fraction of layer i's positions no task uses.

    ``occupied[i]`` marks the positions used by any task (the candidate
    included); the sum is the number of positions still unused.
    """
    # |theta_i| * Y_i is layer i's count of unused positions; summing counts keeps the value exact
    return float(sum(occ.numel() - int(occ.to(torch.bool).sum()) for occ in occupied))


def fitness(accuracies: Sequence[float], sparsities: Sequence[float], alpha: float = 0.9,
            beta: float = 0.1) -> Tensor:
    """Alg. 1 line 13: ``alpha * A / max(A) + beta * Y / max(Y)`` per candidate (float64).

    A term whose maximum is 0 contributes 0 (no candidate is better on it).
    """
    acc = torch.as_tensor(accuracies, dtype=torch.float64).reshape(-1)
    spa = torch.as_tensor(sparsities, dtype=torch.float64).reshape(-1)
    if acc.numel() == 0 or acc.numel() != spa.numel():
        raise ValueError(f"need one accuracy and one sparsity per candidate, got {acc.numel()} and {spa.numel()}")
    if bool((acc < 0).any()) or bool((spa < 0).any()):
        raise ValueError("accuracies and sparsities must be non-negative")

    def normalised(v: Tensor) -> Tensor:
        top = v.max()
        return v / top if top > 0 else torch.zeros_like(v)

    return float(alpha) * normalised(acc) + float(beta) * normalised(spa)


def select_candidate(accuracies: Sequence[float], sparsities: Sequence[float], alpha: float = 0.9,
                     beta: float = 0.1) -> int:
    """The index of the fittest candidate (the first one on ties)."""
    return int(torch.argmax(fitness(accuracies, sparsities, alpha, beta)))
