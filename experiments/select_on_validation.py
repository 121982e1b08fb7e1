"""Choose a method's hyperparameter on the validation slices, never on the test set.

Runs ``--methods`` (variants included, e.g. ``m2kd:lr_factor=1 m2kd:lr_factor=10``)
of a paper table's preset with ``evaluate_on="valid"`` (the validation slices
held out of every training part are the scored stream) and prints, per base
method, the variant with the best mean final score over the seeds.

    python experiments/select_on_validation.py m2kd_fig4 --methods m2kd:lr_factor=1 m2kd:lr_factor=10

``--score`` picks another score of the setting than its primary one, e.g.
``--score mean`` (new_class: the plain mean of old- and new-class accuracy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from avalanche_sst.experiments.paper import TABLES
from avalanche_sst.experiments.registry import parse_variant
from avalanche_sst.experiments.sweep import run_sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", choices=sorted(TABLES))
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--score", default=None,
                   help="the setting's score to select on (default: its primary score, e.g. weighted_mean)")
    args = p.parse_args(argv)
    preset = TABLES[args.table].presets["cpu"].replace(
        methods=tuple(args.methods), seeds=tuple(args.seeds),
        validation_fraction=args.validation_fraction, evaluate_on="valid")
    out = Path(args.out or f"results/selection/{args.table}")
    command = "python experiments/select_on_validation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_sweep(preset, out, command=command, workers=args.workers)
    final = defaultdict(list)
    for r in results:
        if args.score is not None and args.score not in r.scores[-1]:
            raise SystemExit(f"--score {args.score!r}: the runs' scores are {sorted(r.scores[-1])}")
        final[r.method].append(r.accuracies[-1] if args.score is None else r.scores[-1][args.score])
    best = {}
    for name, values in final.items():
        base = parse_variant(name)[0]
        score = statistics.fmean(values)
        if base not in best or score > best[base][1]:
            best[base] = (name, score)
    score_name = args.score or (next(iter(results[0].scores[-1])) if results and results[0].scores else "top1")
    lines = [f"Validation-slice selection ({command}), final {score_name}:", ""]
    lines += [f"- {name}: final {100 * statistics.fmean(v):.2f}%" for name, v in final.items()]
    lines += ["", "Chosen: " + ", ".join(f"{n} ({100 * s:.2f}%)" for n, s in best.values())]
    (out / "selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
