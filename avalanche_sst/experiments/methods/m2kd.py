"""M2KD (Zhou et al., BMVC 2020) and its class-incremental comparisons as sweep methods.

* ``m2kd``: exemplar-free M2KD (variants ``m2kd:prune_ratio=0``: no pruning,
  full snapshots; ``m2kd:lam=0``: no auxiliary distillation);
* ``lwf_mc``: LwF-MC, the penultimate model only (eq. 1; iCaRL's loss without exemplars);
* ``icarl``: Avalanche's iCaRL (herding exemplars, nearest-mean-of-exemplars);
* ``icarl_m2kd``: iCaRL with M2KD's losses (``icarl_m2kd:teachers='last',prune_ratio=0``
  is the paper's "iCaRL aux").

All run in the ``class_incremental`` setting on one growing head. Epochs: the
preset's per-step epochs plus ``finetune_epochs`` after the prune point (PackNet's
convention); by default those scale the paper's 15 of 80 to the preset's
``epochs_scratch``. The learning rate follows the preset's per-step cosine over
the training epochs; the fine-tuning epochs after pruning run at the constant
rate ``finetune_lr_factor`` (0.2) times the step's lr with a fresh optimizer
state, as the paper (lr / 5 at the end of its schedule, the 15 fine-tuning
epochs at that last rate).

Weight decay: in a sweep every method here uses the preset's ``weight_decay``
at every step (the rule of the table's other methods, so that a comparison
differs only in the method); the library's own default is the paper's
1e-5 at step 1 and 0 afterwards (:class:`~avalanche_sst.plugins.m2kd.M2KDPlugin`).
Each run's ``report`` holds M2KD's ``prune_log``: accuracy on the step's
training data before pruning, right after it and at the end of the step.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from avalanche.models import IncrementalClassifier, NCMClassifier
from avalanche.training import ICaRL
from avalanche.training.losses import ICaRLLossPlugin
from avalanche.training.supervised.icarl import _ICaRLPlugin
from torch import nn

from avalanche_sst.experiments.method_state import plugin_of
from avalanche_sst.experiments.registry import Method, StrategyContext, common_kwargs, register
from avalanche_sst.plugins.m2kd import grow_incremental_classifier
from avalanche_sst.plugins.schedule import StepwiseCosinePlugin
from avalanche_sst.strategies.m2kd import M2KD, ICaRLExperienceInfo, ICaRLM2KD

SETTINGS = ("class_incremental",)
PAPER_FINETUNE, PAPER_EPOCHS = 15, 80


def default_finetune_epochs(epochs_scratch: int) -> int:
    """The paper's 15 fine-tuning epochs per 80 training epochs, scaled (at least 1)."""
    return max(1, round(epochs_scratch * PAPER_FINETUNE / PAPER_EPOCHS))


def _kwargs(ctx: StrategyContext, extra_epochs: int, lr_factor: float = 1.0, finetune_lr_factor: float = 0.2) -> dict:
    """``common_kwargs`` with ``extra_epochs`` per step and the preset's lrs times ``lr_factor``;
    the ``extra_epochs`` (fine-tuning after pruning) at ``finetune_lr_factor`` times the step's lr.

    Every loss here is a sigmoid BCE averaged over the seen units, whose
    gradient is about 1/C of cross-entropy's; iCaRL (and the paper) answer
    with lr 2.0. ``lr_factor`` scales the preset's lrs for these methods.
    """
    if lr_factor <= 0:
        raise ValueError(f"lr_factor must be > 0, got lr_factor={lr_factor!r}")
    cfg = ctx.config
    epochs = (cfg.epochs_scratch + extra_epochs, cfg.epochs_finetune + extra_epochs)
    kwargs = common_kwargs(ctx, epochs)
    kwargs.pop("criterion")
    if lr_factor != 1.0 or extra_epochs:
        schedule = kwargs["plugins"][0]
        kwargs["plugins"][0] = StepwiseCosinePlugin(lrs=[lr * lr_factor for lr in schedule.lrs], epochs=schedule.epochs,
                                                    step_granularity=schedule.step_granularity,
                                                    hold_epochs=(extra_epochs,), hold_factor=finetune_lr_factor)
    return kwargs


def _setting(ctx) -> Optional[str]:
    return getattr(ctx.benchmark, "setting", None)


