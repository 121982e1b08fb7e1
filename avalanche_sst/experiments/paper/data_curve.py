"""Where the framework pays: accuracy at one step against the data per step (issue 14, part 6).

Input: same-class sweep folders that differ only in ``train_fraction`` (read
from each folder's ``preset.json``), each holding the framework(s), plain and
compute-matched fine-tuning on the same seeds. Output: a Markdown table of the
accuracy at ``step`` per fraction and method, each framework minus the
compute-matched baseline with a paired t-test over seeds, and a figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from avalanche_sst.experiments.paper.equal_compute import (difference_cell, load_sweeps, markdown_table, per_seed,
                                                            plot_lines, seed_stats)
from avalanche_sst.experiments.paper.stats import ALPHA, seed_test
from avalanche_sst.experiments.tables import mean_std_text

HEADING = "## Where does it pay? Accuracy against the data per step"


def sweep_fraction(folder: str | Path) -> float:
    """The ``train_fraction`` a sweep folder ran with (its ``preset.json``)."""
    path = Path(folder) / "preset.json"
    if not path.exists():
        raise ValueError(f"{path} does not exist: pass sweep folders (each with a preset.json and runs.csv)")
    return float(json.loads(path.read_text())["train_fraction"])


def curve_points(sweep_dirs: Sequence[str | Path], step: int = 4) -> dict:
    """``{fraction: (acc, acc_seed)}``: per folder the accuracy statistics at ``step`` keyed by method.

    Two folders with the same fraction are an error (pass one)."""
    points = {}
    for folder in sweep_dirs:
        fraction = sweep_fraction(folder)
        if fraction in points:
            raise ValueError(f"two sweep folders ran train_fraction={fraction:g}; pass one of them ({folder})")
        acc_seed = {k: v for k, v in per_seed(load_sweeps([folder]), "top1", 100.0).items() if k[1] == step}
        if not acc_seed:
            raise ValueError(f"{folder}: no run reached step {step}")
        points[fraction] = (seed_stats(acc_seed), acc_seed)
    return dict(sorted(points.items()))


def _methods(points: dict, only: Optional[Sequence[str]]) -> list[str]:
    present = list(dict.fromkeys(m for acc, _ in points.values() for m, _ in acc))
    return present if only is None else [m for m in only if m in present]


def data_curve_section(sweep_dirs: Sequence[str | Path], frameworks: Sequence[str] = ("sst",),
                       matched: str = "finetune:budget=sst", step: int = 4, heading: str = HEADING,
                       figure_link: Optional[str] = None, methods: Optional[Sequence[str]] = None) -> str:
    """Markdown: the accuracy at ``step`` per fraction and method, and each framework minus ``matched``.

    ``methods``: the columns, in this order (default: every method of the sweeps)."""
    points = curve_points(sweep_dirs, step)
    methods = _methods(points, methods)
    seeds = sorted({seed for _, acc_seed in points.values() for v in acc_seed.values() for seed in v})
    sources = ", ".join(f"`{Path(d).as_posix()}`" for d in sweep_dirs)
    lines = [heading, "",
             f"Generated from the sweeps {sources} by `avalanche_sst.experiments.paper.data_curve`; do not edit by "
             f"hand. Top-1 % on the test set after step {step}, mean ± std over seeds {seeds}; the fraction is "
             f"the share of Fashion-MNIST's training set split into the 4 parts.", ""]
    lines += markdown_table(["train fraction", *(f"`{m}`" for m in methods)],
                            [[f"{fraction:g}", *(mean_std_text(*acc[m, step][:2])
                                                 if (m, step) in acc else "" for m in methods)]
                             for fraction, (acc, _) in points.items()])
    tested = [f for f in frameworks if f in methods]
    if matched in methods and tested:
        lines += ["", f"Each framework minus `{matched}` at step {step} (points), two-sided paired t-test over "
                  f"seeds (significant: p < {ALPHA:g}):", ""]
        body = []
        for fraction, (acc, acc_seed) in points.items():
            p_value = seed_test(acc, acc_seed)
            body.append([f"{fraction:g}", *(difference_cell(f, matched, step, acc, p_value) for f in tested)])
        lines += markdown_table(["train fraction", *(f"`{f}`" for f in tested)], body)
    else:
        lines += ["", f"No `{matched}` runs (or no framework among {list(frameworks)}), so no equal-cost test."]
    if figure_link:
        lines += ["", f"Figure: [{Path(figure_link).name}]({figure_link})."]
    return "\n".join(lines) + "\n"


def plot_data_curve(sweep_dirs: Sequence[str | Path], path: str | Path, step: int = 4,
                    methods: Optional[Sequence[str]] = None) -> None:
    """Accuracy at ``step`` against the train fraction (log scale), one line per method, seed std as bars."""
    points = curve_points(sweep_dirs, step)
    lines = {}
    for m in _methods(points, methods):
        xs = [f for f, (acc, _) in points.items() if (m, step) in acc]
        lines[m] = (xs, [points[f][0][m, step][0] for f in xs], [points[f][0][m, step][1] for f in xs])
    plot_lines(lines, path, "train fraction of Fashion-MNIST (4 parts)", f"Top-1 on the test set after step {step} (%)",
               log_x=True)
