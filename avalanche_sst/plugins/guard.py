"""Stop a phase on a NaN or infinite loss, naming the phase, epoch and term."""

from __future__ import annotations

import math

import torch
from avalanche.core import SupervisedPlugin


class NonFiniteLossError(RuntimeError):
    pass


class FiniteLossGuard(SupervisedPlugin):
    """Raises :class:`NonFiniteLossError` before a non-finite loss reaches the weights.

    Strategies that combine several terms put them in ``strategy.loss_terms``
    (name -> tensor) so the error can name the culprit.
    """

    def __init__(self, phase: str = "training"):
        super().__init__()
        self.phase = phase

    def before_backward(self, strategy, **kwargs):
        loss = strategy.loss
        if torch.isfinite(loss).all():
            return
        terms = getattr(strategy, "loss_terms", {}) or {}
        bad = [k for k, v in terms.items() if not math.isfinite(_value(v))] or ["loss"]
        raise NonFiniteLossError(
            f"non-finite loss in phase '{self.phase}', experience {strategy.clock.train_exp_counter}, "
            f"epoch {strategy.clock.train_exp_epochs}: term(s) {', '.join(bad)} = "
            f"{', '.join(str(_value(terms.get(k, loss))) for k in bad)}. The last finished step's "
            "checkpoint is kept; lower the learning rate or lambda and rerun to resume."
        )


def _value(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)
