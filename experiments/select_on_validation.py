"""Choose the compared methods' hyperparameters of a paper table on the validation slices, by one rule.

The rule (:mod:`avalanche_sst.experiments.selection`): every method gets the
same grid (at least 4 log-spaced values per continuous hyperparameter), at
least 3 seeds, the preset run with ``evaluate_on="valid"`` (the validation
slices held out of every training part are the scored stream, never the test
set), and the grid point with the best mean final score over the seeds is
kept. The grid, every seed's score and the choice go to
``docs/runs/selection/<table>/`` (``--record``); the runs to ``--out``.

    python experiments/select_on_validation.py m2kd_fig4 --grid lr_factor=0.1,0.316,1,3.16,10,31.6 --seeds 0 1 2

``--methods`` defaults to every method of the table (a subset or other variants may be named).
``lr_factor`` is understood by every method: it scales the preset's ``lr_scratch`` and
``lr_finetune`` (the BCE methods' own ``lr_factor`` means the same), and a grid value replaces
the factor a preset's ``method_kwargs`` carries, so every compared method gets the same rates.
The record ends with the chosen values as the preset's ``method_kwargs`` entries; with ``--shared``
also the one value that is best on average over every method (for an ablation ladder, whose rungs
must share their settings: ``m2kd_ladder``).

The score is the table's ``selection_score`` where it declares one (M2KD's per-step curves:
``avg_incremental``, the mean over steps of the accuracy on the classes seen), else the
setting's primary one; ``--score`` picks another, e.g. ``--score mean`` (new_class: the plain
mean of old- and new-class accuracy);
``--set field=value`` changes a preset field for this selection (say why in the table's notes).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from avalanche_sst.experiments.paper import PRESET_NAMES, TABLES
from avalanche_sst.experiments.selection import (at_grid_edge, best_mean, best_shared, check_rule, chosen_values,
                                                 compared_method, grid_variants, parse_grid)
from avalanche_sst.experiments.sweep import run_sweep


def write_record(record: Path, command: str, grid: dict, seeds, per_seed: dict, best: dict, score_name: str,
                 shared: tuple | None = None) -> str:
    """``selection.md`` (grid, mean per grid point, choice) and ``scores.csv`` (every seed's score)."""
    record.mkdir(parents=True, exist_ok=True)
    with open(record / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "seed", score_name])
        for name, by_seed in per_seed.items():
            for seed, value in sorted(by_seed.items()):
                writer.writerow([name, seed, f"{value:.6f}"])
    lines = [f"Validation-slice selection, final {score_name} (%), mean over seeds {list(seeds)}:", "",
             f"    {command}", "", "Grid: " + "; ".join(f"{k} = {', '.join(f'{v:g}' for v in vs)}"
                                                     for k, vs in grid.items()), "",
             "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    for name, by_seed in per_seed.items():
        cells = [_percent(by_seed[s]) if s in by_seed else "" for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_percent(statistics.fmean(by_seed.values()))} |")
    if any(math.isnan(v) for by_seed in per_seed.values() for v in by_seed.values()):
        lines += ["", "diverged: the run's weights or outputs left the finite numbers (experiments/divergence.py); "
                      "a grid point with a diverged seed is never chosen."]
    chosen = chosen_values(best, list(grid))
    edge = at_grid_edge(chosen, grid)
    lines += ["", "Chosen (best mean): " + ", ".join(f"{n} ({100 * s:.2f}%)" for n, s in best.values()), "",
              "At the grid's edge (a value beyond it may score better: extend the grid): " + "; ".join(edge)
              if edge else "No choice sits at the grid's edge.", "",
              "As the preset's method_kwargs (a variant's value goes into the table's method name instead):", "",
              f"    {chosen}"]
    if shared is not None:
        lines += ["", f"Shared (one value for every method, best mean over every method and seed): "
                      f"{', '.join(f'{k}={v:g}' for k, v in shared[0].items())} ({100 * shared[1]:.2f}%)"]
    text = "\n".join(lines) + "\n"
    (record / "selection.md").write_text(text)
    return text


def _percent(value: float) -> str:
    return "diverged" if math.isnan(value) else f"{100 * value:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", choices=sorted(TABLES))
    p.add_argument("--methods", nargs="+", default=None,
                   help="the compared methods (variants allowed); default: every method of the table")
    p.add_argument("--grid", nargs="+", required=True, type=parse_grid, metavar="KEY=LOW:HIGH:N",
                   help="log-spaced values given to every method, e.g. lr_factor=1:31.6:4")
    p.add_argument("--preset", default="cpu", choices=PRESET_NAMES, help="the table's preset to select in")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default=None, help="the sweep's folder (default results/selection/<table>)")
    p.add_argument("--record", default=None, help="where the choice is written (default docs/runs/selection/<table>)")
    p.add_argument("--shared", action="store_true",
                   help="also choose one value for every method (an ablation whose rungs share their settings)")
    p.add_argument("--score", default=None,
                   help="the setting's score to select on (default: the table's selection_score, else the "
                        "setting's primary score, e.g. weighted_mean)")
    args = p.parse_args(argv)
    args.score = args.score or TABLES[args.table].selection_score
    grid = dict(args.grid)
    # a table method that carries its chosen grid value (m2kd:lam=0,lr_factor=31.6) is selected as m2kd:lam=0
    methods = args.methods or list(dict.fromkeys(compared_method(m, list(grid)) for m in TABLES[args.table].methods()))
    try:
        check_rule(methods, grid, args.seeds)
    except ValueError as err:
        raise SystemExit(f"select_on_validation: {err}")
    variants = grid_variants(methods, grid)
    preset = TABLES[args.table].preset(args.preset).replace(
        methods=tuple(variants), seeds=tuple(args.seeds), validation_fraction=args.validation_fraction,
        evaluate_on="valid").with_settings(args.set)
    out = Path(args.out or f"results/selection/{args.table}")
    command = "python experiments/select_on_validation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_sweep(preset, out, command=command, workers=args.workers)
    per_seed: dict[str, dict[int, float]] = defaultdict(dict)
    for r in results:
        if args.score is not None and args.score not in r.scores[-1]:
            raise SystemExit(f"--score {args.score!r}: the runs' scores are {sorted(r.scores[-1])}")
        per_seed[r.method][r.seed] = r.accuracies[-1] if args.score is None else r.scores[-1][args.score]
    per_seed = {name: per_seed[name] for name in variants if name in per_seed}
    by_variant = {name: list(v.values()) for name, v in per_seed.items()}
    best = best_mean(by_variant, list(grid))
    shared = best_shared(by_variant, list(grid)) if args.shared else None
    score_name = args.score or (next(iter(results[0].scores[-1])) if results and results[0].scores else "top1")
    record = Path(args.record or f"docs/runs/selection/{args.table}")
    print(write_record(record, command, grid, args.seeds, per_seed, best, score_name, shared))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
