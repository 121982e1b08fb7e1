"""Diverse re-initialization of useless filters, Lee & Kim 2023, sec. III-C, eq. 4.

After SST the Target_r fraction of scaling factors with the smallest |gamma|
("useless" filters) is near 0. Each is redrawn uniformly from the range R
between the (Target_r + I) and (1 - I) quantiles of all |gamma| (eq. 4), so
the reused filters start at a scale that fits the rest of the network. Conv
weights and BN biases are left as they are. Different margins I (0.1 and 0.2
for AOD's two students) and different draws give diverse students.

When SST did not get there (a short phase), some of those factors are still
live; :class:`ReinitPlugin` then re-draws only the freed ones (|gamma| <=
zero_tol) unless ``only_freed=False``, and warns once. MultiStepSST calls
:func:`diverse_reinit_` without ``zero_tol``: the paper's eq. 4 as written.
"""

from __future__ import annotations

import warnings

import torch
from avalanche.core import SupervisedPlugin

from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.models import require_scaling_factors
from avalanche_sst.functional.reinit import draw_reinit_values, layer_reinit_ranges, reinit_range
from avalanche_sst.functional.sparsity import (DEFAULT_TARGET_RATIO, num_selected, real, select_smallest, validate_ratio,
                                               validate_reinit_margin)
from avalanche_sst.plugins.sst import DEFAULT_ZERO_TOL, SSTPlugin

#: Where eq. 4's range comes from: all factors (the paper) or each layer alone.
REINIT_SCOPES = ("global", "layer")


@torch.no_grad()
def diverse_reinit_(
    model: torch.nn.Module,
    target_ratio: float = DEFAULT_TARGET_RATIO,
    margin: float = 0.1,
    generator: torch.Generator | None = None,
    scope: str = "global",
    zero_tol: float | None = None,
) -> tuple[list[torch.Tensor], tuple[float, float]]:
    """Re-initialise ``model``'s useless scaling factors in place (eq. 4).

    :param scope: "global" (the paper: one range over all |gamma|) or "layer"
        (each layer's own range, :func:`layer_reinit_ranges`).
    :param zero_tol: None (eq. 4: the Target_r fraction with the smallest |gamma|) or
        a tolerance: of those, only the ones SST freed (|gamma| <= zero_tol) are redrawn.
    Returns the per-layer masks of the re-initialised factors and the range
    (with ``scope="layer"``: the lowest low and highest high of the layers
    that had useless factors).
    """
    if scope not in REINIT_SCOPES:
        raise ValueError(f"scope must be one of {REINIT_SCOPES} (paper: 'global'), got {scope!r}")
    factors = require_scaling_factors(model, "diverse re-initialization")
    gammas = [f.bn.weight for f in factors]
    if scope == "global":
        abs_all = torch.cat([g.detach().abs().flatten() for g in gammas])
        ranges = [reinit_range(abs_all, target_ratio, margin)] * len(gammas)
    else:
        ranges = layer_reinit_ranges([g.detach().abs() for g in gammas], target_ratio, margin)
    masks = select_smallest([g.detach() for g in gammas], target_ratio)
    if zero_tol is not None:
        masks = [m & (g.detach().abs() <= zero_tol) for m, g in zip(masks, gammas)]
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    used = []
    for gamma, mask, (low, high) in zip(gammas, masks, ranges):
        n = int(mask.sum())
        if n:
            values = draw_reinit_values(n, low, high, generator)
            gamma[mask] = values.to(device=gamma.device, dtype=gamma.dtype)
            used.append((low, high))
    if scope == "global" or not used:
        return masks, ranges[0]
    return masks, (min(lo for lo, _ in used), max(hi for _, hi in used))


class ReinitPlugin(SupervisedPlugin):
    """Before each experience after the first, re-initialise the useless factors.

    :param target_ratio: Target_r: the fraction of factors treated as useless.
    :param margin: I of eq. 4; requires target_ratio + 2 * margin < 1.
    :param seed: seeds the plugin's own generator (the global RNG is untouched).
    :param skip_first: leave experience 0 (trained from scratch) alone.
    :param scope: "global" (eq. 4, the paper) or "layer" (each layer's own range).
    :param only_freed: re-draw only the useless factors that sparsity training freed
        (|gamma| <= zero_tol), so live filters of a phase too short to reach Target_r are
        kept (warned once); False re-draws all Target_r * N smallest, as eq. 4 does.
    :param zero_tol: the "freed" tolerance; None takes the SSTPlugin's of the same
        strategy, else ``DEFAULT_ZERO_TOL``.
    """

    def __init__(self, target_ratio: float = DEFAULT_TARGET_RATIO, margin: float = 0.1, seed: int = 0,
                 skip_first: bool = True, scope: str = "global", only_freed: bool = True,
                 zero_tol: float | None = None):
        super().__init__()
        if scope not in REINIT_SCOPES:
            raise ValueError(f"scope must be one of {REINIT_SCOPES} (paper: 'global'), got {scope!r}")
        if not isinstance(only_freed, bool):
            raise ValueError(f"only_freed must be True or False, got {only_freed!r}")
        if zero_tol is not None and not real(zero_tol, "zero_tol") >= 0:
            raise ValueError(f"zero_tol must be >= 0 or None (the SSTPlugin's), got {zero_tol!r}")
        self.scope = scope
        self.target_ratio = validate_ratio(target_ratio, "target_ratio")
        self.margin = validate_reinit_margin(self.target_ratio, margin)
        self.generator = torch.Generator().manual_seed(seed)
        self.skip_first = skip_first
        self.only_freed = only_freed
        self.zero_tol = zero_tol
        self.last_masks: list[torch.Tensor] = []
        self.last_range: tuple[float, float] | None = None
        self._warned_live = False

    def _zero_tol(self, strategy) -> float:
        if self.zero_tol is not None:
            return float(self.zero_tol)
        sst = [p for p in getattr(strategy, "plugins", ()) if isinstance(p, SSTPlugin)]
        return sst[0].zero_tol if sst else DEFAULT_ZERO_TOL

    def before_training_exp(self, strategy, **kwargs):
        if self.skip_first and strategy.clock.train_exp_counter == 0:
            return
        tol = self._zero_tol(strategy) if self.only_freed else None
        self.last_masks, self.last_range = diverse_reinit_(
            strategy.model, self.target_ratio, self.margin, self.generator, self.scope, zero_tol=tol
        )
        count = sum(int(m.sum()) for m in self.last_masks)
        useless = num_selected(self.target_ratio, sum(m.numel() for m in self.last_masks))
        log_scalar(strategy, "Reinit/count", count)
        log_scalar(strategy, "Reinit/kept_live", useless - count)
        log_scalar(strategy, "Reinit/low", self.last_range[0])
        log_scalar(strategy, "Reinit/high", self.last_range[1])
        if count < useless and not self._warned_live:
            self._warned_live = True
            warnings.warn(
                f"ReinitPlugin: before experience {strategy.clock.train_exp_counter} only {count} of the "
                f"{useless} useless scaling factors (target_ratio={self.target_ratio:g}) were freed by "
                f"sparsity training (|gamma| <= zero_tol={tol:g}); the other {useless - count} are live filters "
                f"and were kept. Train the SST phase longer or with a larger lam, or pass only_freed=False to "
                f"re-draw all {useless} as eq. 4 does. (Warned once; Reinit/kept_live logs every step.)",
                stacklevel=2,
            )
