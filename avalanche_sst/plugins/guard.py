"""Stop a phase on a NaN or infinite loss, naming the phase, epoch and term; refuse, before
a step trains, a learning rate at which SGD cannot converge on EWC's quadratic penalty."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EWCPlugin


class NonFiniteLossError(RuntimeError):
    pass


def sgd_stability_limit(momentum: float = 0.0, nesterov: bool = False) -> float:
    """The largest ``lr * curvature`` at which SGD converges on a quadratic.

    On ``0.5 * h * x**2`` torch's SGD (heavy ball) converges iff
    ``0 < lr * h < 2 (1 + m)``; with Nesterov iff ``lr * h < 2 (1 + m) / (1 + 2 m)``.
    Beyond it the iterates oscillate with a growing amplitude until they overflow.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return 2 * (1 + momentum) / (1 + 2 * momentum) if nesterov else 2 * (1 + momentum)


def penalty_curvature(importances: Sequence[Mapping[str, torch.Tensor]], lam: float) -> tuple[float, str]:
    """Largest second derivative of ``lam * sum_e sum_i F_e[i] (theta_i - theta_e[i])**2``
    (Avalanche's EWC penalty), ``2 * lam * sum_e F_e[i]``, and the parameter that holds it.

    ``importances``: one ``{parameter name: F}`` per anchored experience (one for
    ``mode="online"``). Returns ``(0.0, "")`` when there is none.
    """
    totals: dict[str, torch.Tensor] = {}
    for per_exp in importances:
        for name, imp in per_exp.items():
            value = getattr(imp, "data", imp).detach().float()
            prev = totals.get(name)
            totals[name] = value if prev is None else (prev + value if prev.shape == value.shape
                                                       else prev.max() + value.max())
    if not totals:
        return 0.0, ""
    name, top = max(((n, float(t.max())) for n, t in totals.items() if t.numel()), key=lambda kv: kv[1])
    return 2.0 * float(lam) * top, name


def check_ewc_step_size(strategy, who: str) -> None:
    """Raise ValueError, before the step trains, if an EWCPlugin's penalty makes SGD diverge.

    EWC anchors each weight with curvature ``2 * ewc_lambda * F``; once a step's
    Fisher F is large (the data loss still pulls hard at the anchor, e.g. when
    SST's L1 term or a large ewc_lambda keeps the weights off the data loss's
    minimum) ``lr * curvature`` passes :func:`sgd_stability_limit` and the loss
    goes to inf/NaN within a few dozen iterations.
    """
    optimizer = getattr(strategy, "optimizer", None)
    if not isinstance(optimizer, torch.optim.SGD):
        return  # adaptive optimizers rescale the step; the bound is SGD's
    for ewc in (p for p in getattr(strategy, "plugins", ()) if isinstance(p, EWCPlugin)):
        done = strategy.clock.train_exp_counter
        exps = range(done) if ewc.mode == "separate" else [done - 1]
        curvature, name = penalty_curvature([ewc.importances[e] for e in exps if e in ewc.importances],
                                            ewc.ewc_lambda)
        for group in optimizer.param_groups:
            lr, momentum = float(group["lr"]), float(group.get("momentum", 0.0))
            limit = sgd_stability_limit(momentum, bool(group.get("nesterov", False)))
            if curvature > 0 and lr * curvature >= limit:
                raise ValueError(
                    f"{who}: at lr={lr:g} (momentum {momentum:g}) SGD diverges on EWC's penalty in experience "
                    f"{done}: its curvature along '{name}' is 2 * ewc_lambda * F = 2 * {ewc.ewc_lambda:g} * "
                    f"{curvature / (2 * ewc.ewc_lambda):.3g} = {curvature:.4g}, and lr * curvature = "
                    f"{lr * curvature:.4g} >= {limit:.3g}, the limit for convergence; the loss would reach "
                    f"inf/NaN within the step. Use lr < {limit / curvature:.3g}, or ewc_lambda < "
                    f"{ewc.ewc_lambda * limit / (lr * curvature):.3g} at this lr."
                )


class FiniteLossGuard(SupervisedPlugin):
    """Raises :class:`NonFiniteLossError` before a non-finite loss reaches the weights.

    Strategies that combine several terms put them in ``strategy.loss_terms``
    (name -> tensor) so the error can name the culprit. Before each step's
    first epoch it also runs :func:`check_ewc_step_size`.
    """

    def __init__(self, phase: str = "training"):
        super().__init__()
        self.phase = phase

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == 0:
            check_ewc_step_size(strategy, "FiniteLossGuard")

    def before_backward(self, strategy, **kwargs):
        loss = strategy.loss
        if torch.isfinite(loss).all():
            return
        terms = getattr(strategy, "loss_terms", {}) or {}
        bad = [k for k, v in terms.items() if not math.isfinite(_value(v))] or ["loss"]
        raise NonFiniteLossError(
            f"non-finite loss in phase '{self.phase}', experience {strategy.clock.train_exp_counter}, "
            f"epoch {strategy.clock.train_exp_epochs}: term(s) {', '.join(bad)} = "
            f"{', '.join(str(_value(terms.get(k, loss))) for k in bad)}; the weights were not updated with "
            "it. Lower the learning rate (or the weight of the named term: lambda, ewc_lambda, ...). "
            "In a sweep (experiments/sweep.py) the run is recorded as diverged at this step (it and the "
            "later steps score NaN, experiments/divergence.py) and the sweep goes on; for a lower rate or "
            "weight, pass it with --set and a new --out (or delete the run's folder). In your own "
            "training loop nothing was saved: lower the optimizer's lr (or the term's weight) and train again "
            "from the start, or from a state_dict you saved after an earlier step."
        )


def _value(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)
