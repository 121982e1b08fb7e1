"""Fine-tuning with searched hyperparameters ("HPO"), an Avalanche strategy.

The HPO baseline of Lee & Kim (2023, Table 7): fine-tuning with the
hyperparameters recommended by Li, Chaudhari, Yang, Lam, Ravichandran,
Bhotika & Soatto, "Rethinking the Hyperparameters for Fine-tuning",
ICLR 2020. Their findings that this follows:

* for SGD with momentum ``m`` the quantity that matters is the *effective
  learning rate* ``ELR = lr / (1 - m)``; momentum and learning rate need not
  be searched separately, searching the ELR at a fixed momentum suffices;
* the optimal ELR (and momentum) depends on how similar the target domain is
  to the source domain: for *similar* domains, momentum 0 and a smaller ELR
  work better than the customary momentum 0.9; for dissimilar ones, a
  larger ELR with momentum 0.9.

In the same-class accumulating scenario every step brings new data from the
*same* distribution as the pre-training data, the most similar case there
is, so the defaults here are their similar-domain setting: momentum 0 and a
grid of learning rates ``(0.01, 0.003, 0.001, 0.0003)``, i.e. ELR 0.01 (the
same as plain fine-tuning's lr 0.001 with momentum 0.9) and 3x, 10x and 30x
smaller. :func:`elr_grid` builds the same grid around any other fine-tuning
lr (the sweep runner anchors it at its preset's). Weight decay is plain L2
(``weight_decay=None`` keeps the optimizer's, 5e-4 on CIFAR in the paper's
set-up); no L2-SP.

Search (:func:`hpo_search`): every candidate learning rate fine-tunes the
same starting weights (optimizer state reset, the same cosine schedule and
epochs as plain fine-tuning, the global RNG restored so every candidate sees
the same batches and augmentation draws); each is scored on the step's
held-out validation slice; the best (ties: the first in grid order) is kept.
Experience 0 is trained from scratch as usual (the optimizer and schedule as
given), with no search.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn import CrossEntropyLoss

from avalanche.training.plugins import LRSchedulerPlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.metrics.cost import FORWARD_COST, charge
from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.metrics.validation import accuracy
from avalanche_sst.metrics.validation import validation_data

__all__ = ["DEFAULT_LRS", "ELR_FACTORS", "HPOResult", "HPOStrategy", "elr_grid", "hpo_search"]

#: The grid's effective learning rates relative to plain fine-tuning's.
ELR_FACTORS = (1.0, 0.3, 0.1, 0.03)


def elr_grid(base_lr: float, base_momentum: float, momentum: float = 0.0,
             factors: Sequence[float] = ELR_FACTORS) -> tuple[float, ...]:
    """Learning rates at ``momentum`` whose effective rates ``lr / (1 - m)`` are ``factors`` times
    that of plain fine-tuning (``base_lr`` at ``base_momentum``), the top one equal to it.

    ``elr_grid(0.001, 0.9)`` is the paper's set-up: ``(0.01, 0.003, 0.001, 0.0003)`` at momentum 0.
    """
    for name, m in (("base_momentum", base_momentum), ("momentum", momentum)):
        if not 0.0 <= m < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {m}")
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    elr = base_lr / (1.0 - base_momentum)
    return tuple(float(f"{elr * f * (1.0 - momentum):.6g}") for f in factors)


DEFAULT_LRS = elr_grid(0.001, 0.9)


@dataclass
class HPOResult:
    best_lr: float
    accuracies: list[float] = field(default_factory=list)  # per candidate, grid order
    lrs: list[float] = field(default_factory=list)


def _get_rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def hpo_search(
    model: nn.Module,
    lrs: Sequence[float],
    train_candidate: Callable[[int, float], None],
    evaluate: Callable[[], float],
    on_candidate: Optional[Callable[[int, float, float], None]] = None,
) -> HPOResult:
    """Grid search of the fine-tuning learning rate (Li et al., ICLR 2020).

    For each ``lr`` of ``lrs``: ``model`` is reset to its weights at the call
    and the global RNG to its state at the call, then ``train_candidate(i, lr)``
    fine-tunes ``model`` in place and ``evaluate()`` returns its validation
    accuracy. ``model`` ends with the weights of the best candidate (ties:
    the first in ``lrs``). ``on_candidate(index, lr, accuracy)`` is called
    after each candidate.
    """
    lrs = [float(lr) for lr in lrs]
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty sequence of positive learning rates, got {lrs}")
    start = copy.deepcopy(model.state_dict())
    rng = _get_rng_state()
    best_state, best_acc, best_lr = None, float("-inf"), lrs[0]
    accs = []
    for i, lr in enumerate(lrs):
        model.load_state_dict(start)
        _set_rng_state(rng)
        train_candidate(i, lr)
        acc = float(evaluate())
        accs.append(acc)
        if on_candidate is not None:
            on_candidate(i, lr, acc)
        if best_state is None or acc > best_acc:
            best_acc, best_lr = acc, lr
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return HPOResult(best_lr=best_lr, accuracies=accs, lrs=lrs)


class HPOStrategy(SupervisedTemplate):
    """Fine-tuning whose learning rate is chosen per step on validation data.

    :param valid_stream: per-experience validation slices (``valid_stream[k]``
        scores experience k's candidates); None: the experience's own
        training data, un-augmented (a weaker criterion).
    :param lrs: candidate learning rates of the later steps (default
        ``DEFAULT_LRS``, see the module docstring).
    :param momentum: SGD momentum of the later steps (default 0, Li et al.'s
        recommendation for similar source and target domains).
    :param weight_decay: weight decay of the later steps; None keeps the
        optimizer's.
    Other arguments are :class:`~avalanche.training.templates.SupervisedTemplate`'s.
    The per-step epochs and the cosine annealing come from the strategy's
    schedule plugins (e.g. ``StepwiseCosinePlugin``): every candidate gets
    the fine-tuning epochs and a cosine schedule starting at its own lr.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion=CrossEntropyLoss(),
        valid_stream=None,
        lrs: Sequence[float] = DEFAULT_LRS,
        momentum: float = 0.0,
        weight_decay: Optional[float] = None,
        **kwargs,
    ):
        super().__init__(model=model, optimizer=optimizer, criterion=criterion, **kwargs)
        lrs = tuple(float(lr) for lr in lrs)
        if not lrs or any(not lr > 0 for lr in lrs):
            raise ValueError(f"lrs must be a non-empty sequence of positive learning rates, got {lrs}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay is not None and weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.valid_stream = valid_stream
        self.lrs = lrs
        self.momentum = float(momentum)
        self.weight_decay = weight_decay
        self.chosen_lrs: list[float] = []
        self.hpo_history: list[dict] = []
        self.hpo_candidate: Optional[int] = None  # index of the candidate being trained

    def _train_exp(self, experience, eval_streams=None, **kwargs):
        """Experience 0: plain training from scratch. Later: the lr search."""
        if self.clock.train_exp_counter == 0:
            return super()._train_exp(experience, eval_streams, **kwargs)
        step = int(self.clock.train_exp_counter)
        for group in self.optimizer.param_groups:
            group["momentum"] = self.momentum
            if self.weight_decay is not None:
                group["weight_decay"] = self.weight_decay
        schedulers = [(p.scheduler, copy.deepcopy(p.scheduler.state_dict()))
                      for p in self.plugins if isinstance(p, LRSchedulerPlugin)
                      and hasattr(p.scheduler, "state_dict")]
        data = validation_data(experience, self.valid_stream)

        def train_candidate(index: int, lr: float) -> None:
            self.hpo_candidate = index
            self.optimizer.state.clear()  # no momentum carried between candidates
            for group in self.optimizer.param_groups:
                group["lr"] = lr
                group["initial_lr"] = lr
            for sched, state in schedulers:  # restart the schedule at this lr
                sched.load_state_dict(state)
                sched.base_lrs = [lr] * len(sched.base_lrs)
                sched._last_lr = [lr] * len(sched.base_lrs)
            self._stop_training = False
            super(HPOStrategy, self)._train_exp(experience, eval_streams, **kwargs)

        def on_candidate(i: int, lr: float, acc: float) -> None:
            charge(self, len(data) * FORWARD_COST)  # the candidate's validation
            log_scalar(self, f"hpo/val_acc/lr={lr:g}", acc, step=step)

        try:
            result = hpo_search(
                self.model, self.lrs, train_candidate,
                lambda: accuracy(self.model, data, self.device, self.eval_mb_size),
                on_candidate=on_candidate,
            )
        finally:
            self.hpo_candidate = None
        self.chosen_lrs.append(result.best_lr)
        self.hpo_history.append({"experience": step, "lrs": list(result.lrs),
                                 "val_acc": list(result.accuracies), "chosen_lr": result.best_lr})
        log_scalar(self, "hpo/chosen_lr", result.best_lr, step=step)

    # ------------------------------------------------------------- resume
    def hpo_state_dict(self) -> dict:
        return {"chosen_lrs": list(self.chosen_lrs),
                "history": [dict(h) for h in self.hpo_history]}

    def load_hpo_state_dict(self, state: dict) -> None:
        self.chosen_lrs = [float(x) for x in state.get("chosen_lrs", [])]
        self.hpo_history = [dict(h) for h in state.get("history", [])]
