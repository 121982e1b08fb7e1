"""Options beyond the paper, judged on the validation slices (issue 14, part 5).

Input: a same-class sweep run with ``evaluate_on=valid`` (every step scored on
the parts' validation slices, never the test set) holding the paper's framework
(``sst``) and variants of it that each switch one option on, e.g.
``sst:reinit_range_scope=layer`` or ``sst:lr_msl=0.01``, on the same seeds.

Each option's effect is its validation accuracy minus the paper's, per step
and averaged over the compared steps (the average is taken per seed first, so
its paired t-test over seeds sees one number per seed). :func:`helpful_options`
applies the selection rule of ``sst_plus``: an option is kept when its mean
effect over the compared steps is positive; the p-values are reported, not
required, because three seeds rarely reach p < 0.05 on effects under a point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from avalanche_sst.experiments.paper.equal_compute import (difference_cell, load_sweeps, markdown_table, per_seed,
                                                            seed_stats)
from avalanche_sst.experiments.paper.stats import ALPHA, seed_test
from avalanche_sst.experiments.tables import mean_std_text

HEADING = "## Options beyond the paper, on the validation slices"
MEAN = "mean"  # the step key of the per-seed average over the compared steps


@dataclass(frozen=True)
class OptionEffect:
    """One variant against the reference: points per step and averaged over the steps, with p-values."""

    method: str
    per_step: dict  # step -> (points, p)
    mean_points: float
    mean_p: float


def _with_step_means(acc_seed: dict, steps: Sequence[int]) -> dict:
    """``acc_seed`` plus ``(method, MEAN)``: each seed's average over ``steps`` (seeds that have all of them)."""
    out = dict(acc_seed)
    for method in {m for m, _ in acc_seed}:
        per = [acc_seed.get((method, s), {}) for s in steps]
        seeds = set.intersection(*(set(p) for p in per)) if per else set()
        if seeds:
            out[method, MEAN] = {seed: sum(p[seed] for p in per) / len(per) for seed in sorted(seeds)}
    return out


def _scores(rows: Sequence[dict], reference: str, steps: Sequence[int]):
    """``(methods, acc, p_value)`` of the runs, with each seed's mean over ``steps`` as the step ``MEAN``."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if reference not in methods:
        raise ValueError(f"the runs hold no method {reference!r} (reference=); they hold {methods}")
    acc_seed = _with_step_means(per_seed(rows, "top1", 100.0), steps)
    acc = seed_stats(acc_seed)
    return methods, acc, seed_test(acc, acc_seed)


def _effects(methods, acc, p_value, reference: str, steps: Sequence[int]) -> list[OptionEffect]:
    def compare(method, step):
        if (method, step) not in acc or (reference, step) not in acc:
            return float("nan"), float("nan")
        points = acc[method, step][0] - acc[reference, step][0]
        return points, (p_value((method, step), (reference, step)) if p_value else float("nan"))

    effects = []
    for m in methods:
        if m == reference:
            continue
        mean_points, mean_p = compare(m, MEAN)
        effects.append(OptionEffect(m, {s: compare(m, s) for s in steps}, mean_points, mean_p))
    return effects


def option_effects(sweep_dirs: Sequence[str | Path], reference: str = "sst",
                   steps: Sequence[int] = (2, 3, 4)) -> list[OptionEffect]:
    """Every other method of the sweeps against ``reference``, in file order."""
    return _effects(*_scores(load_sweeps(sweep_dirs), reference, steps), reference, steps)


def helpful_options(effects: Sequence[OptionEffect], reference: str = "sst") -> list[str]:
    """The variants of ``reference`` (``<reference>:<option>=<value>``) kept for ``sst_plus``: those whose mean
    effect over the compared steps is above 0. Other methods in the sweep (e.g. a baseline) are never kept."""
    return [e.method for e in effects if e.method.startswith(reference + ":") and e.mean_points > 0]


def option_ablation_section(sweep_dirs: Sequence[str | Path], reference: str = "sst",
                            steps: Sequence[int] = (2, 3, 4), heading: str = HEADING) -> str:
    """Markdown: the validation accuracy of every method, and each option's effect with its p-values."""
    rows = load_sweeps(sweep_dirs)
    methods, acc, p_value = _scores(rows, reference, steps)
    n_steps = max(r["step"] for r in rows)
    seeds = sorted({r["seed"] for r in rows})
    sources = ", ".join(f"`{Path(d).as_posix()}/runs.csv`" for d in sweep_dirs)
    effects = _effects(methods, acc, p_value, reference, steps)
    kept = helpful_options(effects, reference)
    mean_label = f"mean of steps {', '.join(map(str, steps))}"
    lines = [heading, "",
             f"Generated from {sources} by `avalanche_sst.experiments.paper.sst_options`; do not edit by hand. "
             f"Top-1 % on the **validation slices** (the sweep's `evaluate_on=valid`; the test set is not read), "
             f"mean ± std over seeds {seeds}. Each variant switches on one option beyond the paper; the paper's "
             f"framework is `{reference}`.", ""]
    lines += markdown_table(["method", *(f"step {s}" for s in range(1, n_steps + 1)), mean_label],
                            [[f"`{m}`", *(mean_std_text(*acc[m, s][:2]) if (m, s) in acc else ""
                                          for s in [*range(1, n_steps + 1), MEAN])] for m in methods])
    lines += ["", f"Each method minus `{reference}` (points), with the two-sided p-value of a paired t-test over "
              f"the seeds (significant: p < {ALPHA:g}); the last column tests each seed's {mean_label}:", ""]
    lines += markdown_table(["method", *(f"step {s}" for s in steps), mean_label],
                            [[f"`{e.method}`", *(difference_cell(e.method, reference, s, acc, p_value)
                                                 for s in [*steps, MEAN])] for e in effects])
    lines += ["", f"Selection rule for `sst_plus`: keep every variant of `{reference}` whose effect on the " + mean_label
              + " is above 0 (the p-values are reported, not required). Kept here: "
              + (", ".join(f"`{m}`" for m in kept) if kept else "none") + "."]
    return "\n".join(lines) + "\n"