def _decay(ctx: StrategyContext, value: Optional[float]) -> float:
    return ctx.config.weight_decay if value is None else float(value)


def build_m2kd(ctx: StrategyContext, prune_ratio: float = 0.75, alpha: float = 0.5, lam: float = 1.0,
               finetune_epochs: Optional[int] = None, aux_stage: int = 2, teachers: str = "all",
               weight_decay_first: Optional[float] = None, weight_decay_after: Optional[float] = None,
               lr_factor: float = 1.0, finetune_lr_factor: float = 0.2) -> M2KD:
    ft = (default_finetune_epochs(ctx.config.epochs_scratch) if finetune_epochs is None else int(finetune_epochs)
          ) if prune_ratio > 0 else 0
    return M2KD(model=ctx.model, prune_ratio=prune_ratio, alpha=alpha, lam=lam, finetune_epochs=ft,
                aux_stage=aux_stage, teachers=teachers, weight_decay_first=_decay(ctx, weight_decay_first),
                weight_decay_after=_decay(ctx, weight_decay_after), setting=_setting(ctx),
                **_kwargs(ctx, ft, lr_factor, finetune_lr_factor))


def build_lwf_mc(ctx: StrategyContext, weight_decay: Optional[float] = None, lr_factor: float = 1.0) -> M2KD:
    wd = _decay(ctx, weight_decay)
    return M2KD(model=ctx.model, prune_ratio=0.0, lam=0.0, teachers="last", finetune_epochs=0,
                weight_decay_first=wd, weight_decay_after=wd, setting=_setting(ctx), **_kwargs(ctx, 0, lr_factor))


def build_icarl_m2kd(ctx: StrategyContext, memory_size: int = 2000, prune_ratio: float = 0.75, alpha: float = 0.5,
                     lam: float = 1.0, finetune_epochs: Optional[int] = None, teachers: str = "all",
                     lr_factor: float = 1.0, finetune_lr_factor: float = 0.2) -> ICaRLM2KD:
    ft = (default_finetune_epochs(ctx.config.epochs_scratch) if finetune_epochs is None else int(finetune_epochs)
          ) if prune_ratio > 0 else 0
    wd = _decay(ctx, None)
    return ICaRLM2KD(model=ctx.model, memory_size=memory_size, prune_ratio=prune_ratio, alpha=alpha, lam=lam,
                     finetune_epochs=ft, teachers=teachers, weight_decay_first=wd, weight_decay_after=wd,
                     setting=_setting(ctx), classes_per_exp=getattr(ctx.benchmark, "classes_per_exp", None),
                     **_kwargs(ctx, ft, lr_factor, finetune_lr_factor))


def build_icarl(ctx: StrategyContext, memory_size: int = 2000, lr_factor: float = 1.0) -> ICaRL:
    """Avalanche's iCaRL: the backbone (``fc`` -> Identity) and its ``fc`` as the sigmoid head
    over all classes (Avalanche's loss plugin copies the model into a fixed-size teacher)."""
    backbone = ctx.model
    head, backbone.fc = backbone.fc, nn.Identity()
    kwargs = _kwargs(ctx, 0, lr_factor)
    kwargs["plugins"] = [ICaRLExperienceInfo(getattr(ctx.benchmark, "classes_per_exp", None)), *kwargs["plugins"]]
    return ICaRL(feature_extractor=backbone, classifier=head, memory_size=memory_size, buffer_transform=None,
                 fixed_memory=True, **kwargs)


# --- state beyond strategy.model ------------------------------------------------------------


def _heads(model: nn.Module) -> dict:
    return {n: m for n, m in model.named_modules() if isinstance(m, IncrementalClassifier)}


def _ncm(model: nn.Module) -> Optional[NCMClassifier]:
    return next((m for m in model.modules() if isinstance(m, NCMClassifier)), None)


