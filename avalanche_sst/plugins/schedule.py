"""Per-experience learning rate and epochs with cosine annealing.

The paper (sec. IV-B) trains the first part from scratch with lr 0.1 and every
later part with lr 0.001, each with cosine annealing. One strategy object must
live across all experiences (a fresh one per experience drops LwF's teacher
and EWC's importances), so the per-step values are set here, in
``before_training_exp``, and the annealing itself is Avalanche's
``LRSchedulerPlugin`` stepping a fresh ``CosineAnnealingLR`` each experience.
It steps every iteration by default, so the lr reaches ~0 at the end of a
phase: sparsity training's subgradient oscillates around 0 with an amplitude
proportional to the lr, and only a vanishing lr lets the selected factors
settle at 0 in short phases.
"""

from __future__ import annotations

from typing import Sequence

from torch.optim.lr_scheduler import CosineAnnealingLR
from avalanche.training.plugins import LRSchedulerPlugin


def value_for_step(values: Sequence, step: int):
    """``values[step]``, repeating the last entry for later steps."""
    return values[min(step, len(values) - 1)]


class StepwiseCosinePlugin(LRSchedulerPlugin):
    """Sets lr and epochs for experience k, then anneals the lr (cosine) per epoch.

    :param lrs: learning rate of experience 0, 1, ...; the last repeats
        (default: 0.1 from scratch, 0.001 afterwards, as the paper).
    :param epochs: epochs of experience 0, 1, ...; the last repeats.
    :param step_granularity: "iteration" (default) or "epoch", as Avalanche's plugin.
    """

    def __init__(self, lrs: Sequence[float] = (0.1, 0.001), epochs: Sequence[int] = (1,),
                 step_granularity: str = "iteration"):
        if not lrs or any(lr <= 0 for lr in lrs):
            raise ValueError(f"lrs must be positive learning rates, got {tuple(lrs)}")
        if not epochs or any(int(e) < 1 for e in epochs):
            raise ValueError(f"epochs must be >= 1, got {tuple(epochs)}")
        self.lrs = tuple(float(lr) for lr in lrs)
        self.epochs = tuple(int(e) for e in epochs)
        self._placeholder = _Placeholder()
        super().__init__(self._placeholder, reset_scheduler=False, reset_lr=False,
                         step_granularity=step_granularity)

    def before_training_exp(self, strategy, *args, **kwargs):
        step = strategy.clock.train_exp_counter
        lr = value_for_step(self.lrs, step)
        strategy.train_epochs = value_for_step(self.epochs, step)
        for group in strategy.optimizer.param_groups:
            group["lr"] = lr
            group["initial_lr"] = lr
        steps = strategy.train_epochs
        if self.step_granularity == "iteration":
            steps *= max(len(strategy.dataloader), 1)
        self.scheduler = CosineAnnealingLR(strategy.optimizer, T_max=steps)
        super().before_training_exp(strategy, *args, **kwargs)


class _Placeholder:
    """Stands in for the scheduler until the first experience builds the real one."""

    base_lrs: list = []

    def step(self):  # pragma: no cover - replaced before any training
        pass
