"""A run that diverges is recorded as diverged, not raised: a grid point of a selection may sit at a
learning rate its method cannot train at, and the sweep must go on to the other points.

A step has diverged when it ends with a non-finite weight or buffer, when it raises while one is
non-finite or while the network's last output is (Avalanche's iCaRL loss refuses NaN outputs: "all
elements of input should be between 0 and 1"), or when
:class:`~avalanche_sst.plugins.guard.FiniteLossGuard` refused a non-finite loss. The run stops at that
step; its ``done.json`` names it (``diverged_at_step``, 1-based) and that step and every later one score
NaN, so no table reads a number from a network that computes none, and the selection rule never keeps a
grid point at which any seed diverged (:func:`avalanche_sst.experiments.selection.best_mean`). Any other
error is raised as before.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from avalanche_sst.plugins.guard import NonFiniteLossError

__all__ = ["diverged", "diverged_tail", "weights_finite"]


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``model`` is finite (one device sync)."""
    checks = [torch.isfinite(t).all() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def diverged(error: BaseException, strategy) -> bool:
    """Whether ``error``, raised in a step of ``strategy``, means the run diverged (else it is a bug to
    raise): a refused non-finite loss, a non-finite weight or buffer (iCaRL's class means are buffers),
    or a non-finite output of the last forward pass (a dead feature normalised to 0/0 by iCaRL's
    nearest-mean classifier, with finite weights)."""
    if isinstance(error, NonFiniteLossError):
        return True
    if not isinstance(error, Exception):
        return False
    output = getattr(strategy, "mb_output", None)
    return not weights_finite(strategy.model) or (isinstance(output, torch.Tensor)
                                                  and not bool(torch.isfinite(output.detach()).all()))


def diverged_tail(names: Sequence[str], steps: int, diverged_at: int, partial_cost: float, scores: list,
                  costs: list, memory: list, inference: list) -> tuple[list, list, list, list]:
    """A run's per-step records (``scores``, ``costs``, ``memory``, ``inference``) completed to ``steps``
    after it diverged in step ``diverged_at`` (1-based): NaN for every score, memory and inference of that
    step and the later ones (the first step's score keys; ``names`` when no step was scored); the cost that
    step spent before it diverged (``partial_cost``, if it is not counted yet), then 0 (no later step trained)."""
    names = list(scores[0]) if scores else list(names)  # the per-group scores of class-incremental runs too
    nan = [math.nan] * steps
    costs = costs + [partial_cost] * (diverged_at - len(costs)) + [0.0] * (steps - diverged_at)
    return ([*scores, *({name: math.nan for name in names} for _ in range(steps - len(scores)))], costs,
            memory + nan[len(memory):], inference + nan[len(inference):])
