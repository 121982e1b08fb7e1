"""The CPU-time estimate of a paper table (``paper_tables.py --list``), from a measured throughput.

Each run costs training-sample equivalents of a ResNet-8 (:func:`_method_units`,
per method of the sweep, with the relative costs below), scaled by the depth
and width of its CIFAR ResNet-(6n+2) and divided by ``RESNET8_SAMPLES_PER_S``.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from avalanche_sst.experiments.paper.specs import TABLES, sweep_groups
from avalanche_sst.experiments.presets import Preset

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
    if kw.get("budget") == "sst":  # a baseline given the framework's cost, step by step
        return _method_units("sst", preset, parts, valid, test)
    base = "sst" if base == "sst_plus" else base  # the same phases, other options
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
        for overrides, methods in sweep_groups(spec, preset_name).items():
            model = dict(overrides).get("model", preset.model)
            f = _depth_factor(model)
            if f is None:
                return None
            units += f * sum(_method_units(m, preset, parts, valid, test) for m in methods)
    return units * len(preset.seeds) / RESNET8_SAMPLES_PER_S
