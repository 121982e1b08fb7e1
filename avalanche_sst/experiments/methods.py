"""The methods a sweep can run, each a factory of one Avalanche strategy.

A method builds its strategy once per run (one object across all experiences,
so LwF's teacher and EWC's importances survive), and knows how to save and
restore the state that lives outside the model and optimizer, so a sweep can
resume after a crash at the last finished experience.
"""

from __future__ import annotations

import ast
import re
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from avalanche.training import EWC, Cumulative, LwF, Naive
from avalanche.training.utils import ParamData

from avalanche_sst.plugins.schedule import StepwiseCosinePlugin


@dataclass
class StrategyContext:
    """What every method factory receives."""

    model: torch.nn.Module
    config: Any  # experiments.presets.Preset
    evaluator: Any
    device: torch.device
    plugins: list = field(default_factory=list)
    valid_stream: Any = None  # per-experience validation slices, for methods that select on them


def _sgd(ctx: StrategyContext, params=None):
    return torch.optim.SGD(
        ctx.model.parameters() if params is None else params,
        lr=ctx.config.lr_scratch,
        momentum=ctx.config.momentum,
        weight_decay=ctx.config.weight_decay,
    )


def _schedule(ctx: StrategyContext) -> StepwiseCosinePlugin:
    cfg = ctx.config
    return StepwiseCosinePlugin(
        lrs=(cfg.lr_scratch, cfg.lr_finetune), epochs=(cfg.epochs_scratch, cfg.epochs_finetune)
    )


def _common(ctx: StrategyContext) -> dict:
    return dict(
        optimizer=_sgd(ctx),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=ctx.config.batch_size,
        train_epochs=ctx.config.epochs_scratch,
        eval_mb_size=ctx.config.eval_batch_size,
        device=ctx.device,
        evaluator=ctx.evaluator,
        plugins=[_schedule(ctx), *ctx.plugins],
        eval_every=-1,
    )


@dataclass
class Method:
    """A named strategy factory with resumable extra state."""

    name: str
    build: Callable[[StrategyContext], Any]
    description: str
    state_dict: Callable[[Any], dict] = lambda strategy: {}
    load_state_dict: Callable[[Any, dict, list], None] = lambda strategy, state, done_exps: None


# --- LwF: the previous model is the teacher ---------------------------------


def _lwf_plugin(strategy):
    from avalanche.training.plugins import LwFPlugin

    return next(p for p in strategy.plugins if isinstance(p, LwFPlugin)).lwf


def _lwf_state(strategy) -> dict:
    lwf = _lwf_plugin(strategy)
    state = {"expcount": lwf.expcount}
    if lwf.prev_model is not None:
        state["prev_model"] = lwf.prev_model.state_dict()
    state["prev_classes"] = {int(t): sorted(int(c) for c in cs) for t, cs in lwf.prev_classes_by_task.items()}
    return state


def _lwf_load(strategy, state, done_exps) -> None:
    lwf = _lwf_plugin(strategy)
    lwf.expcount = int(state["expcount"])
    if "prev_model" in state:
        lwf.prev_model = copy.deepcopy(strategy.model)
        lwf.prev_model.load_state_dict(state["prev_model"])
    lwf.prev_classes_by_task.clear()
    for t, cs in state["prev_classes"].items():
        lwf.prev_classes_by_task[int(t)] = set(cs)


# --- EWC: saved parameters and Fisher importances per experience ------------


def _ewc_plugin(strategy):
    from avalanche.training.plugins import EWCPlugin

    return next(p for p in strategy.plugins if isinstance(p, EWCPlugin))


def _param_dicts_to_tensors(d) -> dict:
    return {int(t): {k: p.data.detach().cpu() for k, p in ps.items()} for t, ps in d.items()}


def _tensors_to_param_dicts(d, target) -> None:
    target.clear()
    for t, ps in d.items():
        target[int(t)] = {k: ParamData(k, t_.shape, init_tensor=t_) for k, t_ in ps.items()}


