"""Sweep presets: every hyperparameter of a run, named, in one dataclass.

``quick`` is the README's main job (2 CPU cores, a few minutes); ``full`` is
the CPU setting the accuracy results in the docs come from. Values follow
../shared/METHOD.md (SGD, momentum 0.9, cosine annealing, lr 0.1 from scratch
and 0.001 afterwards), with epochs and data scaled down for CPU.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from avalanche_sst.experiments.registry import parse_variant


# Preset fields that cannot change a run's numbers (which runs exist, where and how fast
# they run): a finished run is reused across them, and caches are keyed without them.
NOT_RESULT_FIELDS = ("name", "methods", "seeds", "method_kwargs", "num_threads", "eval_batch_size")


@dataclass
class Preset:
    name: str = "custom"
    dataset: str = "fashion_mnist"
    data_root: str | None = None
    model: str = "resnet8"
    methods: tuple[str, ...] = ("finetune", "lwf", "ewc", "cumulative", "sst")
    # The continual-learning scenario (experiments.scenarios) and its arguments;
    # ``ratios`` and ``label_noise`` belong to "same_class".
    scenario: str = "same_class"
    scenario_kwargs: dict = field(default_factory=dict)
    multi_head: bool = True  # task-incremental scenarios: one head per task (Avalanche's MultiHeadClassifier)
    method_kwargs: dict = field(default_factory=dict)  # {"replay": {"mem_size": 500}, ...}
    ratios: tuple[float, ...] = (1, 1, 1, 1)
    seeds: tuple[int, ...] = (0,)
    train_fraction: float = 1.0  # stratified subsample of the training set, before splitting
    test_fraction: float = 1.0
    validation_fraction: float = 0.1
    # "valid": score every step on the validation slices instead of the test set,
    # to choose hyperparameters without looking at the test set.
    evaluate_on: str = "test"
    label_noise: float = 0.0
    batch_size: int = 128
    eval_batch_size: int = 128  # measured fastest on 2 CPU cores (benchmarks/speed.py)
    epochs_scratch: int = 10
    epochs_finetune: int = 5
    lr_scratch: float = 0.1
    lr_finetune: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # Baseline hyperparameters (Avalanche's names).
    lwf_alpha: float = 1.0
    lwf_temperature: float = 2.0
    ewc_lambda: float = 100.0
    # SST framework (issue 3); per-phase epochs.
    sst_epochs: int = 5
    aod_epochs: int = 5
    sst_kwargs: dict = field(default_factory=dict)
    device: str = "cpu"
    num_threads: int = 0  # 0: torch's default
    # Denormal floats slow CPU convolutions by up to 20x here (ResNet-20: 54 vs 1017 samples/s).
    flush_denormal: bool = True
    # glibc returns big freed blocks to the kernel and page-faults them back in at
    # every reuse: evaluation at batch 1000 spent most of its time in the kernel
    # (benchmarks/speed.py: 5.3 s -> 2.1 s for the 10k test set).
    keep_freed_memory: bool = True

    def replace(self, **changes) -> "Preset":
        return dataclasses.replace(self, **changes)

    def with_settings(self, assignments: Sequence[str]) -> "Preset":
        """``["ratios=1,2,3,4", "label_noise=0.1"]`` applied to this preset (the sweep's ``--set``)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        hints = typing.get_type_hints(type(self))
        changes = {}
        for item in assignments:
            key, eq, text = item.partition("=")
            key = key.strip()
            if not eq:
                raise ValueError(f"--set expects key=value, got {item!r}")
            if key not in fields:
                near = difflib.get_close_matches(key, fields, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ValueError(f"--set {item!r}: the preset has no field {key!r}{hint} "
                                 f"(fields: {', '.join(sorted(fields))})")
            changes[key] = _parse_field(key, text.strip(), hints[key])
        return self.replace(**changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _parse_field(key: str, text: str, hint):
    """A command-line value in the type of the preset field ``key`` (tuples element by element)."""
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            element = typing.get_args(hint)[0]
            return tuple(_parse_scalar(v.strip(), element) for v in text.split(",") if v.strip())
        if origin is dict or hint is dict:
            value = ast.literal_eval(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
        return _parse_scalar(text, hint)
    except (ValueError, SyntaxError):
        raise ValueError(f"--set {key}={text!r}: not a valid {_type_name(hint)}; e.g. "
                         f"{_EXAMPLES.get(key, 'ratios=1,1,1 or lr_finetune=0.01')}") from None


def _parse_scalar(text: str, hint):
    if hint is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError
        return text.lower() in ("true", "1")
    if hint is int:
        return int(text)
    if hint is float:  # "1" stays the int 1, as the presets write whole ratios
        return int(text) if text.lstrip("-").isdigit() else float(text)
    if text.lower() == "none" and _allows_none(hint):
        return None
    return text


def _allows_none(hint) -> bool:
    return type(None) in typing.get_args(hint)


def _type_name(hint) -> str:
    if typing.get_origin(hint) is tuple:
        return f"comma-separated list of {_type_name(typing.get_args(hint)[0])}s"
    if _allows_none(hint):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return {type(None): "None", dict: "dict"}.get(hint, getattr(hint, "__name__", str(hint)))


_EXAMPLES = {"ratios": "ratios=1,1,1,1", "seeds": "seeds=0,1,2", "methods": "methods=finetune,sst",
             "method_kwargs": "method_kwargs={'replay': {'mem_size': 500}}",
             "scenario_kwargs": "scenario_kwargs={'classes_per_step': 2}", "sst_kwargs": "sst_kwargs={'lam': 0.01}"}

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "tiny_imagenet")

# Field -> (holds, what a valid value is). Every field also gets its type checked.
_RULES: dict[str, tuple[typing.Callable, str]] = {
    "dataset": (lambda v: v in DATASETS, f"one of {', '.join(DATASETS)}"),
    "methods": (lambda v: len(v) > 0, "one or more method names (experiments/list_methods.py lists them)"),
    "ratios": (lambda v: len(v) > 0 and all(r > 0 for r in v), "one or more positive numbers, e.g. 1,1,1,1"),
    "seeds": (lambda v: len(v) > 0, "one or more ints, e.g. 0,1,2"),
    "train_fraction": (lambda v: 0 < v <= 1, "in (0, 1]: the share of the training set used (1 = all)"),
    "test_fraction": (lambda v: 0 < v <= 1, "in (0, 1]: the share of the test set used (1 = all)"),
    "validation_fraction": (lambda v: 0 <= v < 1, "in [0, 1): the share of each part held out for validation"),
    "evaluate_on": (lambda v: v in ("test", "valid"), "'test' or 'valid'"),
    "label_noise": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "epochs_scratch": (lambda v: v >= 0, ">= 0"),
    "epochs_finetune": (lambda v: v >= 0, ">= 0"),
    "sst_epochs": (lambda v: v >= 0, ">= 0"),
    "aod_epochs": (lambda v: v >= 0, ">= 0"),
    "lr_scratch": (lambda v: v > 0, "> 0"),
    "lr_finetune": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "lwf_alpha": (lambda v: v >= 0, ">= 0"),
    "lwf_temperature": (lambda v: v > 0, "> 0"),
    "ewc_lambda": (lambda v: v >= 0, ">= 0"),
    "num_threads": (lambda v: v >= 0, ">= 0 (0: torch's default)"),
}

# Concrete model names for "did you mean" (models.MODEL_NAMES also lists the patterns).
_MODEL_EXAMPLES = ("resnet8", "resnet20", "resnet32", "resnet110", "resnet8-w4", "wrn28-10", "mobilenetv2",
                   "resnet34", "resnet50", "resnet101", "mlp", "mlp-400-400", "cnn", "cnn-8-16")


def _has_type(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return isinstance(value, tuple) and all(_has_type(v, typing.get_args(hint)[0]) for v in value)
    if _allows_none(hint):
        return value is None or any(_has_type(value, a) for a in typing.get_args(hint) if a is not type(None))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def validate_preset(preset: "Preset") -> None:
    """Check every field's type and range, the model name, the scenario and the device, before
    any data is loaded; a ``ValueError`` names the field and a valid value (``--set FIELD=VALUE``)."""
    hints = typing.get_type_hints(type(preset))
    for f in dataclasses.fields(preset):
        value = getattr(preset, f.name)
        if not _has_type(value, hints[f.name]):
            raise ValueError(f"preset field {f.name} must be a {_type_name(hints[f.name])}, got {value!r}; "
                             f"e.g. --set {_EXAMPLES.get(f.name, f'{f.name}=...')}")
        rule = _RULES.get(f.name)
        if rule is not None and not rule[0](value):
            raise ValueError(f"preset field {f.name} must be {rule[1]}, got {value!r}; fix it with --set {f.name}=...")
    _check_model_name(preset.model)
    _check_device(preset.device)
    from avalanche_sst.experiments.scenarios import get_scenario

    get_scenario(preset.scenario)


def _check_model_name(name: str) -> None:
    """Build ``name`` on the meta device (no memory, no time): the model zoo's own parser decides."""
    import torch

    from avalanche_sst.models import MODEL_NAMES, build_model

    try:
        with torch.device("meta"):
            build_model(name, num_classes=10, in_channels=1, image_size=28)
    except ValueError:
        near = difflib.get_close_matches(name.strip().lower(), _MODEL_EXAMPLES, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ValueError(f"unknown model {name!r}; {hint}valid names: {', '.join(MODEL_NAMES)}") from None


def _check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a torch device ({exc}); e.g. --device cpu or --device cuda:0"
                         ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}, but torch sees no CUDA GPU here; use --device cpu")


_SPLIT_QUICK = dict(
    scenario_kwargs={"classes_per_step": 2},
    methods=("finetune", "lwf", "ewc", "replay", "cumulative"),
    seeds=(0,),
    train_fraction=0.2,
    test_fraction=0.5,
    batch_size=64,
    epochs_scratch=3,
    epochs_finetune=3,
    lr_finetune=0.1,
    method_kwargs={"replay": {"mem_size": 200}},
)

PRESETS = {
    # CPU scaling: the paper fine-tunes (and runs AOD) at lr 0.001 for 300 epochs;
    # with 3-5 epochs that lr leaves the model almost unchanged (measured on this
    # preset: every method's later steps moved Top-1 by under 1 point), so the CPU
    # presets use 0.01. From scratch and SST keep the paper's 0.1.
    "quick": Preset(
        name="quick",
        seeds=(0,),
        train_fraction=0.2,
        test_fraction=0.2,
        batch_size=64,
        epochs_scratch=4,
        epochs_finetune=3,
        lr_finetune=0.01,
        sst_epochs=9,  # E_cut = 3; about 380 iterations, enough for lam = 0.01 to reach zero_tol
        aod_epochs=3,
    ),
    "full": Preset(
        name="full",
        seeds=(0, 1, 2),
        train_fraction=0.5,
        batch_size=128,
        epochs_scratch=10,
        epochs_finetune=5,
        lr_finetune=0.01,
        sst_epochs=9,
        aod_epochs=5,
    ),
    # Class- and task-incremental Split Fashion-MNIST, 5 steps of 2 classes, a
    # few minutes on 2 cores. Every step learns new classes, so each trains at
    # the from-scratch lr for the same epochs.
    "split_quick": Preset(name="split_quick", scenario="class_incremental", **_SPLIT_QUICK),
    "task_quick": Preset(name="task_quick", scenario="task_incremental", **_SPLIT_QUICK),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None


def run_settings(preset: Preset, method_name: str) -> dict:
    """What a run's numbers depend on: the preset's fields (JSON types), its method's own kwargs."""
    fields = {k: v for k, v in preset.to_dict().items() if k not in NOT_RESULT_FIELDS}
    fields["method_kwargs"] = preset.method_kwargs.get(parse_variant(method_name)[0], {})
    return json.loads(json.dumps(fields, default=str))


def check_same_settings(path: Path, saved: Optional[dict], settings: dict, method_name: str = "") -> None:
    """A finished or checkpointed run is reused only under the settings it ran with (runs
    saved before settings were recorded are trusted). The preset's kwargs that ``method_name``'s
    own keys replace (``m2kd:lr_factor=0.1`` runs at 0.1 whatever the preset's ``lr_factor``)
    are not compared: the run's folder, named after the method, already fixes them."""
    if saved is None or saved == settings:
        return
    named = set(parse_variant(method_name)[1]) if method_name else set()
    saved, settings = ({**d, "method_kwargs": {k: v for k, v in (d.get("method_kwargs") or {}).items()
                                               if k not in named}} for d in (saved, settings))
    if saved == settings:
        return
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    detail = ", ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
    raise ValueError(f"{path} was run with other settings ({detail}); write this sweep to another --out "
                     f"folder, or delete {path.parent} to rerun it")
