"""The registry of sweep methods: a name, a strategy factory, the settings it runs in.

A method module (``avalanche_sst/experiments/methods/<name>.py``) calls
:func:`register` at import; the ``methods`` package imports every module in
it, so a new method is one new file and nothing else. This module imports no
method module, so there is no import back from the methods into the registry.

A method builds its strategy once per run (one object across all
experiences, so LwF's teacher and EWC's importances survive) and knows how
to save and restore the state that lives outside the model, so a sweep can
resume after a crash at the last finished experience. ``rebuild_model``
reshapes the model (a grown head, a pruned student) from that saved state
before the model's weights are loaded.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from avalanche_sst.plugins.schedule import StepwiseCosinePlugin

SETTINGS = ("same_class", "class_incremental", "task_incremental", "new_class", "unseen_class")


@dataclass
class StrategyContext:
    """What every method factory receives."""

    model: torch.nn.Module
    config: Any  # experiments.presets.Preset
    evaluator: Any
    device: torch.device
    plugins: list = field(default_factory=list)
    valid_stream: Any = None  # per-experience validation slices, for methods that select on them
    benchmark: Any = None
    seed: int = 0
    # A folder the runs of one sweep share for what they can reuse (e.g. the edge method's
    # trained cloud teacher); None: nothing is shared.
    cache_dir: Any = None

    def method_kwargs(self, name: str) -> dict:
        """The preset's constructor arguments for method ``name`` (``Preset.method_kwargs``)."""
        return dict(getattr(self.config, "method_kwargs", {}).get(name, {}))


def _no_state(strategy) -> dict:
    return {}


def _no_load(strategy, state, done_exps) -> None:
    return None


@dataclass
class Method:
    """A named strategy factory with resumable extra state."""

    name: str
    build: Callable[..., Any]  # build(ctx, **overrides)
    description: str
    state_dict: Callable[[Any], dict] = _no_state
    load_state_dict: Callable[[Any, dict, list], None] = _no_load
    settings: tuple[str, ...] = ("same_class",)
    rebuild_model: Optional[Callable[[Any, dict], None]] = None
    # Numbers that describe a finished run beyond its per-step scores (a student's
    # compression ratio, a task's capacity), flat ``{name: float}``; kept in the
    # run's done.json and readable by a paper table's cells (``Cell.score``).
    report: Optional[Callable[[Any], dict]] = None
    # For a builder that forwards **overrides: the names it accepts (checked before any run).
    accepted: Optional[Callable[[], set[str]]] = None
    # The builder's own learning-rate arguments, used instead of the preset's lr_scratch/lr_finetune
    # (Ada-QPacknet's Adam lr and floor, the edge step's lr_incremental): lr_factor scales them too.
    lr_args: tuple[str, ...] = ()
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown settings {unknown}; choose from {SETTINGS}")


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def sgd(ctx: StrategyContext, params=None, weight_decay: Optional[float] = None) -> torch.optim.SGD:
    cfg = ctx.config
    return torch.optim.SGD(
        ctx.model.parameters() if params is None else params,
        lr=cfg.lr_scratch,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay if weight_decay is None else weight_decay,
    )


def lr_schedule(ctx: StrategyContext, epochs: Optional[tuple] = None) -> StepwiseCosinePlugin:
    """Per-step lr and epochs (cosine per iteration): from scratch first, fine-tuning after."""
    cfg = ctx.config
    return StepwiseCosinePlugin(lrs=(cfg.lr_scratch, cfg.lr_finetune),
                                epochs=epochs or (cfg.epochs_scratch, cfg.epochs_finetune))


def common_kwargs(ctx: StrategyContext, epochs: Optional[tuple] = None) -> dict:
    """Optimizer, criterion, batch sizes, device, evaluator and plugins of a SupervisedTemplate."""
    return dict(
        optimizer=sgd(ctx),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=ctx.config.batch_size,
        train_epochs=ctx.config.epochs_scratch,
        eval_mb_size=ctx.config.eval_batch_size,
        device=ctx.device,
        evaluator=ctx.evaluator,
        plugins=[lr_schedule(ctx, epochs), *ctx.plugins],
        eval_every=-1,
    )


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


