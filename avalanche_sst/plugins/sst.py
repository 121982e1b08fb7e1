"""Selective sparsity training (SST), Lee & Kim 2023, sec. III-B, eq. 1-3.

At each epoch start the SP_r fraction of filter scaling factors (the weights
of every BatchNorm2d directly after a Conv2d) with the smallest |gamma| is
selected, globally over the network; SP_r follows eq. 2 from 1 down to
Target_r at E_cut = E_max / 3 (eq. 3), and drops to Target_r at once when
Target_r * N factors are already at or below ``zero_tol``. After backward, the
L1 subgradient ``lam * sign(gamma)`` is added to the selected factors'
gradients only (eq. 1 restricted to the selected set, applied the way Network
Slimming applies it). ``selective=False`` penalises every factor: that is the
base sparsity training (BST) of Network Slimming, for the ablation.

Defaults: the paper trains 300 epochs with a small lambda; our CPU presets
run a few epochs, so ``lam`` is larger (see ``DEFAULT_LAM``) so that the
Target_r fraction actually reaches ``zero_tol`` within the phase. A phase that
ends short of it (a few dozen iterations are not enough) warns once, with the
numbers and the fix; composed with EWC, a learning rate at which SGD cannot
converge on EWC's penalty is refused before the step trains
(:func:`~avalanche_sst.plugins.guard.check_ewc_step_size`).
"""

from __future__ import annotations

import warnings

import torch
from avalanche.core import SupervisedPlugin

from avalanche_sst.metrics.logging import log_histogram, log_scalar
from avalanche_sst.models import require_scaling_factors
from avalanche_sst.plugins.guard import check_ewc_step_size
from avalanche_sst.functional.sparsity import (
    DEFAULT_CUT_FRACTION,
    DEFAULT_TARGET_RATIO,
    count_at_or_below,
    cut_epoch,
    early_switch_reached,
    fraction_at_or_below,
    l1_subgradient,
    num_selected,
    select_smallest,
    soft_threshold_,
    sparsity_ratio,
    validate_ratio,
)

#: Penalty strength for phases of a few epochs (the paper's 300-epoch runs
#: need far less); measured on the default preset, see the README.
DEFAULT_LAM = 1e-2
#: |gamma| at or below this counts as converged to 0.
DEFAULT_ZERO_TOL = 1e-2


