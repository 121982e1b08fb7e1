"""One view across methods, per setting: final score, training cost, memory beyond the model, inference cost.

Input: sweep folders (each with ``runs.csv`` and ``preset.json``; a folder that
holds none is searched below for them). Per setting (the scenario's, from
``preset.json``) one Markdown table, a row per method and preset: the
setting's primary score after the last step, the training cost summed over
the steps (sample-passes, :mod:`avalanche_sst.metrics.cost`), the most bytes kept
beyond the model after any step (:mod:`avalanche_sst.metrics.memory`; the SST framework keeps
its prepared model at every step but the last) and
the FLOPs of one image (:mod:`avalanche_sst.metrics.inference`), mean ± std
(sample std) over seeds; and one figure: score against training cost, marker
area by memory, the Pareto front (no other run scores higher for less or
equal cost) drawn.

Only runs from the current code are used: a sweep whose runs lack their cost
or commit (:func:`~avalanche_sst.experiments.provenance.check_provenance`) is
left out and listed with its command, and the registered methods of each
setting that no used sweep ran are named, so nothing is mixed in silently.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from avalanche_sst.experiments.provenance import StaleRunsError, check_provenance, provenance_text
from avalanche_sst.experiments.tables import mean_std, mean_std_text

HEADING = "## Overview: score, training cost and memory of every method, per setting"


@dataclass
class MethodRow:
    """One method in one sweep, summarised over its seeds."""

    method: str
    sweep: str  # the folder, as given
    preset: str
    seeds: list[int]
    score: tuple[float, float]  # primary score after the last step, % (mean, std)
    cost: tuple[float, float]  # sample-passes summed over steps (mean, std)
    memory: Optional[float]  # most bytes beyond the model after any step (mean over seeds), None: not recorded
    flops: Optional[float]  # FLOPs per image of the evaluated model after the last step (mean)


@dataclass
class Overview:
    rows: dict[str, list[MethodRow]] = field(default_factory=dict)  # setting -> rows
    stale: list[str] = field(default_factory=list)  # why a sweep was left out
    commits: dict[str, str] = field(default_factory=dict)  # sweep -> its commit(s)


def _is_sweep(folder: Path) -> bool:
    return all((folder / name).exists() for name in ("runs.csv", "preset.json", "table.md"))


def sweep_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Each path that is a sweep folder (``runs.csv``, ``preset.json``, ``table.md``), else every sweep
    folder below it (sorted)."""
    found = []
    for path in map(Path, paths):
        if _is_sweep(path):
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob("runs.csv") if _is_sweep(p.parent))
        else:
            raise ValueError(f"{path} is not a folder: pass sweep folders (each with runs.csv and preset.json)")
    return list(dict.fromkeys(found))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, score) points no other point beats: none has cost <= and score >= with one
    strictly better. Sorted by cost; of equal points the first is kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _last_steps(rows: list[dict]) -> dict[tuple[str, int], dict]:
    last: dict[tuple[str, int], dict] = {}
    for r in rows:
        key = (r["method"], r["seed"])
        if key not in last or r["step"] > last[key]["step"]:
            last[key] = r
    return last


def _peak_memory(rows: list[dict], method: str, seed: int) -> Optional[float]:
    """The most bytes a run kept beyond the model after any of its steps (what a user must budget)."""
    steps = [r.get("memory_bytes") for r in rows if r["method"] == method and r["seed"] == seed]
    return None if None in steps or not steps else max(steps)


def summarize_runs(rows: list[dict], sweep: str, preset: str) -> list[MethodRow]:
    """Per method (first-seen order): its seeds' last-step score, summed cost, memory and FLOPs."""
    last = _last_steps(rows)
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        seeds = sorted(seed for m, seed in last if m == method)
        finals = [last[method, s] for s in seeds]
        costs = [sum(r["cost"] for r in rows if r["method"] == method and r["seed"] == s) for s in seeds]
        memory = [_peak_memory(rows, method, s) for s in seeds]
        flops = [f.get("inference_flops") for f in finals]
        out.append(MethodRow(
            method, sweep, preset, seeds, mean_std([100.0 * f["top1"] for f in finals]), mean_std(costs),
            None if None in memory else sum(memory) / len(memory),
            None if None in flops else sum(flops) / len(flops)))
    return out


def sweep_command(folder: Path) -> str:
    """The command a sweep's ``table.md`` names (``Produced by `...```), else where to look for it."""
    table = Path(folder) / "table.md"
    text = table.read_text() if table.exists() else ""
    start = text.find("Produced by `")
    if start < 0:
        return f"the sweep command that wrote {folder}"
    start += len("Produced by `")
    return text[start:text.index("`", start)]


