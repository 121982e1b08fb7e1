"""Result tables and plots, generated only from the runs' own numbers.

``table.md`` / ``table.csv``: the setting's primary score (e.g. Top-1 on the
whole test set for same-class data, on the classes seen so far for
class-incremental runs; the header names it) after each step, mean ± std over
seeds (sample std, ddof=1; "±0.00" with one seed), with the command and seeds
that produced them, and every other score of the setting after the last step.
``runs.csv``: every run's raw numbers. ``accuracy.png``: the primary score
per step per method.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence


def machine_description(include_threads: bool = True) -> str:
    """CPU model, cores, torch version and (``include_threads``) this process's torch threads: where a
    timing was taken. A sweep leaves the threads out: its runs set their own (``threads_per_run``)."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    text = f"{cpu}, {os.cpu_count()} cores, {device}, torch {torch.__version__}"
    return text + (f", {torch.get_num_threads()} threads" if include_threads else "")


def executor_text(workers: Optional[int], threads_per_run: Optional[int]) -> str:
    """How a sweep's runs shared the machine, for its footer: ``", 2 runs at a time, 1 torch thread each"``."""
    parts = []
    if workers:
        parts.append(f"{workers} run{'s' if workers > 1 else ''} at a time")
    if threads_per_run:
        parts.append(f"{threads_per_run} torch thread{'s' if threads_per_run > 1 else ''} each")
    return "".join(f", {p}" for p in parts)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0.0 for a single value): every table's "mean ± std" cell.
    NaN for both where a run diverged (experiments.divergence; statistics.stdev cannot take a NaN)."""
    values = list(values)
    mean = statistics.fmean(values)
    if math.isnan(mean):
        return math.nan, math.nan
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarize(results) -> dict[str, list[tuple[float, float]]]:
    """method -> [(mean %, std %) per step] over seeds, in first-seen method order."""
    by_method: dict[str, list[list[float]]] = defaultdict(list)
    for r in results:
        by_method[r.method].append([100.0 * a for a in r.accuracies])
    summary = {}
    for method, runs in by_method.items():
        steps = min(len(r) for r in runs)
        summary[method] = [mean_std([r[s] for r in runs]) for s in range(steps)]
    return summary


def _cost(result, step: int) -> str:
    return f"{result.costs[step]:.1f}" if step < len(getattr(result, "costs", [])) else ""


#: runs.csv's columns after "cost": bytes kept beyond the model after the step (metrics.memory), FLOPs per
#: image of the evaluated model (metrics.inference), the code's commit and dirty flag (experiments.provenance).
RUN_RECORD_COLUMNS = ("memory_bytes", "inference_flops", "git_commit", "git_dirty")


def _provenance_cells(result, step: int) -> list[str]:
    memory, flops = getattr(result, "memory", []), getattr(result, "inference", [])
    provenance = getattr(result, "provenance", {}) or {}
    commit, dirty = provenance.get("git_commit"), provenance.get("git_dirty")
    return [f"{memory[step]:.0f}" if step < len(memory) else "", f"{flops[step]:.0f}" if step < len(flops) else "",
            commit or "", "" if dirty is None else str(dirty)]


def cost_summary(results) -> dict[str, list[float]]:
    """method -> mean training cost (sample-passes) per step, for runs that recorded it."""
    by_method: dict[str, list[list[float]]] = defaultdict(list)
    for r in results:
        if getattr(r, "costs", None):
            by_method[r.method].append(r.costs)
    return {m: [statistics.fmean(c[s] for c in runs) for s in range(min(map(len, runs)))]
            for m, runs in by_method.items()}


def mean_std_text(mean: float, std: float, decimals: int = 2) -> str:
    """``"61.35 ± 0.12"``; "diverged" where a run diverged (NaN scores, experiments.divergence)."""
    return "diverged" if math.isnan(mean) else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def markdown_table(summary: dict[str, list[tuple[float, float]]]) -> str:
    steps = max(len(v) for v in summary.values())
    header = "| method | " + " | ".join(f"step {s + 1}" for s in range(steps)) + " |"
    lines = [header, "|---" * (steps + 1) + "|"]
    for method, cells in summary.items():
        lines.append(f"| {method} | " + " | ".join(mean_std_text(m, s) for m, s in cells) + " |")
    return "\n".join(lines)


def setting_scores(preset):
    """The scores (:class:`~avalanche_sst.metrics.scores.SettingScores`) of the preset's setting."""
    from avalanche_sst.experiments.scenarios import get_scenario
    from avalanche_sst.metrics.scores import SETTING_SCORES

    return SETTING_SCORES[get_scenario(getattr(preset, "scenario", "same_class")).setting]


def scenario_text(preset) -> str:
    """``ratios [...]`` for same-class data, else the scenario and its arguments."""
    scenario = getattr(preset, "scenario", "same_class")
    if scenario == "same_class":
        return f"ratios {list(preset.ratios)}"
    args = ", ".join(f"{k}={v}" for k, v in getattr(preset, "scenario_kwargs", {}).items())
    return f"scenario {scenario}" + (f" ({args})" if args else "")


