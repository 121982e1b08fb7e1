"""The report section "Does it pay at equal compute?" (issue 14, part 7), generated from sweeps' ``runs.csv``.

Input: one or more same-class sweep folders whose ``runs.csv`` hold the
framework (``sst``), its compute-matched baselines (e.g.
``finetune:budget=sst``) and the plain baselines, all on the same seeds.
Output: Markdown with the accuracy per step (mean ± std, sample std, over
seeds), the training cost per step and the cost ratio framework :
fine-tuning when ``runs.csv`` has a ``cost`` column (sample-passes of that
step, :mod:`avalanche_sst.metrics.cost`), paired t-tests over seeds of the
framework against each baseline at the compared steps
(:func:`~avalanche_sst.experiments.paper.stats.seed_test`), and sentences
saying what held, including the issue's aim (beat compute-matched
fine-tuning by ``aim_points`` with p < ALPHA at every compared step).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

from avalanche_sst.experiments.paper.stats import ALPHA, seed_test
from avalanche_sst.experiments.tables import mean_std, mean_std_text

HEADING = "## Does it pay at equal compute?"


def read_runs(path: str | Path) -> list[dict]:
    """Rows of a sweep's ``runs.csv``: method, seed, step, top1 (fraction), and cost when present.

    A method name holding unquoted commas (``sst:a=1,b=2``) is rejoined: the other columns are
    counted from the right, as :func:`~avalanche_sst.experiments.paper.formatting.read_runs_csv` does;
    unlike it, an empty ``cost`` cell (a run without a cost meter) is read as "no cost", not an error.
    """
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or lines[0][:1] != ["method"]:
        raise ValueError(f"{path}: not a sweep's runs.csv (its header must start with 'method')")
    header, out = lines[0], []
    for r in lines[1:]:
        if not r:
            continue
        extra = len(r) - len(header)
        if extra < 0:
            raise ValueError(f"{path}: row {r} has fewer columns than the header {header}")
        r = [",".join(r[:extra + 1]), *r[extra + 1:]]
        d = dict(zip(header, r))
        row = {"method": d["method"], "seed": int(d["seed"]), "step": int(d["step"]), "top1": float(d["top1"])}
        if d.get("cost") not in (None, ""):
            row["cost"] = float(d["cost"])
        out.append(row)
    return out


def load_sweeps(sweep_dirs: Sequence[str | Path]) -> list[dict]:
    """The runs of every folder's ``runs.csv``; the same (method, seed, step) in two folders is an error."""
    rows, seen = [], {}
    for folder in sweep_dirs:
        path = Path(folder) / "runs.csv"
        if not path.exists():
            raise ValueError(f"{path} does not exist: pass sweep folders (each with a runs.csv)")
        for r in read_runs(path):
            key = (r["method"], r["seed"], r["step"])
            if key in seen:
                raise ValueError(f"{r['method']} seed {r['seed']} step {r['step']} is in both {seen[key]} and "
                                 f"{folder}; rename one method or pass one of the folders")
            seen[key] = folder
            rows.append(r)
    return rows