def _ewc_state(strategy) -> dict:
    ewc = _ewc_plugin(strategy)
    return {
        "saved_params": _param_dicts_to_tensors(ewc.saved_params),
        "importances": _param_dicts_to_tensors(ewc.importances),
    }


def _ewc_load(strategy, state, done_exps) -> None:
    ewc = _ewc_plugin(strategy)
    _tensors_to_param_dicts(state["saved_params"], ewc.saved_params)
    _tensors_to_param_dicts(state["importances"], ewc.importances)


# --- Cumulative: rebuild the concatenation of the finished experiences ------


def _cumulative_load(strategy, state, done_exps) -> None:
    strategy.dataset = None
    for exp in done_exps:
        data = exp.dataset
        strategy.dataset = data if strategy.dataset is None else strategy.dataset.concat(data)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register(Method("finetune", lambda ctx: Naive(model=ctx.model, **_common(ctx)),
                "fine-tuning: Avalanche Naive, each step continues from the previous model"))
register(Method("lwf", lambda ctx: LwF(model=ctx.model, alpha=ctx.config.lwf_alpha,
                                       temperature=ctx.config.lwf_temperature, **_common(ctx)),
                "Learning without Forgetting (Avalanche LwF)", _lwf_state, _lwf_load))
register(Method("ewc", lambda ctx: EWC(model=ctx.model, ewc_lambda=ctx.config.ewc_lambda, **_common(ctx)),
                "Elastic Weight Consolidation (Avalanche EWC)", _ewc_state, _ewc_load))
register(Method("cumulative", lambda ctx: Cumulative(model=ctx.model, **_common(ctx)),
                "Cumulative: all data so far (upper bound)", load_state_dict=_cumulative_load))


def parse_variant(name: str) -> tuple[str, dict]:
    """``"sst:sparsity=bst,use_msl=False"`` -> ``("sst", {"sparsity": "bst", "use_msl": False})``.

    Values are Python literals (numbers, booleans, tuples); anything else is a string.
    """
    base, _, spec = name.partition(":")
    kwargs = {}
    for item in filter(None, re.split(r",(?![^()]*\))", spec)):  # commas outside tuples
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"method variant {name!r}: expected key=value, got {item!r}")
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    return base, kwargs


def get_method(name: str) -> Method:
    """A registered method, or a variant of one with constructor overrides.

    A variant ``"base:key=value,..."`` passes its keys to the base method's
    builder (every method whose ``build`` takes keyword overrides, e.g. ``sst``).
    """
    base, overrides = parse_variant(name)
    if base not in METHODS:
        raise ValueError(f"unknown method {base!r}; choose from {sorted(METHODS)}")
    method = METHODS[base]
    if not overrides:
        return method
    return dataclasses.replace(method, name=name, build=lambda ctx: method.build(ctx, **overrides))


# --- the SST framework (Lee & Kim 2023) ---------------------------------------


def _build_sst(ctx: StrategyContext, **overrides):
    from avalanche_sst.strategies import MultiStepSST

    cfg = ctx.config
    kwargs = dict(
        valid_stream=ctx.valid_stream,
        num_experiences=len(cfg.ratios),
        epochs_scratch=cfg.epochs_scratch, epochs_sst=cfg.sst_epochs, epochs_aod=cfg.aod_epochs,
        lr_scratch=cfg.lr_scratch, lr_sst=cfg.lr_scratch, lr_aod=cfg.lr_finetune,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        train_mb_size=cfg.batch_size, eval_mb_size=cfg.eval_batch_size,
        device=ctx.device, evaluator=ctx.evaluator, plugins=ctx.plugins,
    )
    kwargs.update(cfg.sst_kwargs)
    kwargs.update(overrides)
    return MultiStepSST(model=ctx.model, **kwargs)


register(Method("sst", _build_sst, "ours: multi-step SST + diverse re-init + AOD + MSL (Lee & Kim 2023)",
                lambda strategy: strategy.state_dict(),
                lambda strategy, state, done_exps: strategy.load_state_dict(state)))


# The paper's other baselines (HPO, DML, LwM) register themselves.
from avalanche_sst.experiments import baselines  # noqa: E402,F401
