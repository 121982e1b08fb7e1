"""Compute-matched budgets: baselines given the framework's training cost, step by step (issue 14).

The framework (``MultiStepSST``) trains more per step than fine-tuning: at
step 1 an SST phase follows training from scratch; at every later step two
AOD students see two views each, and an SST + MSL phase with a teacher
follows. A fair comparison gives the baseline the same cost. Costs are in
the sample-passes of :mod:`avalanche_sst.metrics.cost` (forward + backward
of one sample = 1, a forward alone = 1/3), so a measured ``CostMeter.step_costs``
and :func:`framework_step_costs` are interchangeable inputs of
:func:`matched_epochs`.

Per-epoch cost of the baselines on a step of ``N`` training samples:
fine-tuning ``N``; LwF ``N`` at step 1 and ``4/3 N`` later (teacher
forward); EWC ``N`` plus a fixed ``N`` per step (Fisher importances).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from avalanche_sst.metrics.cost import FORWARD_COST, TRAIN_COST

__all__ = ["MATCHABLE", "framework_step_costs", "baseline_step_cost", "matched_epochs", "sst_matched_epochs",
           "preset_matched_epochs"]

#: ``MultiStepSST`` arguments that change its cost (read from a preset's ``sst_kwargs``).
COST_ARGUMENTS = ("epochs_scratch", "epochs_sst", "epochs_aod", "use_msl", "update_teacher", "new_data")

#: Baselines whose epochs :func:`matched_epochs` can set.
MATCHABLE = ("finetune", "lwf", "ewc")


def _sizes(values: Sequence[int], name: str) -> list[int]:
    out = [int(v) for v in values]
    if not out or any(v < 0 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of sample counts >= 0, got {list(values)}")
    return out


def framework_step_costs(train_sizes: Sequence[int], valid_sizes: Optional[Sequence[int]] = None, *,
                         epochs_scratch: int, epochs_sst: int, epochs_aod: int, use_msl: bool = True,
                         update_teacher: bool = True, new_data: str = "aod") -> list[float]:
    """The cost (sample-passes) ``MultiStepSST`` spends on each step, as its ``CostMeter`` counts it.

    ``train_sizes[k]`` / ``valid_sizes[k]``: training and validation samples of
    part k (no validation slice: AOD chooses on the training data). Step 1:
    ``(E_scratch + E_sst) N``. Step k > 1: AOD ``4 E_aod N`` plus choosing a
    student ``2 V / 3`` (fine-tuning instead: ``E_aod N``); then, except after
    the last step, SST with MSL ``4/3 E_sst N`` plus the teacher decisions
    ``(E_sst + 1) V / 3`` (without MSL: ``E_sst N``).
    """
    train = _sizes(train_sizes, "train_sizes")
    valid = [0] * len(train) if valid_sizes is None else _sizes(valid_sizes, "valid_sizes")
    if len(valid) != len(train):
        raise ValueError(f"valid_sizes needs one entry per step ({len(train)}), got {len(valid)}")
    for name, value in (("epochs_scratch", epochs_scratch), ("epochs_sst", epochs_sst), ("epochs_aod", epochs_aod)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if new_data not in ("aod", "finetune"):
        raise ValueError(f"new_data must be 'aod' or 'finetune', got {new_data!r}")
    costs = []
    last = len(train) - 1
    for k, (n, v) in enumerate(zip(train, valid)):
        if k == 0:
            cost = epochs_scratch * n * TRAIN_COST
            msl = False
        elif new_data == "aod":
            cost = 4 * epochs_aod * n * TRAIN_COST + 2 * (v or n) * FORWARD_COST
            msl = use_msl
        else:
            cost = epochs_aod * n * TRAIN_COST
            msl = use_msl
        if k < last:
            cost += epochs_sst * n * (TRAIN_COST + (FORWARD_COST if msl else 0.0))
            if msl and update_teacher:
                cost += (epochs_sst + 1) * v * FORWARD_COST
        costs.append(cost)
    return costs


def baseline_step_cost(method: str, step: int, train_size: int) -> tuple[float, float]:
    """``(per_epoch, fixed)`` cost of a baseline at a 0-based step on ``train_size`` samples."""
    if method not in MATCHABLE:
        raise ValueError(f"method must be one of {MATCHABLE}, got {method!r}")
    n = int(train_size)
    if method == "lwf" and step > 0:
        return n * (TRAIN_COST + FORWARD_COST), 0.0
    if method == "ewc":
        return n * TRAIN_COST, n * TRAIN_COST
    return n * TRAIN_COST, 0.0


def matched_epochs(step_costs: Sequence[float], train_sizes: Sequence[int], method: str = "finetune",
                   min_epochs: int = 1) -> list[int]:
    """Per-step epochs of ``method`` whose cost is nearest ``step_costs`` (within half an epoch's cost).

    ``step_costs``: the framework's cost per step, measured (``CostMeter.step_costs``)
    or predicted (:func:`framework_step_costs`). Each step gets at least ``min_epochs``.
    """
    train = _sizes(train_sizes, "train_sizes")
    if len(step_costs) != len(train):
        raise ValueError(f"step_costs needs one entry per step ({len(train)}), got {len(step_costs)}")
    if int(min_epochs) < 1:
        raise ValueError(f"min_epochs must be >= 1, got {min_epochs}")
    epochs = []
    for k, (target, n) in enumerate(zip(step_costs, train)):
        per_epoch, fixed = baseline_step_cost(method, k, n)
        if per_epoch <= 0:
            raise ValueError(f"train_sizes[{k}] is 0: no epoch can match a cost")
        epochs.append(max(int(min_epochs), math.floor((target - fixed) / per_epoch + 0.5)))
    return epochs


def sst_matched_epochs(train_sizes: Sequence[int], valid_sizes: Optional[Sequence[int]] = None,
                       method: str = "finetune", **framework) -> list[int]:
    """:func:`matched_epochs` against :func:`framework_step_costs` (``framework``: its keyword arguments).

    Example: 4 parts of 12,000 training / 1,200 validation samples with
    ``epochs_scratch=10, epochs_sst=5, epochs_aod=5`` gives fine-tuning
    ``[15, 27, 27, 20]`` epochs.
    """
    costs = framework_step_costs(train_sizes, valid_sizes, **framework)
    return matched_epochs(costs, train_sizes, method)


def preset_matched_epochs(config, train_stream, valid_stream=None, method: str = "finetune") -> tuple[int, ...]:
    """Per-step epochs of ``method`` matched to the framework a preset runs on these streams.

    ``config``: a preset (``epochs_scratch``, ``sst_epochs``, ``aod_epochs`` and
    ``sst_kwargs``, whose cost-relevant keys override them); the streams give
    each part's training and validation sizes.
    """
    framework = dict(epochs_scratch=config.epochs_scratch, epochs_sst=config.sst_epochs,
                     epochs_aod=config.aod_epochs)
    sst_kwargs = dict(getattr(config, "sst_kwargs", None) or {})
    framework.update({k: sst_kwargs[k] for k in COST_ARGUMENTS if k in sst_kwargs})
    train = [len(exp.dataset) for exp in train_stream]
    valid = None if valid_stream is None else [len(exp.dataset) for exp in valid_stream]
    return tuple(sst_matched_epochs(train, valid, method, **framework))