def collect(paths: Sequence[str | Path]) -> Overview:
    """Read every sweep below ``paths``; stale sweeps are listed in ``.stale``, not used."""
    from avalanche_sst.experiments.paper.formatting import read_runs_csv
    from avalanche_sst.experiments.scenarios import get_scenario

    overview = Overview()
    for folder in sweep_folders(paths):
        name = folder.as_posix()
        preset = json.loads((folder / "preset.json").read_text())
        if preset.get("evaluate_on", "test") != "test":
            overview.stale.append(f"{name}: scored on the validation slices (evaluate_on="
                                  f"{preset['evaluate_on']}), not the test set")
            continue
        rows = read_runs_csv(folder / "runs.csv")
        try:
            check_provenance(rows, name, sweep_command(folder))
        except StaleRunsError as error:
            overview.stale.append(str(error))
            continue
        setting = get_scenario(preset.get("scenario", "same_class")).setting
        overview.rows.setdefault(setting, []).extend(summarize_runs(rows, name, preset.get("name", "?")))
        overview.commits[name] = provenance_text(rows)
    return overview


def missing_methods(overview: Overview) -> dict[str, list[str]]:
    """Per setting, the registered methods (base names) that support it and that no used sweep ran."""
    from avalanche_sst.experiments.methods import METHODS
    from avalanche_sst.experiments.registry import SETTINGS, parse_variant

    out = {}
    for setting in SETTINGS:
        ran = {parse_variant(r.method)[0] for r in overview.rows.get(setting, [])}
        out[setting] = sorted(name for name, m in METHODS.items() if setting in m.settings and name not in ran)
    return out


def _bytes_text(value: Optional[float]) -> str:
    if value is None:
        return "not recorded"
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _flops_text(value: Optional[float]) -> str:
    return "not recorded" if value is None else f"{value / 1e6:.2f} M"


def preset_names(rows: list[MethodRow]) -> list[str]:
    """Each row's preset, with its sweep folder's name added where one method has two rows of the same
    preset name (a table whose sweeps differ in one field, e.g. table2's ``sweep_model=resnet8``)."""
    counts = Counter((r.method, r.preset) for r in rows)
    return [r.preset if counts[r.method, r.preset] == 1 else f"{r.preset}, {Path(r.sweep).name}" for r in rows]


def setting_table(rows: list[MethodRow]) -> list[str]:
    lines = ["| method | preset | seeds | final score (%) | training cost (k sample-passes) | "
             "peak memory beyond the model | inference (FLOPs / image) |", "|---|---|---|---|---|---|---|"]
    for r, preset in zip(rows, preset_names(rows)):
        lines.append(f"| `{r.method}` | {preset} | {len(r.seeds)} | {mean_std_text(*r.score)} | "
                     f"{mean_std_text(r.cost[0] / 1e3, r.cost[1] / 1e3, 1)} | {_bytes_text(r.memory)} | "
                     f"{_flops_text(r.flops)} |")
    return lines


