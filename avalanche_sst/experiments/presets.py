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
import typing
from dataclasses import dataclass, field
from typing import Sequence


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
    """A command-line value in the type of the preset field ``key``."""
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            return tuple(ast.literal_eval(v) if v.strip()[:1].isdigit() or v.strip()[:1] in "-." else v.strip()
                         for v in text.split(",") if v.strip())
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if hint in (int, float):
            return hint(text)
        if origin is dict or hint is dict:
            value = ast.literal_eval(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
        if text.lower() == "none":
            return None
        return text
    except (ValueError, SyntaxError):
        raise ValueError(f"--set {key}={text!r}: not a valid {getattr(hint, '__name__', hint)}; "
                         f"e.g. ratios=1,1,1 or lr_finetune=0.01 or method_kwargs={{'replay': {{'mem_size': 500}}}}"
                         ) from None


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
