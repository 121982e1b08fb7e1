"""The paper's tables (Lee & Kim, IEEE Access 2023, sec. IV), each as a small spec.

Every entry of :data:`TABLES` says what the paper varies, which method
variant (``avalanche_sst.experiments.methods.get_method`` names, e.g.
``"sst:sparsity=bst,use_msl=False"``) and which step fills each cell of the
paper's row/column layout, and which ``Preset`` fields a cell changes (e.g.
the model, for Table 2). Each entry has three presets:

* ``cpu``: Fashion-MNIST on 2 CPU cores at 3 seeds, sized so that all nine
  entries run in about two hours as two one-thread processes side by side
  (``paper_tables.py --list`` prints :func:`estimate_cpu_seconds`, 13-19 min
  each; docs/results.md has the measured times);
* ``paper``: the paper's dataset, model, batch size, weight decay and epochs
  (CIFAR-100: batch 256, wd 5e-4, 300 epochs; Tiny-ImageNet: batch 64, wd
  1e-4, 90 epochs), for a GPU and data this machine may lack;
* ``tiny``: a few batches of a width-4 ResNet-8, for the tests.

:func:`run_table` runs the needed sweep(s) with
:func:`~avalanche_sst.experiments.sweep.run_sweep` (one per distinct set of
preset overrides, e.g. one per model depth) into ``<out_root>/<table_id>/``
and writes ``<table_id>.md`` / ``.csv`` / ``.json`` there: the paper-shaped
table, cells "mean ± std" (sample std) over seeds computed from the runs' own
numbers, plus the command and seeds. ``fig3`` is built directly from a
``SupervisedTemplate`` with ``SSTPlugin`` (BST and SST from the same
pre-trained model) and writes a histogram PNG and the means.

:func:`write_report` turns ``<results>/*/<table>.csv`` and
``docs/paper_numbers.csv`` into ``docs/results.md``: our table, the paper's
numbers, the command, seeds and summed run seconds, and one generated
sentence per table on whether the paper's ordering held
(:func:`compare_orderings`).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch

from avalanche_sst.experiments.presets import Preset

# --------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------

PRESET_NAMES = ("cpu", "paper", "tiny")


@dataclass(frozen=True)
class Cell:
    """One cell of a paper table: the accuracy of ``method`` after ``step`` (1-based).

    ``overrides`` are ``Preset`` fields for this cell's sweep, as ``(field,
    value)`` pairs; a value may be a dict keyed by preset name (``cpu``,
    ``paper``, ``tiny``). Cells with equal (resolved) overrides share a sweep.
    """

    row: str
    col: str
    method: str
    step: int
    overrides: tuple = ()


@dataclass(frozen=True)
class TableSpec:
    id: str
    title: str
    varies: str  # what the paper varies
    corner: str  # header of the row-label column
    rows: tuple[str, ...]  # the paper's row labels, in order
    columns: tuple[str, ...]  # the paper's column labels, in order
    cells: tuple[Cell, ...]
    presets: Mapping[str, Preset]
    paper_setting: str  # the ``setting`` of its rows in docs/paper_numbers.csv
    paper_source: str  # where in the paper
    order: str = "rows"  # pairs compared for the ordering sentence: within each row, or "all" cells
    gain: Optional[str] = None  # "row": a Gain(%) row vs the first column; "col": a Gain(%) column
    kind: str = "sweep"  # or "fig3"
    # Paper orderings stated in words (no numbers), as ((row, col) higher, (row, col) lower, quote).
    paper_claims: tuple = ()
    notes: tuple[str, ...] = ()
    decimals: tuple = ()  # (column, decimals) where not 2

    def preset(self, name: str, seeds: Optional[Sequence[int]] = None) -> Preset:
        if name not in self.presets:
            raise ValueError(f"{self.id}: unknown preset {name!r}; choose from {sorted(self.presets)}")
        p = self.presets[name]
        return p.replace(seeds=tuple(int(s) for s in seeds)) if seeds else p

    def cell(self, row: str, col: str) -> Optional[Cell]:
        for c in self.cells:
            if c.row == row and c.col == col:
                return c
        return None

    def methods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.method for c in self.cells))


def resolve_overrides(cell: Cell, preset_name: str) -> tuple:
    out = []
    for key, value in cell.overrides:
        if isinstance(value, Mapping):
            value = value[preset_name]
        out.append((key, value))
    return tuple(sorted(out))


# --- presets ------------------------------------------------------------------

#: Measured CPU throughput of ResNet-8 training on Fashion-MNIST here (2 cores),
#: samples per second; AOD costs about 4x per sample (two students, two views).
RESNET8_SAMPLES_PER_S = 1800.0
AOD_COST = 4.0
# Assumed (not measured) relative costs per training sample, for the estimate only:
EVAL_COST = 1.0 / 3.0  # a forward pass without backward
MSL_COST = 1.4  # SST phase with a frozen teacher forward + attention maps
LWF_COST = 1.3  # frozen teacher forward
LWM_COST = 2.5  # teacher forward + Grad-CAM backward on teacher and student
DML_COST = 2.0  # two students
EWC_FISHER_EPOCHS = 1.0  # one pass over the part for the importances


def _cpu(**changes) -> Preset:
    """The CPU base: Fashion-MNIST, ResNet-8, 3 seeds, the whole test set.

    Batch 64 and 9-epoch SST phases, as the ``quick`` preset on which lam =
    0.01 was checked to take the Target_r fraction to |gamma| <= 0.01 (needs
    about 250+ SST iterations; every cpu preset below has more).
    """
    base = Preset(
        name="paper-cpu", dataset="fashion_mnist", model="resnet8", seeds=(0, 1, 2),
        test_fraction=1.0, validation_fraction=0.1, batch_size=64, eval_batch_size=1000,
        epochs_scratch=4, epochs_finetune=3, sst_epochs=9, aod_epochs=3,
        # lr 0.01 after step 1: the CPU scaling of the quick/full presets (0.001 barely moves a model in 3 epochs).
        lr_scratch=0.1, lr_finetune=0.01, momentum=0.9, weight_decay=5e-4, device="cpu",
    )
    return base.replace(**changes)


def _cifar(**changes) -> Preset:
    """Paper, CIFAR-100 (sec. IV-B): batch 256, wd 5e-4, 300 epochs per phase, cosine."""
    base = Preset(
        name="paper-cifar100", dataset="cifar100", data_root="data/cifar100", model="resnet110",
        seeds=(0, 1, 2), train_fraction=1.0, test_fraction=1.0, validation_fraction=0.1,
        batch_size=256, eval_batch_size=1000, epochs_scratch=300, epochs_finetune=300,
        sst_epochs=300, aod_epochs=300, lr_scratch=0.1, lr_finetune=0.001, momentum=0.9,
        weight_decay=5e-4, device="cuda", flush_denormal=False,
        sst_kwargs={"lam": 1e-4},  # Network Slimming's lambda for long phases; 1e-2 is for few-epoch phases
    )
    return base.replace(**changes)


def _tiny_imagenet(**changes) -> Preset:
    """Paper, Tiny-ImageNet (sec. IV-B): batch 64, wd 1e-4, 90 epochs per phase.

    The paper divides the lr by 10 every 30 epochs there; the product anneals
    with a cosine (``StepwiseCosinePlugin``, METHOD.md) in every preset.
    """
    base = Preset(
        name="paper-tiny-imagenet", dataset="tiny_imagenet", data_root="data/tiny-imagenet-200",
        model="resnet50", seeds=(0, 1, 2), train_fraction=1.0, test_fraction=1.0,
        validation_fraction=0.1, batch_size=64, eval_batch_size=500, epochs_scratch=90,
        epochs_finetune=90, sst_epochs=90, aod_epochs=90, lr_scratch=0.1, lr_finetune=0.001,
        momentum=0.9, weight_decay=1e-4, device="cuda", flush_denormal=False,
        sst_kwargs={"lam": 1e-4},  # Network Slimming's lambda for long phases; 1e-2 is for few-epoch phases
    )
    return base.replace(**changes)


def _tiny(**changes) -> Preset:
    """Tests: a width-4 ResNet-8, a few batches, one epoch per phase, one thread."""
    base = Preset(
        name="paper-tiny", dataset="fashion_mnist", model="resnet8-w4", seeds=(0,),
        train_fraction=0.01, test_fraction=0.02, validation_fraction=0.2, batch_size=32,
        eval_batch_size=256, epochs_scratch=1, epochs_finetune=1, sst_epochs=1, aod_epochs=1,
        lr_finetune=0.02, num_threads=1,
    )
    return base.replace(**changes)


def _presets(table_id: str, cpu: Preset, paper: Preset, tiny: Preset) -> dict[str, Preset]:
    return {
        "cpu": cpu.replace(name=f"{table_id}-cpu"),
        "paper": paper.replace(name=f"{table_id}-paper"),
        "tiny": tiny.replace(name=f"{table_id}-tiny"),
    }


# --- cell builders ----------------------------------------------------------


def _one_row(row: str, cols: Sequence[tuple[str, str]], step: int) -> tuple[Cell, ...]:
    return tuple(Cell(row, col, method, step) for col, method in cols)


def _step_rows(cols: Sequence[tuple[str, str]], steps: int, row_fmt: str = "Step {k}") -> tuple[Cell, ...]:
    return tuple(Cell(row_fmt.format(k=k), col, method, k) for k in range(1, steps + 1) for col, method in cols)


TARGETS = (0.1, 0.3, 0.5)
CUTS = (("E_max/2", 0.5), ("E_max/3", 1.0 / 3.0), ("E_max/4", 0.25))
SINGLE, MULTI = (1, 1), (1, 1, 1, 1)

# Table 7's compared methods: the paper's four plus Avalanche's LwF, EWC and Cumulative.
T7_METHODS = (
    ("Baseline (fine-tuning)", "finetune"), ("HPO", "hpo"), ("DML", "dml"), ("LwM", "lwm"),
    ("LwF", "lwf"), ("EWC", "ewc"), ("Cumulative", "cumulative"), ("Ours", "sst"),
)

TABLES: dict[str, TableSpec] = {}


def _register(spec: TableSpec) -> TableSpec:
    TABLES[spec.id] = spec
    return spec


# Table 1 cpu: 9 single-step sst variants, f = 0.08 (2160 samples per part).
_register(TableSpec(
    id="table1",
    title="Top-1 accuracy (%) according to Target_r and E_cut (single-step, new data)",
    varies="Target_r in {0.1, 0.3, 0.5} x E_cut in {E_max/2, E_max/3, E_max/4}; single-step 1:1, "
           "accuracy after step 2",
    corner="Target_r / E_cut",
    rows=tuple(str(t) for t in TARGETS),
    columns=tuple(label for label, _ in CUTS),
    cells=tuple(Cell(str(t), label, f"sst:target_ratio={t},cut_fraction={frac!r}", 2)
                for t in TARGETS for label, frac in CUTS),
    presets=_presets("table1", _cpu(ratios=SINGLE, train_fraction=0.08), _tiny_imagenet(ratios=SINGLE),
                     _tiny(ratios=SINGLE)),
    paper_setting="Tiny-ImageNet ResNet50 single-step",
    paper_source="Table 1",
    order="all",
))

_T2_MODELS = (
    ("ResNet34", {"cpu": "resnet8", "paper": "resnet34", "tiny": "resnet8-w4"}),
    ("ResNet50", {"cpu": "resnet14", "paper": "resnet50", "tiny": "resnet14-w4"}),
    ("ResNet101", {"cpu": "resnet20", "paper": "resnet101", "tiny": "resnet20-w4"}),
)
# Table 2 cpu: 3 Target_r x ResNet-8/14/20 (cost 1x/2x/3x: 7/13/19 conv layers), f = 0.045.
_register(TableSpec(
    id="table2",
    title="Top-1 accuracy (%) according to Target_r on various networks (single-step, new data)",
    varies="Target_r in {0.1, 0.3, 0.5} x network depth (E_cut = E_max/3); single-step 1:1, accuracy after step 2",
    corner="Network / Target_r",
    rows=tuple(label for label, _ in _T2_MODELS),
    columns=tuple(str(t) for t in TARGETS),
    cells=tuple(Cell(label, str(t), f"sst:target_ratio={t}", 2, (("model", models),))
                for label, models in _T2_MODELS for t in TARGETS),
    presets=_presets("table2", _cpu(ratios=SINGLE, train_fraction=0.045), _tiny_imagenet(ratios=SINGLE),
                     _tiny(ratios=SINGLE)),
    paper_setting="Tiny-ImageNet single-step",
    paper_source="Table 2",
    notes=("Rows are the paper's networks; each runs the model named under 'models' for the preset "
           "(CPU: ResNet-8/14/20 for ResNet34/50/101, in order of depth).",),
))

# Table 3 cpu: 4 single-step sst variants, f = 0.17.
_register(TableSpec(
    id="table3",
    title="Top-1 accuracy (%) according to the loss functions in AOD (single-step, new data)",
    varies="AOD loss terms: CE only / fixed-weight KD / adaptive KD / adaptive KD + CR",
    corner="Metric",
    rows=("Acc.(%)",),
    columns=("General training", "General L_KD", "Adaptive L_KD", "Adaptive L_KD + L_CR"),
    cells=_one_row("Acc.(%)", (
        ("General training", "sst:use_kd=False,use_cr=False"),
        ("General L_KD", "sst:adaptive_weights=False,use_cr=False"),
        ("Adaptive L_KD", "sst:use_cr=False"),
        ("Adaptive L_KD + L_CR", "sst"),
    ), 2),
    presets=_presets("table3", _cpu(ratios=SINGLE, train_fraction=0.17), _cifar(ratios=SINGLE, model="resnet110"),
                     _tiny(ratios=SINGLE)),
    paper_setting="CIFAR-100 ResNet110 single-step",
    paper_source="Table 3",
    gain="row",
))

# Table 4 cpu: 3 single-step sst variants ('w/ FT' costs 1/4 of AOD in step 2), f = 0.25.
_register(TableSpec(
    id="table4",
    title="Top-1 accuracy (%) with and without diverse re-initialization (Dri) and AOD after SST",
    varies="new-data training after SST: fine-tuning / AOD with equal margins / AOD with diverse re-init",
    corner="Metric",
    rows=("Acc.(%)",),
    columns=("w/ FT", "w/ AOD", "w/ AOD&Dri"),
    cells=_one_row("Acc.(%)", (
        ("w/ FT", "sst:new_data=finetune,reinit=False"),
        ("w/ AOD", "sst:reinit=False"),
        ("w/ AOD&Dri", "sst"),
    ), 2),
    presets=_presets("table4", _cpu(ratios=SINGLE, train_fraction=0.25), _tiny_imagenet(ratios=SINGLE),
                     _tiny(ratios=SINGLE)),
    paper_setting="Tiny-ImageNet ResNet50 single-step",
    paper_source="Table 4",
    gain="row",
    notes=("'w/ FT' is MultiStepSST(new_data='finetune'): the prepared model is re-initialised "
           "(margin 0.1) and fine-tuned; 'w/ AOD' uses margin 0.1 for both students.",),
))

# Table 5 cpu: 2 multi-step sst variants, f = 0.22 (2970 samples per part).
_register(TableSpec(
    id="table5",
    title="Top-1 accuracy (%) with a fixed or an updated teacher in MSL (multi-step)",
    varies="MSL teacher: fixed vs updated when the student beats it on validation data; 4 steps",
    corner="Step",
    rows=tuple(f"Step {k}" for k in range(1, 5)),
    columns=("Fixed teacher network", "Teacher network update"),
    cells=_step_rows((("Fixed teacher network", "sst:update_teacher=False"),
                      ("Teacher network update", "sst")), 4),
    presets=_presets("table5", _cpu(ratios=MULTI, train_fraction=0.22), _tiny_imagenet(ratios=MULTI),
                     _tiny(ratios=MULTI)),
    paper_setting="Tiny-ImageNet ResNet50 multi-step",
    paper_source="Table 5",
    gain="col",
))

# Table 6 cpu: 4 multi-step variants, f = 0.11.
_register(TableSpec(
    id="table6",
    title="Top-1 accuracy (%) with and without MSL in BST and SST (multi-step)",
    varies="sparsity training BST vs SST, each with and without MSL; 4 steps",
    corner="Step",
    rows=tuple(f"Step {k}" for k in range(1, 5)),
    columns=("BST w/o MSL", "BST w/ MSL", "SST w/o MSL", "SST w/ MSL"),
    cells=_step_rows((("BST w/o MSL", "sst:sparsity=bst,use_msl=False"), ("BST w/ MSL", "sst:sparsity=bst"),
                      ("SST w/o MSL", "sst:use_msl=False"), ("SST w/ MSL", "sst")), 4),
    presets=_presets("table6", _cpu(ratios=MULTI, train_fraction=0.11), _tiny_imagenet(ratios=MULTI),
                     _tiny(ratios=MULTI)),
    paper_setting="Tiny-ImageNet ResNet50 multi-step",
    paper_source="Table 6",
))

# Table 7 single-step cpu: 8 methods (HPO = 4 lr candidates), f = 0.17.
_register(TableSpec(
    id="table7_single",
    title="Top-1 accuracy (%) in single-step training: previous (after step 1) and new (after step 2)",
    varies="method; single-step 1:1",
    corner="Training data",
    rows=("Previous", "New"),
    columns=tuple(label for label, _ in T7_METHODS),
    cells=tuple(Cell(row, col, method, step) for row, step in (("Previous", 1), ("New", 2))
                for col, method in T7_METHODS),
    presets=_presets("table7_single", _cpu(ratios=SINGLE, train_fraction=0.17),
                     _cifar(ratios=SINGLE, model="resnet110"), _tiny(ratios=SINGLE)),
    paper_setting="CIFAR-100 ResNet110 single-step",
    paper_source="Table 7",
    notes=("LwF, EWC and Cumulative (upper bound) are Avalanche's and not in the paper.",),
))

# Table 7 multi-step cpu: 8 methods x 4 steps, f = 0.14.
_register(TableSpec(
    id="table7_multi",
    title="Top-1 accuracy (%) in multi-step training (1:1:1:1), after each step",
    varies="method; multi-step 1:1:1:1",
    corner="Training data",
    rows=tuple(f"Data{k}" for k in range(1, 5)),
    columns=tuple(label for label, _ in T7_METHODS),
    cells=_step_rows(T7_METHODS, 4, row_fmt="Data{k}"),
    presets=_presets("table7_multi", _cpu(ratios=MULTI, train_fraction=0.14),
                     _cifar(ratios=MULTI, model="resnet110"), _tiny(ratios=MULTI)),
    paper_setting="CIFAR-100 ResNet110 multi-step",
    paper_source="Table 7",
    notes=("LwF, EWC and Cumulative (upper bound) are Avalanche's and not in the paper.",),
))

FIG3_ROWS = ("Pre-trained", "BST", "SST")
FIG3_COLS = ("Top-1 (%)", "mean abs(gamma) (all)", "mean abs(gamma) (non-useless)", "abs(gamma) <= zero_tol (%)")
# each column's field in a seed's Fig. 3 statistics (fig3_means.csv) and its scale to the table
FIG3_KEYS = dict(zip(FIG3_COLS, (("top1", 100.0), ("mean_all", 1.0), ("mean_remaining", 1.0), ("fraction_zero", 100.0))))
# Fig. 3 cpu: pre-training on part 1 (f = 0.3: 8100 samples, 4 epochs), then a BST and an SST
# phase of 9 epochs each from it.
_register(TableSpec(
    id="fig3",
    title="Filter scaling factors |gamma| of the pre-trained, BST and SST networks",
    varies="sparsity training: none (pre-trained) / BST (all factors) / SST (selected factors), "
           "same lam and epochs, from the same pre-trained model",
    corner="Network",
    rows=FIG3_ROWS,
    columns=FIG3_COLS,
    cells=(),
    decimals=((FIG3_COLS[1], 4), (FIG3_COLS[2], 4)),
    presets=_presets("fig3", _cpu(ratios=SINGLE, train_fraction=0.3), _tiny_imagenet(ratios=SINGLE),
                     _tiny(ratios=SINGLE, sst_epochs=3)),  # SP_r < 1 from the second epoch: SST != BST
    paper_setting="Tiny-ImageNet ResNet50",
    paper_source="Fig. 3",
    kind="fig3",
    paper_claims=((("SST", FIG3_COLS[2]), ("BST", FIG3_COLS[2]),
                   "Fig. 3(c): SST keeps the average of the remaining factors near the pre-trained one, "
                   "while with BST it is significantly reduced (sec. IV-C1)"),),
    notes=("Useless factors: the Target_r fraction with the smallest |gamma| of each network "
           "(METHOD.md's definition for re-initialisation); 'non-useless' excludes them. "
           "Top-1 is on the whole test set; the histogram pools all seeds.",),
))


# --------------------------------------------------------------------------
# CPU-time estimate
# --------------------------------------------------------------------------

def _depth_factor(model: str) -> Optional[float]:
    """Cost of a CIFAR ResNet-(6n+2) relative to ResNet-8 (n = 1); None for other models."""
    m = re.fullmatch(r"resnet-?(\d+)(?:-w(\d+))?", model.strip().lower())
    if not m or (int(m.group(1)) - 2) % 6:
        return None
    n = (int(m.group(1)) - 2) // 6
    width = int(m.group(2) or 16)
    return n * (width / 16.0) ** 2


def _method_units(method: str, preset: Preset, parts: list[float], valid: list[float], test: float) -> float:
    """Training-sample equivalents of ResNet-8 for one run of ``method`` (one seed)."""
    from avalanche_sst.experiments.methods import parse_variant

    base, kw = parse_variant(method)
    p = preset
    units = 0.0
    last = len(parts) - 1
    for k, n in enumerate(parts):
        units += test * EVAL_COST
        if k == 0:
            units += p.epochs_scratch * n
            if base == "sst" and last > 0:
                units += p.sst_epochs * n
            continue
        ef = p.epochs_finetune
        if base == "sst":
            if kw.get("new_data", "aod") == "aod":
                units += AOD_COST * p.aod_epochs * n + 2 * valid[k] * EVAL_COST
            else:
                units += p.aod_epochs * n
            if k < last:
                msl = kw.get("use_msl", True)
                units += p.sst_epochs * n * (MSL_COST if msl else 1.0)
                units += p.sst_epochs * 2 * valid[k] * EVAL_COST * (1 if msl else 0)
        elif base == "finetune":
            units += ef * n
        elif base == "lwf":
            units += ef * n * LWF_COST
        elif base == "ewc":
            units += ef * n + EWC_FISHER_EPOCHS * n
        elif base == "cumulative":
            units += ef * sum(parts[: k + 1])
        elif base == "hpo":
            n_lrs = len(getattr(p, "hpo_lrs", (0.01, 0.003, 0.001, 0.0003)))
            units += n_lrs * (ef * n + valid[k] * EVAL_COST)
        elif base == "dml":
            units += DML_COST * ef * n + 2 * valid[k] * EVAL_COST
        elif base == "lwm":
            units += LWM_COST * ef * n
        else:
            units += ef * n
    return units


def estimate_cpu_seconds(table_id: str, preset_name: str = "cpu", seeds: Optional[Sequence[int]] = None,
                         train_size: int = 60000, test_size: int = 10000) -> Optional[float]:
    """Seconds of 2-core CPU time for a table, from ``RESNET8_SAMPLES_PER_S`` and the cost model
    above (Fashion-MNIST sizes by default); None for other datasets or devices, or when a model is
    not a CIFAR ResNet-(6n+2)."""
    spec = TABLES[table_id]
    preset = spec.preset(preset_name, seeds)
    if preset.dataset != "fashion_mnist" or preset.device != "cpu":
        return None  # the measured throughput is for Fashion-MNIST on this CPU only
    n = train_size * preset.train_fraction
    total_r = float(sum(preset.ratios))
    parts = [n * (1 - preset.validation_fraction) * r / total_r for r in preset.ratios]
    valid = [n * preset.validation_fraction * r / total_r for r in preset.ratios]
    test = test_size * preset.test_fraction
    units = 0.0
    if spec.kind == "fig3":
        f = _depth_factor(preset.model)
        if f is None:
            return None
        units = f * (parts[0] * (preset.epochs_scratch + 2 * preset.sst_epochs) + 3 * test * EVAL_COST)
    else:
        for overrides, methods in _sweep_groups(spec, preset_name).items():
            model = dict(overrides).get("model", preset.model)
            f = _depth_factor(model)
            if f is None:
                return None
            units += f * sum(_method_units(m, preset, parts, valid, test) for m in methods)
    return units * len(preset.seeds) / RESNET8_SAMPLES_PER_S


# --------------------------------------------------------------------------
# running a table
# --------------------------------------------------------------------------

def _sweep_groups(spec: TableSpec, preset_name: str) -> dict[tuple, tuple[str, ...]]:
    groups: dict[tuple, list[str]] = {}
    for c in spec.cells:
        methods = groups.setdefault(resolve_overrides(c, preset_name), [])
        if c.method not in methods:
            methods.append(c.method)
    return {k: tuple(v) for k, v in groups.items()}


def _sweep_dirname(overrides: tuple) -> str:
    if not overrides:
        return "sweep"
    text = "_".join(f"{k}={v}" for k, v in overrides)
    return "sweep_" + re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)


def default_command(table_id: str, preset_name: str, seeds: Sequence[int], out_root) -> str:
    return (f"python experiments/paper_tables.py {table_id} --preset {preset_name} "
            f"--seeds {' '.join(str(s) for s in seeds)} --out {out_root}")


def run_table(table_id: str, preset_name: str = "cpu", out_root: str | Path = "results/paper", data=None,
              seeds: Optional[Sequence[int]] = None, command: Optional[str] = None,
              preset_changes: Optional[Mapping] = None, log: Callable[[str], None] = print) -> dict:
    """Run one paper table (its sweeps, or Fig. 3) and write its paper-shaped files.

    :param data: ``(train, test)`` datasets to use instead of loading ``preset.dataset``.
    :param seeds: override the preset's seeds.
    :param preset_changes: other ``Preset`` fields to override (e.g. ``data_root``, ``device``).
    :returns: ``{"dir", "md", "csv", "json", "cells": {(row, col): (mean, std, n)}}``.
    """
    if table_id not in TABLES:
        raise ValueError(f"unknown table {table_id!r}; choose from {list(TABLES)}")
    spec = TABLES[table_id]
    preset = spec.preset(preset_name, seeds)
    if preset_changes:
        preset = preset.replace(**dict(preset_changes))
    out_dir = Path(out_root) / table_id
    out_dir.mkdir(parents=True, exist_ok=True)
    command = command or default_command(table_id, preset_name, preset.seeds, out_root)
    if data is None:
        from avalanche_sst.experiments.sweep import load_dataset

        data = load_dataset(preset.dataset, preset.data_root)
    t0, c0 = time.perf_counter(), time.process_time()
    if spec.kind == "fig3":
        cells, sweeps, models = _run_fig3(spec, preset, out_dir, data, log)
    else:
        cells, sweeps, models = _run_sweeps(spec, preset, preset_name, out_dir, data, command, log)
    this = {"command": command, "wall_seconds": round(time.perf_counter() - t0, 1),
            # all threads of this process
            "cpu_seconds": round(time.process_time() - c0, 1), "threads": torch.get_num_threads()}
    invocations = _previous_invocations(out_dir / f"{table_id}.json") + [this]
    meta = {
        "table": table_id, "title": spec.title, "preset": preset_name, "preset_name": preset.name,
        "seeds": list(preset.seeds), "command": command, "dataset": preset.dataset, "models": models,
        "ratios": list(preset.ratios), "train_fraction": preset.train_fraction,
        "paper_setting": spec.paper_setting, "sweeps": sweeps,
        # a resumed table sums every invocation that wrote it (runs redone after a change included)
        "invocations": invocations,
        "wall_seconds": round(sum(i["wall_seconds"] for i in invocations), 1),
        "threads": this["threads"],
    }
    if all(i.get("cpu_seconds") is not None for i in invocations):
        meta["cpu_seconds"] = round(sum(i["cpu_seconds"] for i in invocations), 1)
    paths = write_table(spec, cells, meta, out_dir)
    return {**paths, "dir": out_dir, "cells": cells}


def _previous_invocations(meta_path: Path) -> list[dict]:
    """The timing of the invocations that wrote an earlier ``<table>.json`` (older files: one)."""
    if not meta_path.exists():
        return []
    prev = json.loads(meta_path.read_text())
    if "invocations" in prev:
        return list(prev["invocations"])
    if "wall_seconds" not in prev:
        return []
    return [{"command": prev.get("command"), "wall_seconds": prev["wall_seconds"],
             "cpu_seconds": prev.get("cpu_seconds"), "threads": prev.get("threads")}]


def _run_sweeps(spec, preset, preset_name, out_dir, data, command, log):
    from avalanche_sst.experiments.sweep import run_sweep

    per_run: dict[tuple, list[list[float]]] = {}  # (overrides, method) -> per-seed accuracies
    sweeps, models = [], {}
    for overrides, methods in _sweep_groups(spec, preset_name).items():
        sp = preset.replace(methods=methods, **dict(overrides))
        name = _sweep_dirname(overrides)
        sweeps.append(name)
        models[name] = sp.model
        results = run_sweep(sp, out_dir / name, data=data, log=log, command=command)
        for r in results:
            per_run.setdefault((overrides, r.method), []).append([100.0 * a for a in r.accuracies])
    cells = {}
    for c in spec.cells:
        runs = per_run[resolve_overrides(c, preset_name), c.method]
        values = [acc[c.step - 1] for acc in runs]
        cells[c.row, c.col] = (*mean_std(values), len(values))
    return cells, sweeps, models


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# --------------------------------------------------------------------------
# Fig. 3
# --------------------------------------------------------------------------

def _abs_gammas(model) -> torch.Tensor:
    from avalanche_sst.models import scaling_factors

    return torch.cat([f.bn.weight.detach().abs().flatten().cpu() for f in scaling_factors(model)])


def gamma_stats(abs_gamma: torch.Tensor, target_ratio: float, zero_tol: float) -> dict:
    """Mean |gamma| of all factors and of the non-useless ones (all but the Target_r smallest)."""
    from avalanche_sst.sparsity import num_selected

    values = torch.sort(abs_gamma.double()).values
    k = num_selected(target_ratio, len(values))
    return {
        "n": len(values),
        "mean_all": float(values.mean()),
        "mean_remaining": float(values[k:].mean()),
        "fraction_zero": float((values <= zero_tol).double().mean()),
    }


def _sst_args(preset: Preset) -> dict:
    from avalanche_sst.plugins.sst import DEFAULT_LAM, DEFAULT_ZERO_TOL
    from avalanche_sst.sparsity import DEFAULT_CUT_FRACTION, DEFAULT_TARGET_RATIO

    kw = preset.sst_kwargs or {}
    return dict(target_ratio=kw.get("target_ratio", DEFAULT_TARGET_RATIO), lam=kw.get("lam", DEFAULT_LAM),
                cut_fraction=kw.get("cut_fraction", DEFAULT_CUT_FRACTION),
                zero_tol=kw.get("zero_tol", DEFAULT_ZERO_TOL))


def _fig3_seed(preset: Preset, seed: int, data, seed_dir: Path, log) -> dict:
    from avalanche.training.templates import SupervisedTemplate

    from avalanche_sst.experiments.sweep import ACC_KEY, build_benchmark, build_model
    from avalanche_sst.metrics import make_evaluator
    from avalanche_sst.plugins.schedule import StepwiseCosinePlugin
    from avalanche_sst.plugins.sst import SSTPlugin

    device = torch.device(preset.device)
    bench = build_benchmark(preset, seed, data)
    exp = bench.train_stream[0]
    args = _sst_args(preset)

    def phase(model, name, lr, epochs, plugins):
        torch.manual_seed(seed * 1000 + 1)  # BST and SST see the same batches
        strategy = SupervisedTemplate(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=preset.momentum,
                                                   weight_decay=preset.weight_decay),
            criterion=torch.nn.CrossEntropyLoss(), train_mb_size=preset.batch_size, train_epochs=epochs,
            eval_mb_size=preset.eval_batch_size, device=device, evaluator=make_evaluator(seed_dir / name),
            plugins=[StepwiseCosinePlugin(lrs=(lr,), epochs=(epochs,)), *plugins], eval_every=-1,
        )
        t0 = time.perf_counter()
        strategy.train(exp, eval_streams=[])
        acc = float(strategy.eval(bench.test_stream)[ACC_KEY])
        for logger in getattr(strategy.evaluator, "loggers", []):
            if callable(getattr(logger, "close", None)):
                logger.close()
        return strategy.model, acc, time.perf_counter() - t0

    model = build_model(preset, bench, seed)
    pre, pre_acc, pre_s = phase(model, "pretrain", preset.lr_scratch, preset.epochs_scratch, [])
    out = {"Pre-trained": (pre, pre_acc, pre_s)}
    for name, selective in (("BST", False), ("SST", True)):
        plugin = SSTPlugin(selective=selective, log_prefix=name, **args)
        out[name] = phase(copy.deepcopy(pre), name.lower(), preset.lr_scratch, preset.sst_epochs, [plugin])
    result = {}
    for name, (m, acc, secs) in out.items():
        g = _abs_gammas(m)
        result[name] = {"top1": acc, "seconds": secs, "abs_gamma": g.tolist(),
                        **gamma_stats(g, args["target_ratio"], args["zero_tol"])}
        log(f"[fig3 seed {seed}] {name}: top-1 {100 * acc:.2f}%, mean |gamma| {result[name]['mean_all']:.4f}, "
            f"non-useless {result[name]['mean_remaining']:.4f}, at zero {100 * result[name]['fraction_zero']:.1f}%")
    return result


def _run_fig3(spec, preset, out_dir, data, log):
    (out_dir / "preset.json").write_text(json.dumps(preset.to_dict(), indent=2))
    if preset.num_threads:
        torch.set_num_threads(preset.num_threads)
    if preset.flush_denormal:
        torch.set_flush_denormal(True)
    per_seed = {}
    for seed in preset.seeds:
        seed_dir = out_dir / f"seed{seed}"
        done = seed_dir / "done.json"
        if done.exists():
            per_seed[seed] = json.loads(done.read_text())
            log(f"[fig3 seed {seed}] finished earlier")
            continue
        seed_dir.mkdir(parents=True, exist_ok=True)
        per_seed[seed] = _fig3_seed(preset, seed, data, seed_dir, log)
        done.write_text(json.dumps(per_seed[seed]))

    args = _sst_args(preset)
    runs = ["method,seed,step,top1,seconds"]
    stats = ["network,seed,n,top1,mean_all,mean_remaining,fraction_zero,target_ratio,zero_tol"]
    gammas = ["network,seed,abs_gamma"]
    for seed, res in per_seed.items():
        for name in FIG3_ROWS:
            r = res[name]
            runs.append(f"{name},{seed},1,{r['top1']:.6f},{r['seconds']:.1f}")
            stats.append(f"{name},{seed},{r['n']},{r['top1']:.6f},{r['mean_all']:.6f},{r['mean_remaining']:.6f},"
                         f"{r['fraction_zero']:.6f},{args['target_ratio']},{args['zero_tol']}")
            gammas += [f"{name},{seed},{v:.6g}" for v in r["abs_gamma"]]
    (out_dir / "runs.csv").write_text("\n".join(runs) + "\n")
    (out_dir / "fig3_means.csv").write_text("\n".join(stats) + "\n")
    (out_dir / "fig3_gammas.csv").write_text("\n".join(gammas) + "\n")

    cells = {}
    for name in FIG3_ROWS:
        for col, (key, scale) in FIG3_KEYS.items():
            values = [scale * res[name][key] for res in per_seed.values()]
            cells[name, col] = (*mean_std(values), len(values))
    _plot_fig3(per_seed, args["target_ratio"], out_dir / "fig3.png", title=f"{preset.dataset} / {preset.model}")
    return cells, ["."], {".": preset.model}


def _plot_fig3(per_seed: dict, target_ratio: float, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avalanche_sst.sparsity import num_selected

    colors = {"Pre-trained": "tab:blue", "BST": "tab:green", "SST": "tab:pink"}
    pooled, remaining = {}, {}
    for name in FIG3_ROWS:
        pooled[name] = [v for res in per_seed.values() for v in res[name]["abs_gamma"]]
        rem = []
        for res in per_seed.values():
            vals = sorted(res[name]["abs_gamma"])
            rem += vals[num_selected(target_ratio, len(vals)):]
        remaining[name] = rem
    top = max(max(v) for v in pooled.values()) or 1.0
    bins = [top * i / 40 for i in range(41)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].hist(pooled["Pre-trained"], bins=bins, color=colors["Pre-trained"], alpha=0.8, label="Pre-trained")
    axes[0].set_title("(a) pre-trained")
    for name in ("BST", "SST"):
        axes[1].hist(pooled[name], bins=bins, color=colors[name], alpha=0.55, label=name)
    axes[1].set_title("(b) after BST and SST")
    for name in FIG3_ROWS:
        axes[2].hist(remaining[name], bins=bins, color=colors[name], alpha=0.45, label=name)
        mean = statistics.fmean(remaining[name]) if remaining[name] else 0.0
        axes[2].axvline(mean, color=colors[name], linestyle="--", label=f"{name} mean {mean:.3f}")
    axes[2].set_title(f"(c) non-useless (all but the {target_ratio:g} smallest)")
    for ax in axes:
        ax.set_xlabel("|gamma|")
        ax.set_ylabel("factors")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------

def fmt_cell(mean: float, std: float, decimals: int = 2) -> str:
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


CELL_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*±\s*(\d+(?:\.\d+)?)\s*$")


def parse_cell(text: str) -> Optional[tuple[float, float]]:
    """``"61.35 ± 0.12"`` -> ``(61.35, 0.12)``; None for anything else."""
    m = CELL_RE.match(text or "")
    return (float(m.group(1)), float(m.group(2))) if m else None


def table_grid(spec: TableSpec, cells: Mapping) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) in the paper's layout, with the Gain(%) row/column if any."""
    header = [spec.corner, *spec.columns]
    decimals = dict(spec.decimals)
    body = []
    for row in spec.rows:
        line = [row]
        for col in spec.columns:
            v = cells.get((row, col))
            line.append(fmt_cell(v[0], v[1], decimals.get(col, 2)) if v else "")
        body.append(line)
    if spec.gain == "row":
        row = spec.rows[0]
        ref = cells[row, spec.columns[0]][0]
        body.append(["Gain(%)", "-"] + [f"{cells[row, c][0] - ref:.2f}" for c in spec.columns[1:]])
    elif spec.gain == "col":
        header.append("Gain(%)")
        a, b = spec.columns[0], spec.columns[1]
        for line, row in zip(body, spec.rows):
            line.append(f"{cells[row, b][0] - cells[row, a][0]:.2f}")
    return header, body


def markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines)


def write_table(spec: TableSpec, cells: Mapping, meta: dict, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    header, body = table_grid(spec, cells)
    with open(out_dir / f"{spec.id}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)
    seeds = meta["seeds"]
    n_min = min((v[2] for v in cells.values()), default=0)
    lines = [
        f"# {spec.id}: {spec.title}",
        "",
        f"Varies: {spec.varies}.",
        f"Paper: {spec.paper_source}, {spec.paper_setting}. Here: preset `{meta['preset']}` "
        f"({meta['dataset']}, model {_models_text(meta['models'])}, ratios {meta['ratios']}, "
        f"train fraction {meta['train_fraction']}).",
        f"Top-1 % on the whole test set unless the column says otherwise; mean ± std (sample std) over "
        f"seeds {seeds} ({n_min} run(s) per cell).",
        "",
        markdown(header, body),
        "",
    ]
    if spec.cells:
        lines.append("Cells: " + "; ".join(f"{c.row} / {c.col} = `{c.method}` after step {c.step}"
                                           + (f" ({', '.join(f'{k}={v}' for k, v in resolve_overrides(c, meta['preset']))})"
                                              if c.overrides else "")
                                           for c in spec.cells) + ".")
    lines += [f"Note: {n}" for n in spec.notes]
    lines += ["", f"Produced by `{meta['command']}` (seeds {seeds}); sweeps under {meta['sweeps']}."]
    (out_dir / f"{spec.id}.md").write_text("\n".join(lines) + "\n")
    meta = {**meta, "cells": [{"row": r, "col": c, "mean": m, "std": s, "n": n}
                              for (r, c), (m, s, n) in cells.items()]}
    (out_dir / f"{spec.id}.json").write_text(json.dumps(meta, indent=2))
    return {"md": out_dir / f"{spec.id}.md", "csv": out_dir / f"{spec.id}.csv", "json": out_dir / f"{spec.id}.json"}


def _models_text(models: Mapping) -> str:
    names = list(dict.fromkeys(models.values()))
    return ", ".join(names)


def read_table_csv(path: Path) -> tuple[list[str], dict[tuple[str, str], tuple[float, float]]]:
    """Our written ``<table>.csv`` -> (header, {(row, col): (mean, std)}) for the "mean ± std" cells."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, cells = rows[0], {}
    for line in rows[1:]:
        for col, text in zip(header[1:], line[1:]):
            v = parse_cell(text)
            if v is not None:
                cells[line[0], col] = v
    return header, cells


# --------------------------------------------------------------------------
# the paper's numbers and the ordering comparison
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperNumber:
    table: str
    setting: str
    row: str
    column: str
    value: float
    std: Optional[float]
    source: str


def load_paper_numbers(path: str | Path) -> list[PaperNumber]:
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.append(PaperNumber(r["table"], r["setting"], r["row"], r["column"], float(r["value"]),
                                   float(r["std"]) if r["std"] not in ("", None) else None, r["source"]))
    return out


def paper_cells(numbers: Iterable[PaperNumber], spec: TableSpec) -> dict[tuple[str, str], PaperNumber]:
    table = spec.paper_source.split(",")[0].strip()
    return {(p.row, p.column): p for p in numbers if p.table == table and p.setting == spec.paper_setting}


@dataclass
class Ordering:
    pairs: int = 0  # pairs compared (the paper orders them strictly)
    agree: int = 0
    flipped: list = field(default_factory=list)  # (hi, lo, paper_hi, paper_lo, ours_hi, ours_lo, p or None)
    tied: list = field(default_factory=list)  # ours equal where the paper orders them
    best_paper: list = field(default_factory=list)  # per group: (paper's best, our best)
    # With a significance test: pairs whose difference of our means is significant at ALPHA.
    with_test: bool = False
    agree_significant: int = 0
    flipped_significant: int = 0


#: Two-sided level at which a difference of our means counts as beyond seed noise.
ALPHA = 0.05


def compare_orderings(ours: Mapping, paper: Mapping, groups: Optional[Sequence[Sequence]] = None,
                      p_value: Optional[Callable[[object, object], float]] = None) -> Ordering:
    """Compare the ranking of ``ours`` and ``paper`` (key -> value) within each group of keys.

    For every pair of keys in a group that both have values and that the paper
    orders strictly (equal paper values are skipped), the pair agrees when ours
    orders it the same way; otherwise it is flipped (or tied when our values
    are equal). ``groups`` defaults to one group of all keys. With ``p_value``
    (two keys -> p-value of the difference of our means, e.g. from
    :func:`seed_test`), a pair also counts as significant when p < ALPHA.
    """
    groups = [list(ours)] if groups is None else [list(g) for g in groups]
    res = Ordering(with_test=p_value is not None)
    for group in groups:
        keys = [k for k in group if k in ours and k in paper]
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                if paper[a] == paper[b]:
                    continue
                hi, lo = (a, b) if paper[a] > paper[b] else (b, a)
                res.pairs += 1
                p = p_value(hi, lo) if p_value is not None else None
                significant = p is not None and p < ALPHA  # nan (no spread) is False
                if ours[hi] > ours[lo]:
                    res.agree += 1
                    res.agree_significant += significant
                elif ours[hi] == ours[lo]:
                    res.tied.append((hi, lo, paper[hi], paper[lo], ours[hi], ours[lo], p))
                else:
                    res.flipped.append((hi, lo, paper[hi], paper[lo], ours[hi], ours[lo], p))
                    res.flipped_significant += significant
        if keys and len({paper[k] for k in keys}) > 1:
            best_p = max(keys, key=lambda k: paper[k])
            best_o = max(keys, key=lambda k: ours[k])
            unique = sum(ours[k] == ours[best_o] for k in keys) == 1
            res.best_paper.append((best_p, best_o if unique else None))
    return res


def _label(key) -> str:
    if isinstance(key, tuple):
        return " / ".join(str(k) for k in key)
    return str(key)


def pair_label(hi, lo) -> str:
    """``("Step 4", "A"), ("Step 4", "B")`` -> ``"Step 4: A vs B"``; other keys joined with " / "."""
    if isinstance(hi, tuple) and isinstance(lo, tuple) and len(hi) == len(lo) == 2 and hi[0] == lo[0]:
        return f"{hi[0]}: {hi[1]} vs {lo[1]}"
    return f"{_label(hi)} vs {_label(lo)}"


def ordering_sentence(res: Ordering, max_listed: int = 4, paper_values: bool = True) -> str:
    """One sentence saying whether the paper's ordering held, naming the flipped (and tied) pairs."""
    if res.pairs == 0:
        return "No pair of cells is ordered by the paper and present in ours, so no ordering is compared."
    best_same = sum(p == o for p, o in res.best_paper)
    best = (f"; the paper's best cell is also our (strictly) best in {best_same} of {len(res.best_paper)} "
            f"group(s)" if res.best_paper else "")
    if res.with_test:
        best += (f"; significant at {ALPHA:g} over the seeds: {res.agree_significant} of the {res.agree} "
                 f"agreeing and {res.flipped_significant} of the {len(res.flipped)} flipped pair(s)")
    if res.agree == res.pairs:
        return f"The paper's ordering held: all {res.pairs} compared pair(s) are in the same order{best}."

    def pair_text(t):
        hi, lo, p_hi, p_lo, o_hi, o_lo, p = t
        paper = f"paper {p_hi:g} > {p_lo:g}" if paper_values else "higher in the paper"
        test = f", p = {p:.2g}" if p is not None and p == p else ""
        return f"{pair_label(hi, lo)} ({paper}, ours {o_hi:.4g} {'=' if o_hi == o_lo else '<'} {o_lo:.4g}{test})"

    # the most certain flips first; untested or untestable (nan) ones keep their order after them
    flips = sorted(res.flipped + res.tied, key=lambda t: t[6] if t[6] is not None and t[6] == t[6] else 2.0)
    listed = [pair_text(t) for t in flips[:max_listed]]
    more = len(flips) - len(listed)
    kinds = " and ".join(k for k, n in (("flipped", len(res.flipped)), ("tied", len(res.tied))) if n)
    return (f"The paper's ordering held in {res.agree} of {res.pairs} compared pair(s); "
            f"{kinds}: {', '.join(listed)}{f' and {more} more' if more > 0 else ''}{best}.")


def order_groups(spec: TableSpec, keys: Iterable[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    keys = list(keys)
    if spec.order == "all":
        return [keys]
    return [[k for k in keys if k[0] == row] for row in spec.rows]


def seed_test(stats: Mapping, per_seed: Optional[Mapping] = None) -> Optional[Callable[[object, object], float]]:
    """A two-sided p-value for the difference of two cells' means over seeds, or None without spreads.

    Cells that share seeds (every method of a sweep uses the same split and initialisation for a
    seed) get a paired t-test on the per-seed values ``per_seed[cell][seed]``; otherwise Welch's
    t-test from ``stats[cell] = (mean, std, n)``. Needs ``n >= 2``; no spread at all gives nan.
    """
    from scipy import stats as st

    per_seed = per_seed or {}
    if not all(isinstance(v, tuple) and len(v) > 2 and v[2] >= 2 for v in stats.values()):
        return None

    def p_value(a, b) -> float:
        va, vb = per_seed.get(a, {}), per_seed.get(b, {})
        common = sorted(set(va) & set(vb))
        if len(common) >= 2:
            diffs = [va[s] - vb[s] for s in common]
            if all(d == diffs[0] for d in diffs):
                return 0.0 if diffs[0] else float("nan")  # a constant, non-zero difference is certain
            return float(st.ttest_rel([va[s] for s in common], [vb[s] for s in common]).pvalue)
        (ma, sa, na), (mb, sb, nb) = stats[a][:3], stats[b][:3]
        if sa == sb == 0:
            return 0.0 if ma != mb else float("nan")
        return float(st.ttest_ind_from_stats(ma, sa, na, mb, sb, nb, equal_var=False).pvalue)

    return p_value


def table_ordering(spec: TableSpec, ours: Mapping, numbers: Iterable[PaperNumber],
                   per_seed: Optional[Mapping] = None) -> tuple[Ordering, str]:
    """The ordering comparison of one table: our cells vs the paper's numbers (or stated claims).

    ``ours`` maps cells to means or to ``(mean, std, n)``; with the latter each pair is also tested
    against seed noise (:func:`seed_test`, paired where ``per_seed`` has the cells' per-seed values).
    """
    p_value = seed_test(ours, per_seed)
    ours = {k: (v[0] if isinstance(v, tuple) else float(v)) for k, v in ours.items()}  # means
    if spec.paper_claims:
        paper, ours_sub, groups = {}, {}, []
        for hi, lo, _quote in spec.paper_claims:
            paper[hi], paper[lo] = 1.0, 0.0
            groups.append([hi, lo])
        for k in paper:
            if k in ours:
                ours_sub[k] = ours[k]
        res = compare_orderings(ours_sub, paper, groups, p_value)
        return res, ordering_sentence(res, paper_values=False)
    pc = paper_cells(numbers, spec)
    paper = {k: v.value for k, v in pc.items()}
    ours_acc = {k: v for k, v in ours.items() if k[0] in spec.rows and k[1] in spec.columns}
    res = compare_orderings(ours_acc, paper, order_groups(spec, ours_acc), p_value)
    return res, ordering_sentence(res)


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------

def read_runs_csv(path: str | Path) -> list[dict]:
    """Rows of a sweep's ``runs.csv`` (method, seed, step, top1, seconds).

    Parsed from the right, so a method-variant name holding commas
    (``sst:sparsity=bst,use_msl=False``) survives whether or not the writer quoted it.
    """
    out = []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    for r in rows[1:]:
        if len(r) < 5:
            continue
        out.append({"method": ",".join(r[:-4]), "seed": int(r[-4]), "step": int(r[-3]),
                    "top1": float(r[-2]), "seconds": float(r[-1])})
    return out


def cpu_seconds(table_dir: Path) -> float:
    """Sum of the runs' seconds over every ``runs.csv`` under ``table_dir`` (one value per run)."""
    total = 0.0
    for path in sorted(Path(table_dir).rglob("runs.csv")):
        total += sum({(r["method"], r["seed"]): r["seconds"] for r in read_runs_csv(path)}.values())
    return total


def our_cells(spec: TableSpec, table_dir: Path) -> dict[tuple[str, str], tuple]:
    """Our cells as ``(mean, std, n)`` at full precision from ``<table>.json``, else ``(mean, std)`` from the CSV."""
    meta_path = Path(table_dir) / f"{spec.id}.json"
    if meta_path.exists():
        cells = json.loads(meta_path.read_text()).get("cells")
        if cells:
            return {(c["row"], c["col"]): (c["mean"], c["std"], c["n"]) for c in cells}
    return read_table_csv(Path(table_dir) / f"{spec.id}.csv")[1]


def seed_values(spec: TableSpec, table_dir: Path, preset_name: str) -> dict[tuple[str, str], dict[int, float]]:
    """Each cell's value per seed, read back from the runs' CSVs: ``{(row, col): {seed: value}}``."""
    table_dir = Path(table_dir)
    out: dict[tuple[str, str], dict[int, float]] = {}
    if spec.kind == "fig3":
        path = table_dir / "fig3_means.csv"
        if not path.exists():
            return out
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                for col, (key, scale) in FIG3_KEYS.items():
                    out.setdefault((r["network"], col), {})[int(r["seed"])] = scale * float(r[key])
        return out
    runs: dict[str, list[dict]] = {}
    for c in spec.cells:
        name = _sweep_dirname(resolve_overrides(c, preset_name))
        if name not in runs:
            path = table_dir / name / "runs.csv"
            runs[name] = read_runs_csv(path) if path.exists() else []
        for r in runs[name]:
            if r["method"] == c.method and r["step"] == c.step:
                out.setdefault((c.row, c.col), {})[r["seed"]] = 100.0 * r["top1"]
    return out


def _time_text(meta: Mapping, table_dir: Path) -> str:
    """The table's time: its command's wall clock and process CPU time when recorded, else the runs' sum."""
    parts = []
    if "wall_seconds" in meta:
        threads = meta.get("threads")
        n = len(meta.get("invocations", ()))
        parts.append(f"wall time {meta['wall_seconds']:.0f} s" + (f" on {threads} thread(s)" if threads else "")
                     + (f" over {n} invocations" if n > 1 else ""))
    if "cpu_seconds" in meta:
        parts.append(f"process CPU time {meta['cpu_seconds']:.0f} s")
    runs = cpu_seconds(table_dir)
    if runs:
        parts.append(f"sum of the runs' own seconds {runs:.0f} s")
    return "; ".join(parts) or "time not recorded"


def archive_tables(results_root: str | Path, dest: str | Path) -> list[Path]:
    """Copy each finished table's generated files (not its checkpoints or TensorBoard logs) to ``dest``.

    Per table: ``<table>.md/.csv/.json`` and figures; per sweep: its ``table.*``, ``runs.csv``,
    ``preset.json`` and ``accuracy.png``. Returns the copied paths.
    """
    results_root, dest = Path(results_root), Path(dest)
    keep_sweep = {"table.md", "table.csv", "runs.csv", "preset.json", "accuracy.png"}
    copied = []
    for table_id in TABLES:
        src = results_root / table_id
        if not (src / f"{table_id}.csv").exists():
            continue
        files = [f for f in src.iterdir() if f.is_file() and f.suffix in {".md", ".csv", ".json", ".png"}]
        files += [f for d in sorted(src.glob("sweep*")) if d.is_dir() for f in d.iterdir() if f.name in keep_sweep]
        for f in sorted(files):
            target = dest / f.relative_to(results_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
            copied.append(target)
    return copied


def _csv_markdown(path: Path) -> str:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return markdown(rows[0], rows[1:])


def _paper_markdown(spec: TableSpec, pc: Mapping[tuple[str, str], PaperNumber]) -> Optional[str]:
    if not pc:
        return None
    rows = [r for r in dict.fromkeys(k[0] for k in pc)]
    cols = [c for c in dict.fromkeys(k[1] for k in pc)]
    body = []
    for r in rows:
        line = [r]
        for c in cols:
            p = pc.get((r, c))
            line.append("" if p is None else (f"{p.value:.2f} ± {p.std:.2f}" if p.std is not None else f"{p.value:g}"))
        body.append(line)
    return markdown([spec.corner, *cols], body)


def write_report(results_root: str | Path = "results/paper", paper_csv: str | Path = "docs/paper_numbers.csv",
                 out: str | Path = "docs/results.md", preset_name: str = "cpu",
                 figures_root: str | Path | None = None) -> str:
    """Generate ``docs/results.md`` from the written tables and the paper's numbers.

    :param figures_root: where the tables' PNGs are linked from (e.g. the :func:`archive_tables`
        copy next to the report); default ``results_root``.
    """
    results_root, out = Path(results_root), Path(out)
    figures_root = Path(figures_root) if figures_root is not None else results_root
    numbers = load_paper_numbers(paper_csv)
    header_lines = [
        "# Results: the paper's tables, reproduced in kind",
        "",
        "Generated by `python experiments/report.py` from "
        f"`{results_root}/<table>/<table>.csv` and `{paper_csv}`; do not edit by hand.",
        "Our numbers: Top-1 % on the whole test set, mean ± std (sample std) over the seeds named. "
        "Times: the table command's wall clock and process CPU time (when recorded), summed over the "
        "invocations that wrote the table, and the sum of the runs' own seconds in their `runs.csv` "
        "(what reproducing the table costs; runs redone after a change count once). "
        "The paper's numbers are its own (Lee & Kim 2023), on its datasets and networks; "
        "compare orderings, not values. A pair counts as significant when a paired t-test over the "
        f"seeds gives p < {ALPHA:g} (Welch's test where the cells share no seeds).",
        "",
    ]
    summary = ["| Table | Pairs in the paper's order | Significant: agreeing / flipped | "
               "Paper's best is our best | Wall s | Process CPU s | Runs' own s |", "|---|---|---|---|---|---|---|"]
    sections = []
    for table_id, spec in TABLES.items():
        lines = sections
        lines += [f"## {table_id}: {spec.title}", ""]
        csv_path = results_root / table_id / f"{table_id}.csv"
        meta_path = results_root / table_id / f"{table_id}.json"
        pc = paper_cells(numbers, spec)
        if not csv_path.exists():
            lines += ["Not run yet. Run:", "", "```",
                      default_command(table_id, preset_name, spec.preset(preset_name).seeds, results_root),
                      "```", ""]
            continue
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        ours = our_cells(spec, csv_path.parent)
        lines += [
            f"Ours (preset `{meta.get('preset', '?')}`: {meta.get('dataset', '?')}, "
            f"{_models_text(meta.get('models', {}))}, ratios {meta.get('ratios', '?')}, "
            f"seeds {meta.get('seeds', '?')}):",
            "",
            _csv_markdown(csv_path),
            "",
        ]
        paper_md = _paper_markdown(spec, pc)
        if paper_md:
            lines += [f"Paper ({spec.paper_source}, {spec.paper_setting}):", "", paper_md, ""]
        else:
            claims = "; ".join(q for _, _, q in spec.paper_claims)
            lines += [f"Paper ({spec.paper_source}, {spec.paper_setting}): no numbers given. {claims}.", ""]
        per_seed = seed_values(spec, csv_path.parent, meta.get("preset", preset_name))
        res, sentence = table_ordering(spec, ours, numbers, per_seed)
        best = f"{sum(p == o for p, o in res.best_paper)} of {len(res.best_paper)}" if res.best_paper else "-"
        cpu = f"{meta['cpu_seconds']:.0f}" if "cpu_seconds" in meta else "not recorded"
        summary.append(f"| {table_id} | {res.agree} of {res.pairs} | {res.agree_significant} / "
                       f"{res.flipped_significant} | {best} | {meta.get('wall_seconds', float('nan')):.0f} | {cpu} | "
                       f"{cpu_seconds(csv_path.parent):.0f} |")
        lines += [
            f"Command: `{meta.get('command', '?')}`; seeds {meta.get('seeds', '?')}; {_time_text(meta, csv_path.parent)}.",
            "",
            f"Ordering: {sentence}",
            "",
        ]
        figures = sorted((figures_root / table_id).rglob("*.png"))
        if figures:
            links = ", ".join(f"[{f.relative_to(figures_root / table_id).as_posix()}]"
                              f"({Path(os.path.relpath(f, out.parent)).as_posix()})" for f in figures)
            lines += [f"Figures: {links}.", ""]
    if len(summary) > 2:
        lines = header_lines + ["## Summary", ""] + summary + [""] + sections
    else:
        lines = header_lines + sections
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