def final_scores_table(results, names: Sequence[str]) -> str:
    """Every score of the setting after the last step, mean ± std (%) over seeds."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if r.scores:
            by_method[r.method].append(r.scores[-1])
    lines = ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method, finals in by_method.items():
        cells = [mean_std([100.0 * f[n] for f in finals]) for n in names]
        lines.append(f"| {method} | " + " | ".join(mean_std_text(m, s) for m, s in cells) + " |")
    return "\n".join(lines)


def write_tables(results, out: Path, preset, command: Optional[str] = None, wall_seconds: float = 0.0,
                 threads_per_run: Optional[int] = None, workers: Optional[int] = None) -> None:
    out = Path(out)
    summary = summarize(results)
    seeds = sorted({r.seed for r in results})
    setting = setting_scores(preset)
    scored_on = "" if getattr(preset, "evaluate_on", "test") == "test" else \
        " Scored on the VALIDATION slices (evaluate_on=valid), not the test set."
    lines = [
        f"{setting.description} after each step, mean ± std over seeds {seeds}.{scored_on}",
        f"Preset `{preset.name}`: {preset.dataset}, {preset.model}, {scenario_text(preset)}, "
        f"train fraction {preset.train_fraction}, test fraction {preset.test_fraction}.",
        "",
        markdown_table(summary),
        "",
    ]
    costs = cost_summary(results)
    if costs:
        lines += ["Training cost per step (thousand sample-passes: one forward and backward of one sample is 1, "
                  "a teacher's forward 1/3; mean over seeds):", "",
                  markdown_table({m: [(c / 1000, 0.0) for c in cs] for m, cs in costs.items()}).replace(" ± 0.00", ""),
                  ""]
    if len(setting.names) > 1:
        lines += [f"Scores after the last step (%; {setting.primary} is the table above):", "",
                  final_scores_table(results, setting.names), ""]
    if command:
        from avalanche_sst.experiments.versions import (SAME_CPU_PATH_NOTE, cpu_path, cpu_path_text,
                                                        environment_versions, versions_text)
        from avalanche_sst.experiments.provenance import provenance_text

        lines.append(f"Produced by `{command}` in {wall_seconds:.0f} s of wall time on "
                     f"{machine_description(include_threads=False)}{executor_text(workers, threads_per_run)}"
                     f" (runs finished by an earlier invocation are reused and add no time). "
                     f"Code: commit {provenance_text([getattr(r, 'provenance', {}) or {} for r in results])}. "
                     f"Versions: {versions_text(environment_versions())}. CPU path: {cpu_path_text(cpu_path())}; "
                     f"{SAME_CPU_PATH_NOTE}")
    (out / "table.md").write_text("\n".join(lines) + "\n")

    steps = max(len(v) for v in summary.values())
    # csv quoting: variant names ("sst:sparsity=bst,use_msl=False") contain commas.
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["method"] + [c for s in range(steps) for c in (f"step{s + 1}_mean", f"step{s + 1}_std")])
        for method, cells in summary.items():
            writer.writerow([method] + [f"{v:.4f}" for m, s in cells for v in (m, s)])
    extra = list(setting.names[1:])
    from avalanche_sst.metrics.groups import group_columns  # here: tables stays importable without avalanche

    groups = group_columns({k for r in results for s in r.scores for k in s})  # class-incremental runs
    with open(out / "runs.csv", "w", newline="") as f:
        # "top1" is the setting's primary score (the column name is kept for older readers);
        # "cost": the step's training sample-passes (avalanche_sst.metrics.cost).
        # then RUN_RECORD_COLUMNS (memory, inference FLOPs, the commit that ran it), then the setting's
        # other scores, then the per-group accuracies and prediction shares (metrics.groups; empty for
        # a run that predates them), last.
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["method", "seed", "step", "top1", "seconds", "cost", *RUN_RECORD_COLUMNS, *extra, *groups])
        for r in results:
            writer.writerows([r.method, r.seed, i + 1, f"{a:.6f}", f"{r.seconds:.1f}", _cost(r, i),
                              *_provenance_cells(r, i), *(f"{r.scores[i][n]:.6f}" for n in extra),
                              *(f"{r.scores[i][n]:.6f}" if n in r.scores[i] else "" for n in groups)]
                             for i, a in enumerate(r.accuracies))
    split = "validation slices" if getattr(preset, "evaluate_on", "test") == "valid" else "test set"
    plot_accuracy(summary, out / "accuracy.png", title=f"{preset.dataset} / {preset.model}", split=split)


def plot_accuracy(summary, path: Path, title: str = "", split: str = "test set") -> None:
    """Mean ± std of the primary score after each step, one line per method; a sweep with more methods
    than distinct styles (a selection grid) gets one panel per base method (figure_style.panels_by_method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avalanche_sst.experiments.figure_style import legend_outside, method_styles, panels_by_method, save_figure

    panels = panels_by_method(list(summary))
    single = len(panels) == 1
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6, 4) if single else (13, 3.4 * rows), squeeze=False)
    if not single:
        fig.subplots_adjust(wspace=0.8, hspace=0.45)  # room for each panel's legend beside it
        fig.suptitle(title)
    steps_max = max(len(c) for c in summary.values())
    for ax, (panel_title, labels) in zip(axes.flat, panels.items()):
        styles = method_styles(labels)
        for method in labels:
            cells = summary[method]
            ax.errorbar(range(1, len(cells) + 1), [m for m, _ in cells], yerr=[s for _, s in cells], capsize=3,
                        label=method, **styles[method])
        ax.set_xlabel("step (experience)")
        ax.set_ylabel(f"Top-1 accuracy on the {split} (%)")
        ax.set_xticks(list(range(1, steps_max + 1)))
        ax.grid(alpha=0.3)
        if single:
            ax.set_title(title)
            legend_outside(ax)
        else:
            ax.set_title(panel_title, fontsize=9)
            legend_outside(ax, fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    save_figure(fig, path)