def per_seed(rows: Sequence[dict], field: str, scale: float = 1.0) -> dict[tuple[str, int], dict[int, float]]:
    """``{(method, step): {seed: scale * row[field]}}`` for the rows that have ``field``."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    for r in rows:
        if field in r:
            out.setdefault((r["method"], r["step"]), {})[r["seed"]] = scale * r[field]
    return out


def seed_stats(values: dict[tuple[str, int], dict[int, float]]) -> dict[tuple[str, int], tuple[float, float, int]]:
    return {k: (*mean_std(list(v.values())), len(v)) for k, v in values.items()}


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(b) + " |" for b in body)]


def _steps_text(steps: Sequence[int]) -> str:
    """``[2]`` -> "step 2"; ``[2, 3, 4]`` -> "steps 2, 3 and 4"."""
    steps = [str(s) for s in steps]
    return "step " + steps[0] if len(steps) == 1 else "steps " + ", ".join(steps[:-1]) + " and " + steps[-1]


def verdicts(framework: str, baseline: str, steps: Sequence[int], acc: dict, p_value,
             aim_points: float) -> dict[str, list[int]]:
    """Steps sorted by outcome: framework "ahead_by_aim", "ahead" (less than ``aim_points``),
    "behind" (all significant at ALPHA), "no_difference", "untested" (fewer than two seeds or a missing run)."""
    out = {k: [] for k in ("ahead_by_aim", "ahead", "behind", "no_difference", "untested")}
    for step in steps:
        a, b = (framework, step), (baseline, step)
        if a not in acc or b not in acc or p_value is None:
            out["untested"].append(step)
            continue
        p = p_value(a, b)
        diff = acc[a][0] - acc[b][0]
        if not p < ALPHA:  # nan included
            out["no_difference"].append(step)
        elif diff >= aim_points:
            out["ahead_by_aim"].append(step)
        else:
            out["ahead" if diff > 0 else "behind"].append(step)
    return out


def equal_compute_section(sweep_dirs: Sequence[str | Path], framework: str | Sequence[str] = "sst",
                          reference: str = "finetune",
                          matched: str = "finetune:budget=sst", baselines: Optional[Sequence[str]] = None,
                          steps: Sequence[int] = (2, 3, 4), aim_points: float = 1.0,
                          heading: str = HEADING) -> str:
    """The Markdown section from the sweeps' runs (see the module docstring).

    :param framework: the method compared with the others, or several (e.g. ``("sst", "sst_plus")``): each
        is tested against every baseline, and the cost ratio is the first one's.
    :param reference: the plain fine-tuning the cost ratio is taken against.
    :param matched: the compute-matched fine-tuning the issue's aim names.
    :param baselines: the methods tested against the framework (default: every other method, in file order).
    :param steps: the (1-based) steps tested.
    """
    rows = load_sweeps(sweep_dirs)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    frameworks = [framework] if isinstance(framework, str) else list(framework)
    missing = [f for f in frameworks if f not in methods]
    if not frameworks or missing:
        raise ValueError(f"the runs hold no method {missing or frameworks!r} (framework=); they hold {methods}")
    framework = frameworks[0]
    baselines = [m for m in methods if m not in frameworks] if baselines is None else list(baselines)
    unknown = [m for m in baselines if m not in methods]
    if unknown:
        raise ValueError(f"baselines {unknown} are not in the runs; they hold {methods}")
    order = [*frameworks, *baselines]
    acc_seed = per_seed(rows, "top1", 100.0)
    acc = seed_stats(acc_seed)
    n_steps = max(r["step"] for r in rows)
    seeds = sorted({r["seed"] for r in rows})
    sources = ", ".join(f"`{Path(d).as_posix()}/runs.csv`" for d in sweep_dirs)
    lines = [heading, "",
             f"Generated from {sources} by `avalanche_sst.experiments.paper.equal_compute`; do not edit by hand. "
             f"Top-1 % on the whole test set after each step, mean ± std (sample std) over seeds {seeds}. "
             f"Methods named `<method>:budget=...` are given the framework's training cost step by step.", ""]
    lines += markdown_table(["method", *(f"step {s}" for s in range(1, n_steps + 1))],
                    [[f"`{m}`", *(mean_std_text(*acc[m, s][:2]) if (m, s) in acc else ""
                                  for s in range(1, n_steps + 1))] for m in order])
    cost = seed_stats(per_seed(rows, "cost"))
    if cost:
        lines += ["", "Training cost of each step in thousand sample-passes (one forward and backward of one "
                  "sample is 1, a forward alone 1/3; as the sweep's `table.md`), mean over seeds:", ""]
        body = [[f"`{m}`", *(f"{cost[m, s][0] / 1000:,.1f}" if (m, s) in cost else "" for s in range(1, n_steps + 1))]
                for m in order]
        if any((reference, s) in cost for s in range(1, n_steps + 1)):
            body.append([f"`{framework}` : `{reference}`",
                         *(f"{cost[framework, s][0] / cost[reference, s][0]:.2f}"
                           if (framework, s) in cost and cost.get((reference, s), (0,))[0] > 0 else ""
                           for s in range(1, n_steps + 1))])
        lines += markdown_table(["method", *(f"step {s}" for s in range(1, n_steps + 1))], body)
    else:
        lines += ["", "The runs record no `cost` column, so the costs are not compared here."]
    p_value = seed_test(acc, acc_seed)
    for tested in frameworks:
        lines += ["", f"`{tested}` minus each baseline (points), with the two-sided p-value of a paired t-test "
                  f"over the seeds (significant: p < {ALPHA:g}):", ""]
        lines += markdown_table(["baseline", *(f"step {s}" for s in steps)],
                        [[f"`{b}`", *(difference_cell(tested, b, s, acc, p_value) for s in steps)] for b in baselines])
        lines += ["", what_held(tested, baselines, steps, acc, p_value, aim_points, matched)]
    return "\n".join(lines) + "\n"


def difference_cell(a: str, b: str, step: int, acc: dict, p_value) -> str:
    """``"+1.23 (p = 0.045)"``: mean of ``a`` minus mean of ``b`` at ``step`` and the paired test's p."""
    if (a, step) not in acc or (b, step) not in acc:
        return ""
    diff = acc[a, step][0] - acc[b, step][0]
    p = p_value((a, step), (b, step)) if p_value is not None else None
    return f"{diff:+.2f} (p = {p:.2g})" if p is not None and p == p else f"{diff:+.2f} (p n/a)"