class SSTPlugin(SupervisedPlugin):
    """Selective (or, with ``selective=False``, base) sparsity training.

    :param target_ratio: Target_r in (0, 1), the final fraction of factors trained to 0.
    :param lam: lambda of eq. 1, the L1 penalty strength.
    :param cut_fraction: E_cut / E_max (eq. 3).
    :param zero_tol: |gamma| at or below which a factor counts as 0 (early switch, logs).
    :param selective: False penalises all factors (BST, the ablation baseline).
    :param proximal: apply the penalty as a soft-threshold step after the
        optimizer update (lr * lam) instead of the subgradient; an option, not the default.
    """

    def __init__(
        self,
        target_ratio: float = DEFAULT_TARGET_RATIO,
        lam: float = DEFAULT_LAM,
        cut_fraction: float = DEFAULT_CUT_FRACTION,
        zero_tol: float = DEFAULT_ZERO_TOL,
        selective: bool = True,
        proximal: bool = False,
        log_prefix: str = "SST",
    ):
        super().__init__()
        self.target_ratio = validate_ratio(target_ratio, "target_ratio")
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if not 0 < cut_fraction <= 1:
            raise ValueError(f"cut_fraction must be in (0, 1], got {cut_fraction} (paper: 1/3)")
        if not zero_tol >= 0:
            raise ValueError(f"zero_tol must be >= 0, got {zero_tol}")
        self.lam = float(lam)
        self.cut_fraction = float(cut_fraction)
        self.zero_tol = float(zero_tol)
        self.selective = selective
        self.proximal = proximal
        self.log_prefix = log_prefix
        self.factors = []
        self.masks: list[torch.Tensor] = []
        self._weights: list[torch.Tensor] = []  # lam * mask per layer, for after_backward
        self.sp_ratio = 1.0
        self.switched = False
        self._cut = 1.0
        self.reached_target: bool | None = None  # did the last phase free Target_r * N factors?
        self._warned_short = False

    def gammas(self) -> list[torch.Tensor]:
        return [f.bn.weight for f in self.factors]

    def before_training_exp(self, strategy, **kwargs):
        self.factors = require_scaling_factors(strategy.model, "SSTPlugin")
        self.switched = False
        self._cut = cut_epoch(strategy.train_epochs, self.cut_fraction)

    def before_training_epoch(self, strategy, **kwargs):
        epoch = strategy.clock.train_exp_epochs
        if epoch == 0:  # after every before_training_exp: the lr the step starts with is set
            check_ewc_step_size(strategy, "SSTPlugin")
        gammas = [g.detach() for g in self.gammas()]
        if not self.switched and early_switch_reached(self.target_ratio, gammas, self.zero_tol):
            self.switched = True  # latched: SP_r never climbs back within the phase
        self.sp_ratio = self.target_ratio if self.switched else sparsity_ratio(epoch, self.target_ratio, self._cut)
        if self.selective:
            self.masks = select_smallest(gammas, self.sp_ratio)
        else:
            self.masks = [torch.ones_like(g, dtype=torch.bool) for g in gammas]
        # The selection is fixed for the epoch: lam * mask once here, not per iteration.
        self._weights = [l1_subgradient(torch.ones_like(g), m, self.lam) for g, m in zip(gammas, self.masks)]
        n = sum(g.numel() for g in gammas)
        p = self.log_prefix
        log_scalar(strategy, f"{p}/sp_ratio", self.sp_ratio)
        log_scalar(strategy, f"{p}/selected", sum(int(m.sum()) for m in self.masks))
        log_scalar(strategy, f"{p}/fraction_at_zero", fraction_at_or_below(gammas, self.zero_tol))
        log_scalar(strategy, f"{p}/target_count", num_selected(self.target_ratio, n))

    def after_backward(self, strategy, **kwargs):
        if self.proximal:
            return
        # grad += lam * sign(gamma) * mask (eq. 1's subgradient on the selected set, as
        # l1_subgradient), for all layers in two fused multi-tensor ops per iteration.
        grads, values, ws = [], [], []
        for gamma, w in zip(self.gammas(), self._weights):
            if gamma.grad is not None:
                grads.append(gamma.grad)
                values.append(gamma.detach())
                ws.append(w)
        if grads:
            torch._foreach_addcmul_(grads, torch._foreach_sign(values), ws)

    def after_update(self, strategy, **kwargs):
        if not self.proximal:
            return
        lr = strategy.optimizer.param_groups[0]["lr"]
        for gamma, mask in zip(self.gammas(), self.masks):
            soft_threshold_(gamma, mask, lr * self.lam)

    def after_training_exp(self, strategy, **kwargs):
        gammas = [g.detach() for g in self.gammas()]
        log_scalar(strategy, f"{self.log_prefix}/final_fraction_at_zero", fraction_at_or_below(gammas, self.zero_tol))
        log_histogram(strategy, f"{self.log_prefix}/abs_gamma", torch.cat([g.abs().flatten() for g in gammas]))
        n = sum(g.numel() for g in gammas)
        freed, target = count_at_or_below(gammas, self.zero_tol), num_selected(self.target_ratio, n)
        self.reached_target = freed >= target
        log_scalar(strategy, f"{self.log_prefix}/target_reached", float(self.reached_target))
        if not self.reached_target and not self._warned_short:
            self._warned_short = True
            kth = float(torch.cat([g.abs().flatten() for g in gammas]).sort().values[max(target - 1, 0)])
            iterations = getattr(strategy.clock, "train_exp_iterations", None)
            warnings.warn(
                f"{type(self).__name__}: the sparsity phase of experience {strategy.clock.train_exp_counter} "
                f"ended with {freed} of {n} scaling factors at |gamma| <= zero_tol={self.zero_tol:g}, short of "
                f"Target_r * N = {target} (target_ratio={self.target_ratio:g}; the {target}-th smallest |gamma| "
                f"is {kth:.3g}) after {iterations} iterations: the filters were not freed. Train the phase "
                f"longer (lam={self.lam:g} needs a few hundred iterations), or raise lam; "
                f"a ReinitPlugin re-initialises only the factors that reached zero_tol unless only_freed=False. "
                f"(Warned once; {self.log_prefix}/target_reached logs every phase.)",
                stacklevel=2,
            )
