"""Training cost in sample-passes per training experience (issue 14, "does it pay at equal compute?").

Unit: one forward + backward of the trained model on one sample = 1. A
forward alone (a frozen teacher or snapshot, a validation evaluation used by
the method to decide something) = 1/3, the usual forward : backward = 1 : 2
split of a training step. Counted per sample actually processed, so
Cumulative's growing data, HPO's candidates and a phase's epochs are all
seen as they run:

* plain training (Naive, Cumulative, each HPO candidate, the framework's
  scratch and SST phases): 1 per sample per epoch;
* LwF (Avalanche): + 1/3 per sample for the previous model's forward once it
  exists (a multi-task previous model makes LwF run the current model again:
  + 1 more);
* EWC (Avalanche): + 1 per sample of the experience for the Fisher
  importances (one forward + backward of every sample after training);
* RWalk (Avalanche): + 1 per sample (its plugin runs a forward + backward of
  every mini-batch before the training one, for the importances);
* M2KD / LwF-MC / iCaRL M2KD: + 1/3 per sample for each snapshot teacher run
  at the iteration (``M2KDPlugin.extra_passes_per_sample``: every stored
  snapshot with ``teachers="all"``, the last one with ``"last"``);
* LwM: + 1/3 per sample for the teacher's forward once it exists (its
  Grad-CAM gradients run only through the head, not counted);
* DML: 2 per sample (both students train) in the mutual experiences;
* AOD: 4 per sample (two students, each on both views);
* MSL: + 1/3 per sample (the frozen teacher's forward);
* validation evaluations a method makes to choose (AOD's and DML's student,
  HPO's candidate, MSL's teacher update): 1/3 per validation sample.

Monitoring is not cost: test-stream evaluation and ``MultiStepSST``'s
diagnostics are left out.

How a method reports its cost: a strategy may define
``training_passes_per_sample()`` (default 1); a plugin may define
``extra_passes_per_sample(strategy)``; both are read at every training
iteration. One-off work (validation, importances) is reported with
:func:`charge`. Avalanche's LwF/EWC/RWalk plugins and :class:`LwMPlugin` are
recognised here, since their code is not ours.

Composite strategies: ``MultiStepSST`` adds every plugin with
``propagate_to_phases = True`` (this meter) to its inner phase strategies, so
the one meter sees all phases' iterations; a step's total is closed at the
outer (root) strategy's ``after_training_exp``.
"""

from __future__ import annotations

import warnings
from typing import Optional

from avalanche.core import SupervisedPlugin
from avalanche.models import MultiTaskModule
from avalanche.training.plugins import EWCPlugin, LwFPlugin, RWalkPlugin

from avalanche_sst.metrics.logging import log_scalar

__all__ = ["FORWARD_COST", "TRAIN_COST", "CostMeter", "charge", "passes_per_sample", "meters_of"]

#: One forward + backward of the trained model on one sample.
TRAIN_COST = 1.0
#: One forward only (teacher, snapshot, validation): a third of a training pass.
FORWARD_COST = 1.0 / 3.0

KINDS = ("train", "teacher", "valid", "importance")


def meters_of(strategy) -> list["CostMeter"]:
    """The cost meters among ``strategy``'s plugins."""
    return [p for p in getattr(strategy, "plugins", ()) or () if isinstance(p, CostMeter)]


def charge(strategy, sample_passes: float, kind: str = "valid") -> None:
    """Add one-off work (in sample-passes) to every meter of ``strategy``; a no-op without one."""
    for meter in meters_of(strategy):
        meter.add(sample_passes, kind)


def _plugin_extra(plugin, strategy) -> tuple[float, float]:
    """(teacher, train) passes per sample a plugin adds to each training iteration."""
    own = getattr(plugin, "extra_passes_per_sample", None)
    if callable(own):
        return float(own(strategy)), 0.0
    if isinstance(plugin, LwFPlugin):
        prev = plugin.lwf.prev_model
        if prev is None:
            return 0.0, 0.0
        # Avalanche's LwF runs the current model a second time for a multi-task previous model.
        return FORWARD_COST, (TRAIN_COST if isinstance(prev, MultiTaskModule) else 0.0)
    if isinstance(plugin, RWalkPlugin):
        return 0.0, TRAIN_COST
    from avalanche_sst.plugins.lwm import LwMPlugin  # here: the plugins package imports metrics

    if isinstance(plugin, LwMPlugin):
        return (FORWARD_COST if plugin.teacher is not None else 0.0), 0.0
    return 0.0, 0.0


def passes_per_sample(strategy) -> tuple[float, float]:
    """(train, teacher) sample-passes per training sample of ``strategy``'s current iteration."""
    own = getattr(strategy, "training_passes_per_sample", None)
    train = float(own()) if callable(own) else TRAIN_COST
    teacher = 0.0
    for plugin in getattr(strategy, "plugins", ()) or ():
        t, extra = _plugin_extra(plugin, strategy)
        teacher += t
        train += extra
    return train, teacher


def _is_root(strategy) -> bool:
    return getattr(strategy, "sst_parent", None) is None


class CostMeter(SupervisedPlugin):
    """Counts training cost in sample-passes, one total per training experience.

    Add it to a strategy's plugins (``MultiStepSST`` hands it to its phases).
    ``step_costs[k]`` is the cost of the k-th finished training experience;
    ``step_breakdown[k]`` splits it by kind (train, teacher, valid, importance).
    Each total is also logged as the scalar ``cost/sample_passes``.
    """

    propagate_to_phases = True

    def __init__(self):
        super().__init__()
        self.step_costs: list[float] = []
        self.step_breakdown: list[dict] = []
        self._current: Optional[dict] = None
        self._warned = False

    @property
    def current(self) -> float:
        """The running total of the experience being trained (0 outside one)."""
        return sum(self._current.values()) if self._current is not None else 0.0

    def add(self, sample_passes: float, kind: str = "train") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not sample_passes >= 0:
            raise ValueError(f"sample_passes must be >= 0, got {sample_passes}")
        if self._current is None:
            if not self._warned:
                warnings.warn("CostMeter: cost reported outside a training experience is not counted")
                self._warned = True
            return
        self._current[kind] += float(sample_passes)

    # -- callbacks -------------------------------------------------------------

    def before_training_exp(self, strategy, **kwargs):
        if _is_root(strategy):
            self._current = {k: 0.0 for k in KINDS}

    def after_training_iteration(self, strategy, **kwargs):
        n = int(strategy.mb_x.shape[0])
        train, teacher = passes_per_sample(strategy)
        self.add(n * train, "train")
        if teacher:
            self.add(n * teacher, "teacher")

    def after_training_exp(self, strategy, **kwargs):
        if any(isinstance(p, EWCPlugin) for p in strategy.plugins):
            self.add(len(strategy.experience.dataset) * TRAIN_COST, "importance")
        if not _is_root(strategy) or self._current is None:
            return
        total = self.current
        self.step_costs.append(total)
        self.step_breakdown.append(dict(self._current))
        self._current = None
        log_scalar(strategy, "cost/sample_passes", total)

    # -- resume ------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"step_costs": list(self.step_costs), "step_breakdown": [dict(b) for b in self.step_breakdown]}

    def load_state_dict(self, state: dict) -> None:
        self.step_costs = [float(c) for c in state.get("step_costs", [])]
        self.step_breakdown = [{k: float(v) for k, v in b.items()} for b in state.get("step_breakdown", [])]
        self._current = None
