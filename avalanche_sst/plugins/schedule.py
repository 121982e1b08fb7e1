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

``hold_epochs`` keeps the last epochs of a step at a constant rate instead
(``hold_factor`` times the step's lr; the cosine then anneals over the epochs
before them): M2KD fine-tunes after pruning at a constant rate, as the paper
(Zhou et al. 2020: lr / 5 at the end of training, the 15 fine-tuning epochs
at that last rate).
"""

from __future__ import annotations

from typing import Sequence

import math

from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR
from avalanche.training.plugins import LRSchedulerPlugin


def value_for_step(values: Sequence, step: int):
    """``values[step]``, repeating the last entry for later steps."""
    return values[min(step, len(values) - 1)]


def cosine_then_constant(anneal_steps: int, hold_factor: float):
    """lr multiplier at scheduler step t: cosine from 1 to 0 over ``anneal_steps``, then ``hold_factor``."""
    def factor(t: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * t / anneal_steps)) if t < anneal_steps else hold_factor
    return factor


class StepwiseCosinePlugin(LRSchedulerPlugin):
    """Sets lr and epochs for experience k, then anneals the lr (cosine) per epoch.

    :param lrs: learning rate of experience 0, 1, ...; the last repeats
        (default: 0.1 from scratch, 0.001 afterwards, as the paper).
    :param epochs: epochs of experience 0, 1, ...; the last repeats.
    :param step_granularity: "iteration" (default) or "epoch", as Avalanche's plugin.
    :param hold_epochs: of experience 0, 1, ... (the last repeats): the last epochs run at
        the constant rate ``hold_factor * lr`` (0: cosine over every epoch, the default).
    :param hold_factor: the held rate as a fraction of the step's lr.
    """

    def __init__(self, lrs: Sequence[float] = (0.1, 0.001), epochs: Sequence[int] = (1,),
                 step_granularity: str = "iteration", hold_epochs: Sequence[int] = (0,),
                 hold_factor: float = 0.2):
        if not lrs or any(lr <= 0 for lr in lrs):
            raise ValueError(f"lrs must be positive learning rates, got {tuple(lrs)}")
        if not epochs or any(int(e) < 1 for e in epochs):
            raise ValueError(f"epochs must be >= 1, got {tuple(epochs)}")
        if not hold_epochs or any(int(h) < 0 for h in hold_epochs):
            raise ValueError(f"hold_epochs must be >= 0 (0: no constant tail), got {tuple(hold_epochs)}")
        if not float(hold_factor) > 0:
            raise ValueError(f"hold_factor must be > 0 (a fraction of the step's lr), got {hold_factor!r}")
        self.lrs = tuple(float(lr) for lr in lrs)
        self.epochs = tuple(int(e) for e in epochs)
        self.hold_epochs = tuple(int(h) for h in hold_epochs)
        self.hold_factor = float(hold_factor)
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
        hold = value_for_step(self.hold_epochs, step)
        if hold >= strategy.train_epochs:
            raise ValueError(f"hold_epochs={hold} must be below the experience's {strategy.train_epochs} epochs "
                             f"(the cosine needs at least one epoch)")
        per_epoch = max(len(strategy.dataloader), 1) if self.step_granularity == "iteration" else 1
        if hold == 0:
            self.scheduler = CosineAnnealingLR(strategy.optimizer, T_max=strategy.train_epochs * per_epoch)
        else:
            self.scheduler = LambdaLR(strategy.optimizer, cosine_then_constant(
                (strategy.train_epochs - hold) * per_epoch, self.hold_factor))
        super().before_training_exp(strategy, *args, **kwargs)


class _Placeholder:
    """Stands in for the scheduler until the first experience builds the real one."""

    base_lrs: list = []

    def step(self):  # pragma: no cover - replaced before any training
        pass