def accepted_overrides(method: Method) -> Optional[set[str]]:
    """The keyword arguments ``method.build`` takes after ``ctx``; ``None``: unknown (``**kwargs``)."""
    params = list(inspect.signature(method.build).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return set(method.accepted()) if method.accepted is not None else None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _closest(word: str, choices) -> str:
    near = difflib.get_close_matches(word, sorted(choices), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def get_method(name: str, defaults: Optional[dict] = None) -> Method:
    """A registered method, or a variant of one with constructor overrides.

    A variant ``"base:key=value,..."`` passes its keys to the base method's
    builder; every key is checked against the builder's keyword arguments
    here, before any run starts. ``defaults`` (a preset's ``method_kwargs``
    for this method) are overridden by the variant's keys.
    """
    base, overrides = parse_variant(name)
    overrides = {**(defaults or {}), **overrides}
    if base not in METHODS:
        raise ValueError(f"unknown method {base!r}; choose from {sorted(METHODS)}{_closest(base, METHODS)}")
    method = METHODS[base]
    if not overrides:
        return method
    accepted = accepted_overrides(method)
    factors = [k for k in (LR_FACTOR, LR_FINETUNE_FACTOR) if k in overrides and k not in (accepted or ())]
    if factors:
        return _with_lr_factors(method, name, overrides, factors)
    if accepted is not None:
        for key in overrides:
            if key not in accepted:
                raise ValueError(
                    f"method variant {name!r}: {base!r} has no argument {key!r}{_closest(key, accepted)} "
                    f"(its arguments: {sorted(accepted) or 'none'})")
    return dataclasses.replace(method, name=name, overrides=overrides,
                               build=lambda ctx: method.build(ctx, **overrides))


#: The variant key every method understands: it scales the preset's ``lr_scratch`` and ``lr_finetune``
#: (a builder that takes ``lr_factor`` itself, e.g. M2KD's, gives it the same meaning), so one
#: selection grid covers every method of a table.
LR_FACTOR = "lr_factor"
#: Scales the preset's ``lr_finetune`` alone (every step after the first): where the first step trains
#: the network every method starts from (the edge tables' teacher), a grid over the later steps' rate
#: leaves that network as the preset trains it.
LR_FINETUNE_FACTOR = "lr_finetune_factor"


def _factor(name: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        scales = "lr_scratch and lr_finetune" if key == LR_FACTOR else "lr_finetune"
        raise ValueError(f"method variant {name!r}: {key} must be a number > 0 (it scales the preset's "
                         f"{scales}), got {value!r}")
    return float(value)


def _with_lr_factors(method: Method, name: str, overrides: dict, keys: list[str]) -> Method:
    """``method`` with its other overrides, built under the preset's lrs times ``overrides["lr_factor"]``
    (``lr_finetune`` also times ``overrides["lr_finetune_factor"]``); the method's own ``lr_args`` (given,
    else their builder defaults; None: the preset's) are scaled by ``lr_factor``. ``lr_finetune_factor``
    is refused where an own rate replaces ``lr_finetune``: it would change nothing."""
    factor, later = (_factor(name, k, overrides[k]) if k in keys else 1.0 for k in (LR_FACTOR, LR_FINETUNE_FACTOR))
    rest = {k: v for k, v in overrides.items() if k not in keys}
    defaults = {k: p.default for k, p in inspect.signature(method.build).parameters.items()}
    own = {key: rest.get(key, defaults.get(key)) for key in method.lr_args}
    fixed = {k: v for k, v in own.items() if v is not None}
    if LR_FINETUNE_FACTOR in keys and fixed:
        raise ValueError(f"method variant {name!r}: {LR_FINETUNE_FACTOR} scales the preset's lr_finetune, which "
                         f"{method.name!r} does not read while its own rate is set ({fixed}); drop "
                         f"{', '.join(fixed)} from the variant and the preset's method_kwargs, or use {LR_FACTOR}")
    rest.update({k: v * factor for k, v in fixed.items()})
    inner = get_method(method.name, rest)

    def build(ctx: StrategyContext):
        cfg = ctx.config
        scaled = cfg.replace(lr_scratch=cfg.lr_scratch * factor, lr_finetune=cfg.lr_finetune * factor * later)
        return inner.build(dataclasses.replace(ctx, config=scaled))

    return dataclasses.replace(inner, name=name, overrides=overrides, build=build)


def check_setting(method: Method, setting: str) -> None:
    if setting not in method.settings:
        raise ValueError(
            f"method {method.name!r} does not run in the {setting!r} setting (it supports {list(method.settings)}); "
            f"pick another scenario with --set scenario=... or drop the method")