def method_state(strategy) -> dict:
    state = {"heads": {n: int(h.classifier.out_features) for n, h in _heads(strategy.model).items()}}
    if getattr(strategy, "m2kd", None) is not None:
        state["m2kd"] = strategy.m2kd.state_dict()
    info = plugin_of(strategy, ICaRLExperienceInfo, required=False)
    if info is not None:
        state["info"] = info.state_dict()
    icarl = plugin_of(strategy, _ICaRLPlugin, required=False)
    if icarl is not None:
        state["icarl"] = {
            "x_memory": [x.cpu() for x in icarl.x_memory], "y_memory": [[int(y) for y in ys] for ys in icarl.y_memory],
            "order": [o.cpu() for o in icarl.order], "observed_classes": [int(c) for c in icarl.observed_classes],
            "class_means": {int(c): m.cpu() for c, m in icarl.class_means.items()},
            "embedding_size": icarl.embedding_size, "output_size": icarl.output_size,
            # set on iCaRL's first forward, whose no-grad pass in train mode moves BatchNorm statistics
            "input_size": None if icarl.input_size is None else [int(d) for d in icarl.input_size]}
        ncm = _ncm(strategy.model)
        if ncm is not None and ncm.class_means is not None:
            state["ncm_shape"] = list(ncm.class_means.shape)
    loss = strategy._criterion if isinstance(strategy._criterion, ICaRLLossPlugin) else None
    if loss is not None and loss.old_model is not None:
        state["icarl_loss"] = {"old_model": loss.old_model.state_dict(),
                               "old_classes": [int(c) for c in loss.old_classes]}
    return state


def rebuild_model(strategy, state: dict) -> None:
    heads = _heads(strategy.model)
    for name, units in state.get("heads", {}).items():
        grow_incremental_classifier(heads[name], int(units))
    ncm = _ncm(strategy.model)
    if "ncm_shape" in state and ncm is not None:
        ncm.class_means = torch.zeros(state["ncm_shape"], device=strategy.device)


def load_method_state(strategy, state: dict, done_exps) -> None:
    if "m2kd" in state:
        strategy.m2kd.load_state_dict(state["m2kd"])
    if "info" in state:
        plugin_of(strategy, ICaRLExperienceInfo, required=False).load_state_dict(state["info"])
    if "icarl" in state:
        icarl, saved, device = plugin_of(strategy, _ICaRLPlugin, required=False), state["icarl"], strategy.device
        icarl.x_memory = [x.to(device) for x in saved["x_memory"]]
        icarl.y_memory = [list(ys) for ys in saved["y_memory"]]
        icarl.order = list(saved["order"])
        icarl.observed_classes = list(saved["observed_classes"])
        icarl.class_means = {int(c): m.to(device) for c, m in saved["class_means"].items()}
        icarl.embedding_size, icarl.output_size = saved["embedding_size"], saved["output_size"]
        icarl.input_size = None if saved["input_size"] is None else torch.Size(saved["input_size"])
        ncm = _ncm(strategy.model)
        if ncm is not None and ncm.class_means is not None:
            ncm.load_state_dict({"class_means": ncm.class_means})
    if "icarl_loss" in state:
        loss = strategy._criterion
        # on the strategy's device: the model being resumed is still on the CPU here
        loss.old_model = copy.deepcopy(strategy.model).to(strategy.device)
        loss.old_model.load_state_dict(state["icarl_loss"]["old_model"])
        loss.old_classes = list(state["icarl_loss"]["old_classes"])


def prune_report(strategy) -> dict:
    """M2KD's ``prune_log`` flat: ``train_acc_<reading>_step<k>`` (0-1) for every finished step."""
    plugin = getattr(strategy, "m2kd", None)
    if plugin is None:
        return {}
    return {f"train_acc_{key}_step{int(r['step'])}": value
            for r in plugin.prune_log for key, value in r.items() if key != "step"}


def _method(name, build, description):
    return register(Method(name, build, description, state_dict=method_state, load_state_dict=load_method_state,
                           settings=SETTINGS, rebuild_model=rebuild_model, report=prune_report))


_method("m2kd", build_m2kd, "M2KD: multi-model + auxiliary distillation from mask-reconstructed snapshots "
        "(Zhou et al. 2020); m2kd:prune_ratio=0 stores full snapshots, m2kd:lam=0 drops L_AD")
_method("lwf_mc", build_lwf_mc, "LwF-MC: sigmoid BCE distillation from the previous model only (Rebuffi et al.)")
_method("icarl", build_icarl, "iCaRL: herding exemplars, distillation, nearest mean of exemplars (Avalanche)")
_method("icarl_m2kd", build_icarl_m2kd, "iCaRL with M2KD's losses (all snapshots + auxiliary distillation)")
