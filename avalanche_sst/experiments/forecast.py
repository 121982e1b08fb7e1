"""What a preset's full runs cost: sample-passes from the preset, seconds from a preflight.

Sample-passes (the unit of :mod:`avalanche_sst.metrics.cost`: forward +
backward of one training sample = 1, a forward alone = 1/3) of one full run
come from the preset and the real step sizes (:func:`run_sample_passes`):
exactly as the run's ``CostMeter`` counts them for the framework
(:func:`~avalanche_sst.experiments.budget.framework_step_costs`), fine-tuning,
LwF, EWC and Cumulative; for the other methods from the relative costs of
:mod:`avalanche_sst.experiments.paper.cost` (``_method_units`` without its
evaluation term), an estimate.

Seconds per sample-pass and peak memory are measured by the preflight on the
device it ran on; the projection multiplies. The H100 column is not measured:
:func:`h100_seconds_per_sample_pass` derives it from the model's FLOPs (counted
by ``torch.utils.flop_counter``) at a stated utilisation of the H100 SXM's
dense TF32 peak, with a floor of a CUDA kernel launch per operator, because
small CIFAR ResNets are launch-bound rather than FLOP-bound.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.provenance import code_text
from avalanche_sst.metrics.cost import FORWARD_COST, TRAIN_COST

#: NVIDIA H100 SXM5 datasheet: 989 TFLOPS TF32 Tensor Core *with sparsity*, so 494.7 dense.
H100_TF32_DENSE_FLOPS = 494.7e12
#: Assumed fraction of that peak eager PyTorch reaches on these convnets (not measured here).
H100_UTILISATION = 0.25
#: Assumed seconds per operator launch on a CUDA GPU in eager mode (not measured here).
LAUNCH_SECONDS = 5e-6
SECONDS_PER_HOUR = 3600.0


def _epochs_per_step(preset: Preset, n_steps: int) -> list[int]:
    return [preset.epochs_scratch] + [preset.epochs_finetune] * (n_steps - 1)


def run_sample_passes(method: str, preset: Preset, train_sizes: Sequence[int],
                      valid_sizes: Optional[Sequence[int]] = None) -> tuple[float, bool]:
    """``(sample-passes of one run, exact)``: ``exact`` when the CostMeter's own rules give it."""
    from avalanche_sst.experiments.budget import COST_ARGUMENTS, framework_step_costs
    from avalanche_sst.experiments.methods import parse_variant
    from avalanche_sst.experiments.paper.cost import _method_units

    base, kwargs = parse_variant(method)
    train = [int(n) for n in train_sizes]
    valid = [int(v) for v in valid_sizes] if valid_sizes is not None else [0] * len(train)
    if base in ("sst", "sst_plus") or kwargs.get("budget") == "sst":
        framework = dict(epochs_scratch=preset.epochs_scratch, epochs_sst=preset.sst_epochs,
                         epochs_aod=preset.aod_epochs)
        own = {**preset.sst_kwargs, **(kwargs if base in ("sst", "sst_plus") else {})}
        framework.update({k: own[k] for k in COST_ARGUMENTS if k in own})
        return float(sum(framework_step_costs(train, valid, **framework))), True
    if kwargs.get("epochs") is None and base in ("finetune", "lwf", "ewc", "cumulative"):
        total = 0.0
        for k, epochs in enumerate(_epochs_per_step(preset, len(train))):
            n = sum(train[: k + 1]) if base == "cumulative" else train[k]
            per_sample = TRAIN_COST + (FORWARD_COST if base == "lwf" and k > 0 else 0.0)
            total += epochs * n * per_sample + (n * TRAIN_COST if base == "ewc" else 0.0)
        return total, True
    return float(_method_units(method, preset, train, valid, 0.0)), False


def step_sizes(bench) -> tuple[list[int], Optional[list[int]]]:
    """Training and validation samples of each step of a benchmark (``sweep.build_benchmark``)."""
    valid = getattr(bench, "valid_stream", None)
    return [len(e.dataset) for e in bench.train_stream], (None if valid is None else [len(e.dataset) for e in valid])


def model_flops_and_ops(model: torch.nn.Module, image_shape: Sequence[int], batch: int = 2) -> tuple[float, int]:
    """``(FLOPs of one training pass per sample, operators per training iteration)`` on the CPU."""
    from avalanche.models import MultiTaskModule
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class _Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            _Count.ops += 1
            return func(*args, **(kwargs or {}))

    model = model.train()
    x = torch.randn(batch, *image_shape)
    counter = FlopCounterMode(display=False)
    with counter, _Count():
        # Avalanche's multi-task models take the task labels too
        out = model(x, torch.zeros(batch, dtype=torch.long)) if isinstance(model, MultiTaskModule) else model(x)
        out = out if isinstance(out, torch.Tensor) else out[0]
        out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch, _Count.ops


def h100_seconds_per_sample_pass(flops_per_sample: float, ops_per_iteration: int, batch: int) -> float:
    """Seconds of one sample-pass on an H100: FLOPs at ``H100_UTILISATION`` of dense TF32, or the
    launch floor of ``ops_per_iteration`` operators shared by ``batch`` samples, whichever is longer."""
    compute = flops_per_sample / (H100_TF32_DENSE_FLOPS * H100_UTILISATION)
    launch = ops_per_iteration * LAUNCH_SECONDS / max(batch, 1)
    return max(compute, launch)


