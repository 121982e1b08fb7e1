"""Running a paper table: its sweeps (or Fig. 3) and its paper-shaped files.

:func:`run_table` runs the table's sweep(s) with
:func:`~avalanche_sst.experiments.sweep.run_sweep` (one per distinct set of
preset overrides, e.g. one per model depth) into ``<out_root>/<table_id>/``
and writes ``<table_id>.md`` / ``.csv`` / ``.json`` there: the paper-shaped
table, cells "mean ± std" (sample std) over seeds computed from the runs' own
numbers, plus the command, seeds and times.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

from avalanche_sst.experiments.paper.fig3 import run_fig3
from avalanche_sst.experiments.paper.formatting import write_table
from avalanche_sst.experiments.paper.specs import TABLES, resolve_overrides, sweep_dirname, sweep_groups
from avalanche_sst.experiments.tables import mean_std, scenario_text, setting_scores


def default_command(table_id: str, preset_name: str, seeds: Sequence[int], out_root) -> str:
    return (f"python experiments/paper_tables.py {table_id} --preset {preset_name} "
            f"--seeds {' '.join(str(s) for s in seeds)} --out {out_root}")


def run_table(table_id: str, preset_name: str = "cpu", out_root: str | Path = "results/paper", data=None,
              seeds: Optional[Sequence[int]] = None, command: Optional[str] = None,
              preset_changes: Optional[Mapping] = None, log: Callable[[str], None] = print,
              sweep_options: Optional[Mapping] = None) -> dict:
    """Run one paper table (its sweeps, or Fig. 3) and write its paper-shaped files.

    :param data: ``(train, test)`` datasets to use instead of loading ``preset.dataset``.
    :param seeds: override the preset's seeds.
    :param preset_changes: other ``Preset`` fields to override (e.g. ``data_root``, ``device``).
    :param sweep_options: where the runs execute, passed to ``run_sweep`` (``workers``,
        ``address``, ``gpus_per_run``, ``threads_per_run``); default: one at a time in this process.
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
    cell_seeds = None
    if spec.kind == "fig3":
        cells, sweeps, models = run_fig3(spec, preset, out_dir, data, log)
    else:
        runs_dir = out_dir if spec.runs_of is None else Path(out_root) / spec.runs_of
        # a table reading another's runs keeps that table's name on their sweep (its preset.json), so the
        # runs stay labelled by the table that owns them whichever table wrote last
        sweep_preset = preset if spec.runs_of is None else preset.replace(
            name=TABLES[spec.runs_of].preset(preset_name, seeds).name)
        cells, sweeps, models, cell_seeds = _run_sweeps(spec, sweep_preset, preset_name, runs_dir, data, command,
                                                        log, sweep_options)
        if spec.runs_of is not None:
            sweeps = [f"../{spec.runs_of}/{name}" for name in sweeps]
    this = {"command": command, "wall_seconds": round(time.perf_counter() - t0, 1),
            # this process's threads only: runs in worker processes are not in it (their runs.csv seconds are)
            "cpu_seconds": round(time.process_time() - c0, 1),
            **(_executor_shape(preset, sweep_options) if spec.kind != "fig3"
               else {"workers": 1, "threads_per_run": torch.get_num_threads()})}  # fig3 runs in this process
    invocations = _previous_invocations(out_dir / f"{table_id}.json") + [this]
    meta = {
        "table": table_id, "title": spec.title, "preset": preset_name, "preset_name": preset.name,
        "seeds": list(preset.seeds), "command": command, "dataset": preset.dataset, "models": models,
        "ratios": list(preset.ratios), "scenario": scenario_text(preset),
        "score": setting_scores(preset).description, "train_fraction": preset.train_fraction,
        "paper_setting": spec.paper_setting, "sweeps": sweeps,
        **({"cell_seeds": cell_seeds} if cell_seeds is not None else {}),
        # a resumed table sums every invocation that wrote it (runs redone after a change included)
        "invocations": invocations,
        "wall_seconds": round(sum(i["wall_seconds"] for i in invocations), 1),
        "workers": this["workers"], "threads_per_run": this["threads_per_run"],
    }
    if all(i.get("cpu_seconds") is not None for i in invocations):
        meta["cpu_seconds"] = round(sum(i["cpu_seconds"] for i in invocations), 1)
    paths = write_table(spec, cells, meta, out_dir)
    return {**paths, "dir": out_dir, "cells": cells}


def _executor_shape(preset, sweep_options: Optional[Mapping]) -> dict:
    """How many runs shared the machine and with how many torch threads each, as ``run_sweep`` sets them."""
    from avalanche_sst.experiments.executor import default_workers

    options = dict(sweep_options or {"workers": 1})
    threads = options.get("threads_per_run") or preset.num_threads or 1
    workers = options.get("workers")
    return {"workers": workers if workers is not None else default_workers(threads), "threads_per_run": threads}


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


def _run_sweeps(spec, preset, preset_name, out_dir, data, command, log, sweep_options=None):
    from avalanche_sst.experiments.sweep import run_sweep

    per_run: dict[tuple, list] = {}  # (overrides, method) -> per-seed RunResults
    sweeps, models = [], {}
    for overrides, methods in sweep_groups(spec, preset_name).items():
        sp = preset.replace(methods=methods, **dict(overrides))
        name = sweep_dirname(overrides)
        sweeps.append(name)
        models[name] = sp.model
        results = run_sweep(sp, out_dir / name, data=data, log=log, command=command, **(sweep_options or {}))
        for r in results:
            per_run.setdefault((overrides, r.method), []).append(r)
    cells, cell_seeds = {}, []
    for c in spec.cells:
        runs = per_run[resolve_overrides(c, preset_name), c.method]
        values = {r.seed: cell_value(c, r) for r in runs}
        cells[c.row, c.col] = (*mean_std(list(values.values())), len(values))
        cell_seeds.append({"row": c.row, "col": c.col, "values": {str(k): v for k, v in values.items()}})
    return cells, sweeps, models, cell_seeds


def cell_value(cell, run) -> float:
    """The number ``cell`` shows for one run (a ``RunResult``): see :class:`Cell`."""
    if cell.score is None:
        return 100.0 * run.accuracies[cell.step_index(len(run.accuracies))]
    index = cell.step_index(len(run.scores))
    step_scores = run.scores[index] if 0 <= index < len(run.scores) else {}
    if cell.score in step_scores:
        return 100.0 * step_scores[cell.score]
    if cell.score in run.report:
        return run.report[cell.score]
    raise KeyError(f"cell {cell.row!r}/{cell.col!r}: run {run.method!r} seed {run.seed} has no score "
                   f"{cell.score!r} (scores: {sorted(step_scores)}, report: {sorted(run.report)})")
