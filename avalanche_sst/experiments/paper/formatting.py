"""A paper table's text: "mean ± std" cells, the paper-shaped grid, Markdown, and its files.

:func:`write_table` writes ``<table>.md`` / ``.csv`` / ``.json``; the readers
(:func:`read_table_csv`, :func:`read_runs_csv`) take them, and a sweep's
``runs.csv``, back for the report.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence

from avalanche_sst.experiments.paper.specs import LAST_STEP, TableSpec, resolve_overrides
from avalanche_sst.experiments.tables import mean_std_text


def step_text(step: int) -> str:
    """A cell's step in words: "step 3", or "the last step" for ``LAST_STEP``."""
    return "the last step" if step == LAST_STEP else f"step {step}"


def fmt_cell(mean: float, std: float, decimals: int = 2) -> str:
    """``"61.35 ± 0.12"``; "diverged" where a run of the cell diverged (NaN scores, experiments.divergence)."""
    return mean_std_text(mean, std, decimals)


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


def scenario_of(meta: Mapping) -> str:
    """The table's scenario as its meta records it (tables written before scenarios: their ratios)."""
    return meta.get("scenario") or f"ratios {meta.get('ratios', '?')}"


def score_sentence(meta: Mapping) -> str:
    """What the cells are: the setting's score, or (same-class data) the paper's Top-1 wording."""
    score = meta.get("score")
    if score is None or score == "Top-1 accuracy (%) on the whole test set":
        return "Top-1 % on the whole test set unless the column says otherwise"
    return score


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
        f"({meta['dataset']}, model {models_text(meta['models'])}, "
        f"{scenario_of(meta)}, "
        f"train fraction {meta['train_fraction']}).",
        f"{score_sentence(meta)}; mean ± std (sample std) over seeds {seeds} ({n_min} run(s) per cell).",
        "",
        markdown(header, body),
        "",
    ]
    if spec.cells:
        lines.append("Cells: " + "; ".join(f"{c.row} / {c.col} = `{c.method}` after {step_text(c.step)}"
                                           + (f" [{c.score}]" if c.score else "")
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


def models_text(models: Mapping) -> str:
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



def read_runs_csv(path: str | Path) -> list[dict]:
    """Rows of a sweep's ``runs.csv``: method, seed, step, top1, seconds, and any
    further columns of its header (cost, the setting's other scores, memory_bytes) as floats,
    ``git_commit`` as text and ``git_dirty`` as bool.

    Parsed from the right, so a method-variant name holding commas
    (``sst:sparsity=bst,use_msl=False``) survives whether or not the writer quoted it.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    trailing = rows[0][1:]  # every column after "method"
    out = []
    for r in rows[1:]:
        if len(r) <= len(trailing):
            continue
        row = {"method": ",".join(r[: len(r) - len(trailing)])}
        for name, value in zip(trailing, r[len(r) - len(trailing):]):
            row[name] = _cell(name, value)
        out.append(row)
    return out


def _cell(name: str, value: str):
    """A ``runs.csv`` cell: seed and step as int, the commit as text, the dirty flag as bool, else float."""
    if value == "":
        return None
    if name in ("seed", "step"):
        return int(value)
    if name == "git_commit":
        return value
    if name == "git_dirty":
        return value == "True"
    return float(value)
