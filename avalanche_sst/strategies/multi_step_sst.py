"""The multi-step sparsity-training framework, Lee & Kim 2023, sec. III (Fig. 1).

Phases per experience k (0-based), in the order of ../shared/METHOD.md:

* k = 0: train from scratch with cross-entropy (lr 0.1): the step's result.
  Then, while part 1 is still at hand, an SST phase (eq. 1-3) with
  cross-entropy prepares the starting model of the next step.
* k >= 1: diverse re-initialisation (eq. 4) of the prepared model into two
  students and AOD (eq. 5-8) on part k: the better student on the
  validation slice is the step's result. Then an SST phase whose data loss is
  MSL (eq. 9; classifier frozen, teacher = the step's result) prepares the
  next step's model.
* No preparation after the last experience.

Evaluation after a step sees the step's result (``strategy.model``); the
prepared model is kept beside it (``strategy.prepared``); no data of an
earlier step is kept. Each phase is an inner Avalanche strategy with its own
optimizer, learning rate and epochs (cosine annealing), logging into this
strategy's loggers; ablation switches reproduce the paper's Tables 3-6.

Options beyond the paper (issue 14), each off by default: ``lr_msl`` (the
SST + MSL phase's own learning rate), ``reinit_range_scope="layer"`` (eq. 4
per layer), ``proximal`` (soft-threshold penalty step), ``cr_detach_clean``
(AOD's consistency term does not push the clean view). With ``diagnostics``
each step logs (``diag/*``, x-axis = experience): the validation accuracy of
the prepared model, of each student right after re-init and of the step's
result; mean |gamma| of the useless and other factors of the result and of
the prepared model; the MSL teacher's updates. Plugins with
``propagate_to_phases = True`` (the cost meter) also join every phase.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
from torch import nn
from avalanche.benchmarks.scenarios.generic_scenario import CLExperience
from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import trigger_plugins

from avalanche_sst.strategies.phased import PhasedStrategy, phase_evaluator, propagated_plugins
from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.metrics.validation import accuracy
from avalanche_sst.models import require_blocks, require_scaling_factors, scaling_factors
from avalanche_sst.plugins.guard import FiniteLossGuard
from avalanche_sst.plugins.msl import MSLPlugin
from avalanche_sst.plugins.reinit import REINIT_SCOPES, diverse_reinit_
from avalanche_sst.plugins.schedule import StepwiseCosinePlugin
from avalanche_sst.plugins.sst import DEFAULT_LAM, DEFAULT_ZERO_TOL, SSTPlugin
from avalanche_sst.functional.reinit import mean_abs_split
from avalanche_sst.functional.sparsity import (DEFAULT_CUT_FRACTION, DEFAULT_TARGET_RATIO, validate_ratio,
                                               validate_reinit_margin)
from avalanche_sst.strategies.aod import AODStrategy

#: The options beyond the paper kept on the validation slices (issue 14): each one's mean effect on
#: steps 2-4 was positive against the paper's framework (Fashion-MNIST, ResNet-8, Table 7's CPU setting,
#: 3 seeds; docs/results.md, "Options beyond the paper"). ``MultiStepSST(**SST_PLUS_OPTIONS, ...)``
#: is the sweep's ``sst_plus``.
SST_PLUS_OPTIONS = {"proximal": True, "reinit_range_scope": "layer"}

NEW_DATA_MODES = ("aod", "finetune")
SPARSITY_MODES = ("sst", "bst")


class _PhaseLog(SupervisedPlugin):
    """Marks a phase's start and counts its epochs on the parent's x-axis."""

    def __init__(self, parent, phase: str):
        super().__init__()
        self.parent, self.phase = parent, phase
        self._loss_sum, self._batches = 0.0, 0

    def before_training_exp(self, strategy, **kwargs):
        log_scalar(strategy, f"phase/{self.phase}", strategy.experience.current_experience)

    def before_training_epoch(self, strategy, **kwargs):
        self._loss_sum, self._batches = 0.0, 0

    def after_training_iteration(self, strategy, **kwargs):
        self._loss_sum += strategy.loss.item()
        self._batches += 1

    def after_training_epoch(self, strategy, **kwargs):
        log_scalar(strategy, f"{self.phase}/loss", self._loss_sum / max(self._batches, 1))
        self.parent.sst_epoch_counter += 1


class MultiStepSST(PhasedStrategy):
    """One Avalanche strategy running the whole framework; call ``train``/``eval``.

    :param valid_stream: ``benchmark.valid_stream`` (build the benchmark with
        ``validation_fraction > 0``): AOD chooses its student and MSL updates
        its teacher on the current part's slice.
    :param num_experiences: length of the training stream, so no preparation
        runs after the last experience (read from the experience's stream if omitted).
    :param epochs_scratch, epochs_sst, epochs_aod: epochs per phase.
    :param lr_scratch, lr_sst, lr_aod: learning rates (paper: 0.1, 0.1, 0.001).
    :param target_ratio, lam, cut_fraction, zero_tol: SST (see :class:`SSTPlugin`).
    :param margins: re-init margins of the two AOD students (paper 0.1, 0.2).
    :param alpha: AOD consistency weight; ``beta``, ``msl_temperature``: MSL.
    :param sparsity: "sst" or "bst" (Network Slimming's penalty on all factors).
    :param use_msl: MSL as the data loss of later SST phases (else cross-entropy).
    :param update_teacher: MSL teacher update on validation accuracy.
    :param reinit: re-initialise the useless filters before new data at all (Table 4's
        "w/ FT" and "w/ AOD" rows have none).
    :param diverse_reinit: different margins for the students (else both ``margins[0]``).
    :param new_data: "aod", or "finetune" (plain fine-tuning after re-init).
    :param phase_plugins: plugins added to every phase's inner strategy (e.g.
        ``ChannelsLastPlugin()``, ``AutocastPlugin()``); ``plugins`` only see the
        outer strategy's experience-level callbacks and its evaluation.
    :param adaptive_weights, use_kd, use_cr: AOD ablations (Table 3): fixed 0.5/0.5
        weights; no distillation term; no consistency term.
    :param seed: seeds the re-initialisation draws (give each run its own).
    :param lr_msl: learning rate of the SST + MSL phases (None: ``lr_sst``, the paper).
    :param reinit_range_scope: "global" (eq. 4, the paper) or "layer" (each layer's own range).
    :param proximal: SST's penalty as a soft-threshold step (option; paper: subgradient).
    :param cr_detach_clean: AOD's L_CR does not push the flipped view (option; paper: False).
    :param diagnostics: log the per-step ``diag/*`` scalars (validation-slice
        evaluations, not counted as training cost; the run's random stream is untouched).
    """

    def __init__(self, *, model: nn.Module, valid_stream=None, num_experiences: Optional[int] = None,
                 epochs_scratch: int = 10, epochs_sst: int = 5, epochs_aod: int = 5,
                 lr_scratch: float = 0.1, lr_sst: float = 0.1, lr_aod: float = 0.001,
                 momentum: float = 0.9, weight_decay: float = 5e-4,
                 target_ratio: float = DEFAULT_TARGET_RATIO, lam: float = DEFAULT_LAM,
                 cut_fraction: float = DEFAULT_CUT_FRACTION, zero_tol: float = DEFAULT_ZERO_TOL,
                 margins: tuple[float, float] = (0.1, 0.2), alpha: float = 0.5,
                 beta: float = 1000.0, msl_temperature: float = 1.0,
                 sparsity: str = "sst", use_msl: bool = True, update_teacher: bool = True,
                 reinit: bool = True, diverse_reinit: bool = True, new_data: str = "aod",
                 adaptive_weights: bool = True,
                 use_kd: bool = True, use_cr: bool = True, seed: int = 0,
                 lr_msl: Optional[float] = None, reinit_range_scope: str = "global", proximal: bool = False,
                 cr_detach_clean: bool = False, diagnostics: bool = True,
                 train_mb_size: int = 128, eval_mb_size: int = 1000, device="cpu",
                 plugins: Optional[Sequence] = None, phase_plugins: Sequence = (), evaluator=None, **kwargs):
        require_scaling_factors(model, "MultiStepSST")
        if use_msl:
            require_blocks(model, "MultiStepSST(use_msl=True)")
        self.target_ratio = validate_ratio(target_ratio, "target_ratio")
        for m in margins:
            validate_reinit_margin(self.target_ratio, m)
        if sparsity not in SPARSITY_MODES:
            raise ValueError(f"sparsity must be one of {SPARSITY_MODES}, got {sparsity!r}")
        if new_data not in NEW_DATA_MODES:
            raise ValueError(f"new_data must be one of {NEW_DATA_MODES}, got {new_data!r}")
        for name, value in (("epochs_scratch", epochs_scratch), ("epochs_sst", epochs_sst),
                            ("epochs_aod", epochs_aod)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value in (("lr_scratch", lr_scratch), ("lr_sst", lr_sst), ("lr_aod", lr_aod), ("lr_msl", lr_msl)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive learning rate, got {value} "
                                 "(paper: 0.1 from scratch and for SST, 0.001 for AOD)")
        if reinit_range_scope not in REINIT_SCOPES:
            raise ValueError(f"reinit_range_scope must be one of {REINIT_SCOPES} (paper: 'global'), "
                             f"got {reinit_range_scope!r}")
        optimizer = torch.optim.SGD(model.parameters(), lr=lr_scratch, momentum=momentum,
                                    weight_decay=weight_decay)
        extra = {} if evaluator is None else {"evaluator": evaluator}
        super().__init__(model=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                         train_mb_size=train_mb_size, train_epochs=1, eval_mb_size=eval_mb_size,
                         device=device, plugins=list(plugins or []), eval_every=-1, **extra, **kwargs)
        self.valid_stream = valid_stream
        self.num_experiences = num_experiences
        self.epochs = {"scratch": int(epochs_scratch), "sst": int(epochs_sst), "aod": int(epochs_aod)}
        self.lrs = {"scratch": lr_scratch, "sst": lr_sst, "aod": lr_aod,
                    "msl": lr_sst if lr_msl is None else lr_msl}
        self.momentum, self.weight_decay = momentum, weight_decay
        self.sst_args = dict(target_ratio=target_ratio, lam=lam, cut_fraction=cut_fraction, zero_tol=zero_tol,
                             selective=(sparsity == "sst"), proximal=proximal)
        self.reinit = reinit
        self.margins = tuple(margins) if diverse_reinit else (margins[0], margins[0])
        self.alpha, self.beta, self.msl_temperature = alpha, beta, msl_temperature
        self.use_msl, self.update_teacher = use_msl, update_teacher
        self.new_data, self.adaptive_weights = new_data, adaptive_weights
        self.use_kd, self.use_cr = use_kd, use_cr
        self.seed = seed
        self.reinit_range_scope, self.cr_detach_clean = reinit_range_scope, cr_detach_clean
        self.diagnostics = diagnostics
        self.phase_plugins = list(phase_plugins)
        self.prepared: Optional[nn.Module] = None
        self.sst_epoch_counter = 0
        self.phase_history: list[tuple[int, str]] = []
        self.last_phase_strategy = None
        self.last_msl: Optional[MSLPlugin] = None

    # -- phases --------------------------------------------------------------

    def _optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _phase(self, name: str, exp: CLExperience, model: nn.Module, lr: float, epochs: int,
               plugins: Sequence = (), strategy_cls=SupervisedTemplate, **strategy_kwargs) -> nn.Module:
        """Train ``model`` on ``exp`` as one phase; return the phase's output model."""
        evaluator = phase_evaluator()
        shared = propagated_plugins(self)
        inner = strategy_cls(
            model=model, optimizer=self._optimizer(model, lr), criterion=nn.CrossEntropyLoss(),
            train_mb_size=self.train_mb_size, train_epochs=epochs, eval_mb_size=self.eval_mb_size,
            device=self.device, evaluator=evaluator, eval_every=-1,
            plugins=[StepwiseCosinePlugin(lrs=(lr,), epochs=(epochs,)), FiniteLossGuard(name),
                     _PhaseLog(self, name), *plugins, *self.phase_plugins, *shared],
            **strategy_kwargs,
        )
        inner.sst_parent = self
        inner.sst_valid_dataset = self.sst_valid_dataset
        inner.clock.train_exp_counter = exp.current_experience
        self.phase_history.append((exp.current_experience, name))
        inner.train(exp, eval_streams=[])
        self.last_phase_strategy = inner
        return inner.model

    def _sst_phase(self, exp, start: nn.Module, with_msl: bool) -> nn.Module:
        plugins = [SSTPlugin(**self.sst_args, log_prefix="SST")]
        self.last_msl = None
        if with_msl:
            self.last_msl = MSLPlugin(beta=self.beta, temperature=self.msl_temperature,
                                      update_teacher=self.update_teacher)
            plugins.insert(0, self.last_msl)
        name = ("sst" if self.sst_args["selective"] else "bst") + ("_msl" if with_msl else "")
        lr = self.lrs["msl"] if with_msl else self.lrs["sst"]
        return self._phase(name, exp, start, lr, self.epochs["sst"], plugins)

    def _new_data_phase(self, exp, prepared: nn.Module) -> nn.Module:
        if self.new_data == "aod":
            return self._phase("aod", exp, prepared, self.lrs["aod"], self.epochs["aod"],
                               strategy_cls=AODStrategy, alpha=self.alpha, target_ratio=self.target_ratio,
                               margins=self.margins, reinit=self.reinit, adaptive=self.adaptive_weights,
                               use_kd=self.use_kd,
                               use_cr=self.use_cr, cr_detach_clean=self.cr_detach_clean,
                               reinit_range_scope=self.reinit_range_scope, log_reinit_accuracy=self.diagnostics,
                               seed=self.seed, eval_students=False)
        if self.reinit:
            generator = torch.Generator().manual_seed(self.seed * 1000 + exp.current_experience)
            diverse_reinit_(prepared, self.target_ratio, self.margins[0], generator, self.reinit_range_scope)
            self._diagnose_accuracy("student1_reinit", prepared, exp)
        return self._phase("finetune", exp, prepared, self.lrs["aod"], self.epochs["aod"])

    # -- diagnostics (issue 14) --------------------------------------------------

    def _diagnose_accuracy(self, what: str, model: nn.Module, exp: CLExperience) -> None:
        if not self.diagnostics or self.sst_valid_dataset is None:
            return
        with torch.random.fork_rng(devices=[]):  # the run's random stream is untouched
            acc = accuracy(model, self.sst_valid_dataset, self.device, self.eval_mb_size)
        log_scalar(self, f"diag/{what}_valid_acc", acc, step=exp.current_experience)

    def _diagnose_gammas(self, what: str, model: nn.Module, exp: CLExperience) -> None:
        if not self.diagnostics:
            return
        gammas = [f.bn.weight.detach() for f in scaling_factors(model)]
        useless, useful = mean_abs_split(gammas, self.target_ratio)
        log_scalar(self, f"diag/{what}_abs_gamma_useless", useless, step=exp.current_experience)
        log_scalar(self, f"diag/{what}_abs_gamma_useful", useful, step=exp.current_experience)

    def _is_last(self, exp: CLExperience) -> bool:
        total = self.num_experiences
        if total is None:
            stream = getattr(exp, "_origin_stream", None)
            total = len(stream) if stream is not None else None
        return total is not None and exp.current_experience >= total - 1

    # -- Avalanche entry points ----------------------------------------------

    def _train_step(self, exp: CLExperience) -> None:
        self.experience = exp
        k = exp.current_experience
        self.sst_valid_dataset = self.valid_stream[k].dataset if self.valid_stream is not None else None
        trigger_plugins(self, "before_training_exp")
        first = self.clock.train_exp_counter == 0
        if first:
            result = self._phase("scratch", exp, self.model, self.lrs["scratch"], self.epochs["scratch"])
        else:
            start = self.prepared if self.prepared is not None else copy.deepcopy(self.model)
            self._diagnose_accuracy("prepared_start", start, exp)
            result = self._new_data_phase(exp, start)
        self.model = result
        self._diagnose_accuracy("result", result, exp)
        self._diagnose_gammas("result", result, exp)
        self.prepared = None
        if not self._is_last(exp):
            self.prepared = self._sst_phase(exp, copy.deepcopy(result), with_msl=self.use_msl and not first)
            self._diagnose_gammas("prepared", self.prepared, exp)
            if self.diagnostics and self.last_msl is not None:
                log_scalar(self, "diag/teacher_updates", self.last_msl.teacher_updates, step=k)
        trigger_plugins(self, "after_training_exp")  # the Clock plugin counts the experience

    # -- resume ------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What a checkpoint needs beside ``strategy.model``: the prepared model."""
        return {"prepared": None if self.prepared is None else self.prepared.state_dict(),
                "sst_epoch_counter": self.sst_epoch_counter}

    def load_state_dict(self, state: dict) -> None:
        self.sst_epoch_counter = int(state.get("sst_epoch_counter", 0))
        if state.get("prepared") is None:
            self.prepared = None
            return
        # on the strategy's device, as the SST phase leaves it: the model being resumed is still on the CPU
        self.prepared = copy.deepcopy(self.model).to(self.device)
        self.prepared.load_state_dict(state["prepared"])
