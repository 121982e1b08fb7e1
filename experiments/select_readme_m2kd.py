"""Choose the learning rate of the README's M2KD example on validation slices, by the selection rule.

The README example (ResNet-8, SGD momentum 0.9 at a constant rate, batch 128,
10 + 2 epochs per step, pruning 0.75; Split Fashion-MNIST, 5 steps x 2
classes) is run on a stratified ``--fraction`` of the training set with 10%
validation slices held out of every step, at every learning rate of a
log-spaced grid and every seed; the rate with the best mean final accuracy on
the validation slices of all classes is kept
(:func:`avalanche_sst.experiments.selection.best_mean`). The grid, every
seed's scores (final, and each step's new classes right after training on
them) and the choice go to ``docs/runs/selection/readme_m2kd/``.

    python experiments/select_readme_m2kd.py --grid 0.1:3.16:4 --seeds 0 1 2 --fraction 0.05
    python experiments/select_readme_m2kd.py --exemplars 2000 --record docs/runs/selection/readme_icarl_m2kd

``--exemplars N`` selects the paper's second setting instead: iCaRL with M2KD's losses
(:class:`~avalanche_sst.strategies.ICaRLM2KD`) keeping N exemplars on the full data, scaled to the subset
(``round(N * fraction)``), with iCaRL's nearest-mean-of-exemplars classifier at evaluation.

Each run's result is kept in ``<record>/runs/`` and reused by a rerun (``--only LR [--only-seed S]``
runs one grid point (one seed), so the runs can go in parallel processes; a last call without it writes
the choice).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import torch
from avalanche.training.plugins import EvaluationPlugin

from avalanche_sst.benchmarks import TensorImageDataset, class_incremental, fashion_mnist
from avalanche_sst.benchmarks.same_class import stratified_split
from avalanche_sst.experiments.provenance import code_text
from avalanche_sst.experiments.selection import best_mean, check_rule, parse_grid
from avalanche_sst.models import build_model
from avalanche_sst.strategies import M2KD, ICaRLM2KD


def subset(data: TensorImageDataset, fraction: float, seed: int) -> TensorImageDataset:
    """A stratified ``fraction`` of ``data``."""
    targets = torch.as_tensor(data.targets)
    idx = stratified_split(targets, (fraction, 1 - fraction), torch.Generator().manual_seed(seed))[0]
    return TensorImageDataset(data.images[idx], targets[idx])


@torch.no_grad()
def accuracy(model, experiences) -> float:
    model.eval()
    correct = total = 0
    for exp in experiences:
        data = exp.dataset.eval()
        for x, y, *_ in torch.utils.data.DataLoader(data, batch_size=500, collate_fn=data.collate_fn):
            correct += int((model(x).argmax(1) == y).sum())
            total += int(y.numel())
    return correct / total


def run(lr: float, seed: int, fraction: float, exemplars: int = 0) -> dict:
    """The README example at ``lr``: final validation accuracy and each step's new-class one
    (``exemplars``: ICaRLM2KD keeping that many on the full data, scaled to ``fraction``)."""
    train, test = fashion_mnist()
    split = class_incremental(subset(train, fraction, seed), test, classes_per_step=2, seed=seed,
                              validation_fraction=0.1)
    torch.manual_seed(seed)
    backbone = build_model("resnet8", num_classes=2, in_channels=1)
    common = dict(optimizer=torch.optim.SGD(backbone.parameters(), lr=lr, momentum=0.9), train_mb_size=128,
                  train_epochs=10 + 2, finetune_epochs=2, prune_ratio=0.75, evaluator=EvaluationPlugin(loggers=[]))
    m2kd = (ICaRLM2KD(model=backbone, memory_size=max(1, round(exemplars * fraction)), **common) if exemplars
            else M2KD(model=backbone, **common))
    new = []
    for k, exp in enumerate(split.train_stream):
        m2kd.train(exp, eval_streams=[], num_workers=0)
        new.append(accuracy(m2kd.model, [split.valid_stream[k]]))
    return {"final": accuracy(m2kd.model, split.valid_stream), "new": new}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="0.1:3.16:4", help="learning rates LOW:HIGH:N (log-spaced)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--fraction", type=float, default=0.05, help="stratified share of the 60k training images")
    p.add_argument("--record", default="docs/runs/selection/readme_m2kd")
    p.add_argument("--only", type=float, default=None, help="run this grid point only (no choice written)")
    p.add_argument("--only-seed", type=int, default=None, help="with --only: run this seed only")
    p.add_argument("--exemplars", type=int, default=0,
                   help="iCaRL M2KD with this many exemplars on the full data (0: exemplar-free M2KD)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    _, lrs = parse_grid(f"lr={args.grid}")
    if args.exemplars < 0:
        p.error(f"--exemplars must be >= 0 (0: exemplar-free M2KD), got {args.exemplars}")
    method = "icarl_m2kd" if args.exemplars else "m2kd"
    check_rule([method], {"lr": lrs}, args.seeds)
    command = "python experiments/select_readme_m2kd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record = Path(args.record)
    record.mkdir(parents=True, exist_ok=True)
    finals: dict[str, list[float]] = {}
    rows, codes = [], []
    for lr in lrs:
        name = f"{method}:lr={lr:g}"
        if args.only is not None and lr != args.only:
            continue
        for seed in args.seeds:
            if args.only_seed is not None and seed != args.only_seed:
                continue
            cached = record / "runs" / (f"lr={lr:g}_seed={seed}_fraction={args.fraction:g}"
                                        + (f"_exemplars={args.exemplars}" if args.exemplars else "") + ".json")
            if cached.exists():
                result = json.loads(cached.read_text())
            else:
                result = {**run(lr, seed, args.fraction, args.exemplars),
                          "code": code_text()}
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(result))
            codes.append(result.get("code", "not recorded"))
            finals.setdefault(name, []).append(result["final"])
            rows.append([name, seed, f"{result['final']:.6f}", *(f"{a:.6f}" for a in result["new"])])
            print(name, seed, f"final {100 * result['final']:.2f}",
                  "new", [f"{100 * a:.1f}" for a in result["new"]], flush=True)
    if args.only is not None:
        return 0
    with open(record / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "seed", "final", *(f"new_step{k + 1}" for k in range(len(rows[0]) - 3))])
        writer.writerows(rows)
    (name, score), = best_mean(finals, ["lr"]).values()
    new_means = {n: [statistics.fmean(float(r[3 + k]) for r in rows if r[0] == n) for k in range(len(rows[0]) - 3)]
                 for n in finals}
    what = f"iCaRL M2KD ({args.exemplars} exemplars, {round(args.exemplars * args.fraction)} on the subset)" \
        if args.exemplars else "M2KD"
    lines = [f"README {what} example: learning rate chosen on the validation slices (final accuracy on all "
             f"classes, %, mean over seeds {args.seeds}; new = each step's new classes right after training, "
             "mean over seeds)", "", f"    {command}", "",
             "| variant | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | new, steps 1-5 |",
             "|---|" + "---:|" * (len(args.seeds) + 1) + "---|"]
    for n, values in finals.items():
        lines.append(f"| {n} | " + " | ".join(f"{100 * v:.2f}" for v in values) +
                     f" | {100 * statistics.fmean(values):.2f} | " +
                     " / ".join(f"{100 * a:.1f}" for a in new_means[n]) + " |")
    lines += ["", f"Chosen (best mean): {name} ({100 * score:.2f}%)", "",
              f"Code: commit(s) {', '.join(dict.fromkeys(codes))}."]
    (record / "selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