def forecast_rows(results: list, full_passes: dict, h100_seconds: dict, seeds: dict) -> list[dict]:
    """One row per run of the full tables: sample-passes (all seeds), measured s/pass, projections.

    ``full_passes[(table, sweep, method)] = (passes per seed, exact)``; ``h100_seconds[(table, sweep)]``;
    ``seeds[table]``: the number of seeds of the full table. ``results``: the preflight's; a run
    without a passed preflight has no measured columns.
    """
    measured_runs = {(r.table, r.sweep, r.method): r for r in results if r.ok}
    rows = []
    for (table, sweep, method), (passes, exact) in full_passes.items():
        r = measured_runs.get((table, sweep, method))
        passes *= seeds[table]
        measured = None if r is None else r.seconds_per_sample_pass
        h100 = h100_seconds.get((table, sweep))
        rows.append({"table": table, "sweep": sweep, "method": method, "seeds": seeds[table],
                     "sample_passes": passes, "exact": exact,
                     "measured_s_per_pass": measured, "batch": None if r is None else r.batch_size,
                     "peak_memory_mb": None if r is None else r.peak_memory_mb,
                     "projected_hours_here": None if measured is None else passes * measured / SECONDS_PER_HOUR,
                     "h100_hours": None if h100 is None else passes * h100 / SECONDS_PER_HOUR,
                     "data_label": "" if r is None else r.data_label})
    return rows


def table_totals(rows: list[dict], workers: int = 1, gpus_per_run: float = 1.0) -> dict:
    """Per table: device-hours (sum over runs x ``gpus_per_run``) and wall hours with ``workers`` runs at once.

    Wall time assumes the runs pack perfectly onto ``workers`` slots (a lower bound when run lengths differ).
    """
    if workers < 1 or gpus_per_run <= 0:
        raise ValueError(f"workers must be >= 1 and gpus_per_run > 0, got {workers}, {gpus_per_run}")
    totals: dict[str, dict] = {}
    for row in rows:
        t = totals.setdefault(row["table"], {"runs": 0, "measured": 0, "hours_here": 0.0, "h100_hours": 0.0,
                                             "longest_h100": 0.0})
        t["runs"] += 1
        t["measured"] += row["projected_hours_here"] is not None
        t["hours_here"] += row["projected_hours_here"] or 0.0
        t["h100_hours"] += row["h100_hours"] or 0.0
        t["longest_h100"] = max(t["longest_h100"], (row["h100_hours"] or 0.0) / row["seeds"])
    for t in totals.values():
        t["h100_gpu_hours"] = t["h100_hours"] * gpus_per_run
        t["h100_wall_hours"] = max(t["h100_hours"] / workers, t["longest_h100"])
        # only where every run of the table was measured
        t["wall_hours_here"] = t["hours_here"] / workers if t["measured"] == t["runs"] else None
    return totals


def forecast_markdown(rows: list[dict], totals: dict, device: str, workers: int, gpus_per_run: float,
                      command: str) -> str:
    """The forecast as Markdown: one row per run, then one per table."""
    label = next((r["data_label"] for r in rows if r["data_label"]), "")
    lines = [f"Preflight forecast, measured on `{device}`{' with ' + label if label else ''} "
             "(`-`: not measured).",
             f"Command: `{command}`; code: {code_text()}.", "",
             f"H100 column: FLOPs at {H100_UTILISATION:.0%} of the H100 SXM's dense TF32 peak "
             f"({H100_TF32_DENSE_FLOPS / 1e12:.1f} TFLOPS, NVIDIA datasheet), floored by {LAUNCH_SECONDS * 1e6:.0f} us "
             "per operator launch; assumed, not measured. Sample-passes marked `~` use the estimated relative costs "
             "of paper/cost.py; the others are exact by the CostMeter's rules.", "",
             f"| table | sweep | method | seeds | sample-passes | s/pass measured (batch) | peak MB | "
             f"hours on {device} | H100 GPU-hours |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        meas = "-" if r["measured_s_per_pass"] is None else f"{r['measured_s_per_pass']:.2e} ({r['batch']})"
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        here = "-" if r["projected_hours_here"] is None else f"{r['projected_hours_here']:.1f}"
        h100 = "-" if r["h100_hours"] is None else f"{r['h100_hours']:.2f}"
        lines.append(f"| {r['table']} | {r['sweep']} | `{r['method']}` | {r['seeds']} | "
                     f"{'' if r['exact'] else '~'}{r['sample_passes']:.3g} | {meas} | {peak} | "
                     f"{here} | {h100} |")
    lines += ["", f"Per table, with --workers {workers} and --gpus-per-run {gpus_per_run:g}:", "",
              f"| table | runs | hours on {device} (wall) | H100 GPU-hours | H100 wall hours |",
              "|---|---|---|---|---|"]
    for table, t in totals.items():
        here = "-" if t["wall_hours_here"] is None else f"{t['wall_hours_here']:.1f}"
        lines.append(f"| {table} | {t['runs']} | {here} | {t['h100_gpu_hours']:.1f} | "
                     f"{t['h100_wall_hours']:.1f} |")
    return "\n".join(lines) + "\n"