def what_held(framework: str, baselines: Sequence[str], steps: Sequence[int], acc: dict, p_value,
              aim_points: float, matched: str) -> str:
    """Plain sentences: per baseline where the framework is significantly ahead or behind, and the aim."""
    parts = []
    for b in baselines:
        v = verdicts(framework, b, steps, acc, p_value, aim_points)
        said = []
        if v["ahead_by_aim"]:
            said.append(f"ahead by at least {aim_points:g} point(s) at {_steps_text(v['ahead_by_aim'])}")
        if v["ahead"]:
            said.append(f"ahead by less than {aim_points:g} point(s) at {_steps_text(v['ahead'])}")
        if v["behind"]:
            said.append(f"behind at {_steps_text(v['behind'])}")
        if v["no_difference"]:
            said.append(f"not significantly different at {_steps_text(v['no_difference'])}")
        if v["untested"]:
            said.append(f"not tested at {_steps_text(v['untested'])} (a missing run or fewer than two seeds)")
        parts.append(f"`{framework}` against `{b}`: " + "; ".join(said) + ".")
    text = f"What held (p < {ALPHA:g}): " + " ".join(parts)
    if matched in baselines:
        v = verdicts(framework, matched, steps, acc, p_value, aim_points)
        met = v["ahead_by_aim"] == list(steps)
        text += (f" The aim (beat `{matched}` by at least {aim_points:g} point(s) with p < {ALPHA:g} at "
                 f"{_steps_text(list(steps))}) was {'met' if met else 'NOT met'}"
                 + ("." if met else f": it held at {len(v['ahead_by_aim'])} of {len(steps)} step(s)."))
    else:
        text += f" No `{matched}` runs were given, so the comparison at equal compute is not made here."
    return text


def plot_accuracy_vs_cost(sweep_dirs: Sequence[str | Path], path: str | Path,
                          methods: Optional[Sequence[str]] = None) -> bool:
    """Accuracy after each step against the cost spent so far (cumulative, mean over seeds), one line per
    method; False (and no file) when the runs record no cost."""
    rows = load_sweeps(sweep_dirs)
    cost, acc = seed_stats(per_seed(rows, "cost")), seed_stats(per_seed(rows, "top1", 100.0))
    if not cost:
        return False
    lines = {}
    for m in methods or list(dict.fromkeys(r["method"] for r in rows)):
        steps = sorted(s for (name, s) in acc if name == m and (m, s) in cost)
        xs = [sum(cost[m, k][0] for k in steps[:i + 1]) for i in range(len(steps))]
        lines[m] = (xs, [acc[m, s][0] for s in steps], [acc[m, s][1] for s in steps])
    plot_lines(lines, path, "training cost so far (sample-passes)", "Top-1 accuracy on the test set (%)")
    return True


def plot_lines(lines: dict, path: str | Path, xlabel: str, ylabel: str, log_x: bool = False) -> None:
    """One line with error bars per ``{label: (xs, means, stds)}``, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avalanche_sst.experiments.figure_style import legend_outside, method_styles, save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = method_styles(list(lines))
    for label, (xs, means, stds) in lines.items():
        ax.errorbar(xs, means, yerr=stds, capsize=3, label=label, **styles[label])
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, path)


def write_equal_compute(sweep_dirs: Sequence[str | Path], out: str | Path, figure: Optional[str | Path] = None,
                        append: bool = False, **kwargs) -> str:
    """Write :func:`equal_compute_section` to ``out`` (e.g. a part of ``docs/results.md``); returns the section.

    With ``figure``, also :func:`plot_accuracy_vs_cost` there, linked from the section (relative to ``out``).
    With ``append``, the section goes after ``out``'s text instead of replacing it.
    """
    import os

    text = equal_compute_section(sweep_dirs, **kwargs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if figure is not None and plot_accuracy_vs_cost(sweep_dirs, figure):
        link = Path(os.path.relpath(Path(figure), out.parent)).as_posix()
        text += f"\nAccuracy against the training cost spent so far: [{Path(figure).name}]({link}).\n"
    out.write_text(out.read_text().rstrip("\n") + "\n\n" + text if append and out.exists() else text)
    return text