def plot_setting(rows: list[MethodRow], path: str | Path, title: str = "") -> None:
    """Final score against training cost, marker area by memory, the Pareto front as a dashed step line.

    A setting with more rows than distinct styles gets one panel per base method
    (:func:`~avalanche_sst.experiments.figure_style.panels_by_method`), on shared axes, each with the
    whole setting's Pareto front and the other methods' points in grey, so every panel reads alone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avalanche_sst.experiments.figure_style import legend_outside, method_styles, panels_by_method, save_figure

    from matplotlib.ticker import FuncFormatter

    labels = [f"{r.method} ({preset})" for r, preset in zip(rows, preset_names(rows))]
    base_of = {label: r.method.split(":", 1)[0] for label, r in zip(labels, rows)}
    panels = panels_by_method(labels, base=base_of.__getitem__)
    largest = max((r.memory or 0.0) for r in rows) or 1.0
    front = pareto_front([(r.cost[0], r.score[0]) for r in rows])
    # a panel is as tall as its legend, so that legends beside stacked panels never overlap
    heights = [4.0] if len(panels) == 1 else [max(3.0, 0.27 * (len(members) + 1)) for members in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, sum(heights)), sharex=True, sharey=True, squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (panel, members) in zip(axes[:, 0], panels.items()):
        styles = method_styles(members)
        for label, r in zip(labels, rows):
            if label not in styles:
                ax.scatter([r.cost[0]], [r.score[0]], s=12, color="lightgray", zorder=1)
                continue
            area = 30 + 300 * (r.memory or 0.0) / largest
            ax.errorbar(r.cost[0], r.score[0], xerr=r.cost[1], yerr=r.score[1], linestyle="none", capsize=2,
                        color=styles[label]["color"], alpha=0.5)
            ax.scatter([r.cost[0]], [r.score[0]], s=area, color=styles[label]["color"],
                       marker=styles[label]["marker"], edgecolors="black", linewidths=0.5, label=label, zorder=3)
        ax.step([rows[i].cost[0] for i in front], [rows[i].score[0] for i in front], where="post", color="black",
                linestyle="--", linewidth=1, label="Pareto front (cost, score)", zorder=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value / 1e3:g}k"))  # ticks stay apart
        ax.set_ylabel("final score (%)")
        if panel:
            ax.set_title(f"{panel} (grey: the setting's other methods)", fontsize=9)
        ax.grid(alpha=0.3)
        legend = legend_outside(ax)
        for handle in legend.legend_handles:  # one size in the legend: there it names the method only
            if hasattr(handle, "set_sizes"):
                handle.set_sizes([40])
    axes[-1, 0].set_xlabel("training cost, summed over steps (sample-passes)")
    heading = f"{title} (marker area: memory beyond the model)" if title else "marker area: memory beyond the model"
    first = axes[0, 0]
    first.set_title(f"{heading}\n{first.get_title()}" if len(panels) > 1 else heading, fontsize=10)
    save_figure(fig, path)


def overview_section(paths: Sequence[str | Path], figure_dir: Optional[str | Path] = None,
                     link_from: Optional[str | Path] = None, command: str = "") -> str:
    """The Markdown section; with ``figure_dir``, one ``overview_<setting>.png`` per setting there,
    linked relative to ``link_from`` (the report's folder)."""
    from avalanche_sst.metrics.scores import SETTING_SCORES

    overview = collect(paths)
    lines = [HEADING, "",
             f"Generated{f' by `{command}`' if command else ''} from the sweeps below "
             "(avalanche_sst.experiments.overview); do not edit by hand. Per setting, every method run in it: "
             "its primary score after the last step, the training cost summed over the steps (a forward and "
             "backward of one sample = 1), the bytes it keeps besides the network it evaluates (exemplars, "
             "teachers, snapshots, importances, masks and codebooks) after the last step, and the FLOPs of one "
             "image through the evaluated network; mean ± std over the seeds named. Only runs that record their "
             "cost and the commit of the code that ran them are used.", ""]
    missing = missing_methods(overview)
    for setting, rows in overview.rows.items():
        score = SETTING_SCORES[setting]
        lines += [f"### {setting}", "", f"Score: {score.description}.", ""]
        lines += setting_table(rows) + [""]
        front = pareto_front([(r.cost[0], r.score[0]) for r in rows])
        lines += ["On the Pareto front of score against training cost: "
                  + ", ".join(f"`{rows[i].method}` ({preset_names(rows)[i]})" for i in front) + ".", ""]
        if figure_dir is not None:
            figure = Path(figure_dir) / f"overview_{setting}.png"
            plot_setting(rows, figure, title=setting)
            link = Path(os.path.relpath(figure, link_from)).as_posix() if link_from is not None else figure.as_posix()
            lines += [f"Figure: [{figure.name}]({link}).", ""]
        if missing[setting]:
            lines += [f"Not run in this setting yet: {', '.join(f'`{m}`' for m in missing[setting])}.", ""]
        sweeps = sorted({r.sweep for r in rows})
        lines += ["Sweeps and the commit(s) of their runs: "
                  + "; ".join(f"`{s}` ({overview.commits[s]})" for s in sweeps) + ".", ""]
    unrun = [s for s in missing if s not in overview.rows]
    if unrun:
        lines += [f"No fresh runs at all in: {', '.join(unrun)}.", ""]
    if overview.stale:
        lines += ["Left out: sweeps scored on validation slices, and sweeps whose runs lack their cost or the "
                  "commit of the code that ran them (they may come from older code):", ""]
        lines += [f"- {reason}" for reason in overview.stale] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def replace_section(text: str, section: str, heading: str = HEADING) -> str:
    """``text`` with its ``heading`` section (up to the next heading of the same level) replaced by
    ``section``, or ``section`` appended when absent."""
    start = text.find(heading + "\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section
    level = heading.split(" ", 1)[0] + " "
    end = len(text)
    for marker in ("\n# ", "\n" + level):
        found = text.find(marker, start + len(heading))
        if found >= 0:
            end = min(end, found + 1)
    return text[:start] + section + ("\n" + text[end:] if end < len(text) else "")
