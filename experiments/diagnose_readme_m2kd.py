"""Why does the README's M2KD example not learn later steps' classes? Per-step measurements.

Runs the README example (ResNet-8, SGD momentum 0.9 at a constant rate, batch
128, 10 + 2 epochs per step, Split Fashion-MNIST, 5 steps x 2 classes) on a
stratified ``--fraction`` of the training set, and scores on a disjoint
stratified held-out slice of the *training* set (``--heldout`` images per
class; never the test set). Variants (``--variants``) are M2KD keyword
overrides, e.g. ``lam=0``, ``prune_ratio=0``, ``lwf_mc`` (= teachers="last",
prune_ratio=0, lam=0). Per variant and step it records:

* ``free``: share of the backbone's Conv2d/Linear weights free (trainable) when the step starts;
* ``teacher_max_old``: on the step's new-class training images, the mean over
  images of the largest old-unit target (the snapshots' sigmoid scores, eq. 2);
* ``new_before_prune`` / ``new_after_prune`` / ``new_end``: held-out accuracy
  on the step's new classes before pruning, right after it (both with
  BatchNorm statistics recomputed for those weights) and at the end of the step;
* ``train_*``: the same three readings on the step's own training images (``prune_log``);
* ``as_old``: share of the held-out new-class images predicted as an old class at the end of the step;
* ``logit_new`` / ``logit_old``: mean over held-out new-class images of the largest new-unit /
  old-unit logit at the end of the step.

    python experiments/diagnose_readme_m2kd.py --fraction 0.1 --seeds 0 --variants default lam=0 prune_ratio=0 lwf_mc

Writes ``<out>/diagnosis.csv`` and ``<out>/diagnosis.md`` (generated; the command is in the file), and
with ``--doc docs/m2kd.md`` the same table into that page. Each run is kept in ``<out>/runs/`` and reused.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import sys
from pathlib import Path

import torch
from avalanche.training.plugins import EvaluationPlugin

from avalanche_sst.benchmarks import TensorImageDataset, class_incremental, fashion_mnist
from avalanche_sst.benchmarks.same_class import stratified_split
from avalanche_sst.functional.ownership import FREE, OWNER_BUFFER
from avalanche_sst.models import build_model
from avalanche_sst.strategies import M2KD

ALIASES = {"default": {}, "lwf_mc": {"teachers": "last", "prune_ratio": 0.0, "lam": 0.0},
           # control: eq. 2 with every old-unit target 0 (a BCE fine-tuning over the seen units)
           "zero_old_targets": {"zero_old_targets": True}}
COLUMNS = ["free", "teacher_max_old", "train_before_prune", "train_after_prune", "train_end_of_step",
           "new_before_prune", "new_after_prune", "new_end", "as_old", "logit_new", "logit_old"]


def parse_variant(text: str) -> dict:
    if text in ALIASES:
        return dict(ALIASES[text])
    out = {}
    for part in text.split(","):
        key, value = part.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def split_data(fraction: float, heldout_per_class: int, seed: int):
    """Training subset and a disjoint held-out slice of the training set (stratified)."""
    train, _ = fashion_mnist()
    targets = torch.as_tensor(train.targets)
    share = heldout_per_class * 10 / len(targets)
    idx_train, idx_held, _ = stratified_split(targets, (fraction, share, 1 - fraction - share),
                                              torch.Generator().manual_seed(seed))
    return (TensorImageDataset(train.images[idx_train], targets[idx_train]),
            TensorImageDataset(train.images[idx_held], targets[idx_held]))


def loader(exp, batch_size=500):
    data = exp.dataset.eval()
    return torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=data.collate_fn)


@torch.no_grad()
def new_class_reading(model, exp, seen: int) -> dict:
    """Held-out accuracy on the step's classes, share predicted as old, largest new/old logit."""
    was = model.training
    model.eval()
    correct = as_old = total = 0
    new_logit = old_logit = 0.0
    for x, y, *_ in loader(exp):
        logits = model(x)
        pred = logits.argmax(1)
        correct += int((pred == y).sum())
        as_old += int((pred < seen).sum())
        total += int(y.numel())
        new_logit += float(logits[:, seen:].max(1).values.sum())
        if seen:
            old_logit += float(logits[:, :seen].max(1).values.sum())
    model.train(was)
    model._captured = None
    return {"acc": correct / total, "as_old": as_old / total, "logit_new": new_logit / total,
            "logit_old": old_logit / total if seen else float("nan")}


def free_share(plugin) -> float:
    owners = [getattr(m, OWNER_BUFFER) for _, m in plugin._layers()]
    return float(sum(int((o == FREE).sum()) for o in owners) / sum(o.numel() for o in owners))


@torch.no_grad()
def teacher_max_old(plugin, exp, seen: int) -> float:
    """Mean over the step's training images of the largest old-unit target of eq. 2."""
    if not plugin.snapshots or seen == 0:
        return float("nan")
    bounds = list(plugin.boundaries)
    keep = range(len(plugin.snapshots)) if plugin.teachers == "all" else [len(plugin.snapshots) - 1]
    total, n = 0.0, 0
    for x, *_ in loader(exp):
        best = torch.zeros(x.shape[0])
        for k in range(len(plugin.snapshots)):
            teacher = k if plugin.teachers == "all" else max(keep)
            scores = torch.sigmoid(plugin.snapshot_forward(teacher, x)[0])
            lo = bounds[k - 1] if k else 0
            best = torch.maximum(best, scores[:, lo: bounds[k]].max(1).values)
        total += float(best.sum())
        n += x.shape[0]
    return total / n


def run(variant: dict, seed: int, fraction: float, heldout: int, lr: float) -> list[dict]:
    train, held = split_data(fraction, heldout, seed)
    split = class_incremental(train, held, classes_per_step=2, seed=seed)
    torch.manual_seed(seed)
    backbone = build_model("resnet8", num_classes=2, in_channels=1)
    kwargs = dict(train_mb_size=128, train_epochs=10 + 2, finetune_epochs=2, prune_ratio=0.75)
    zero_targets = variant.pop("zero_old_targets", False)
    kwargs.update(variant)
    m2kd = M2KD(model=backbone, optimizer=torch.optim.SGD(backbone.parameters(), lr=lr, momentum=0.9),
                evaluator=EvaluationPlugin(loggers=[]), **kwargs)
    plugin = m2kd.m2kd
    if zero_targets:
        teacher_forward = plugin.before_forward

        def zero_old_targets(strategy, **kw):
            teacher_forward(strategy, **kw)
            if plugin._teacher_scores is not None:
                main, aux = plugin._teacher_scores
                plugin._teacher_scores = ([torch.zeros_like(t) for t in main],
                                          [None if a is None else torch.zeros_like(a) for a in aux])

        plugin.before_forward = zero_old_targets
    rows = []
    for k, exp in enumerate(split.train_stream):
        seen = plugin.boundaries[-1] if plugin.boundaries else 0
        row = {"step": k + 1, "free": free_share(plugin), "teacher_max_old": teacher_max_old(plugin, exp, seen)}
        original = plugin.prune

        def prune_with_heldout(original=original, row=row, k=k, seen=seen):
            # as the plugin's own readings: BatchNorm statistics recomputed for these weights
            row["new_before_prune"] = new_class_reading_refreshed(m2kd, plugin, split.test_stream[k], seen)
            original()
            row["new_after_prune"] = new_class_reading_refreshed(m2kd, plugin, split.test_stream[k], seen)

        plugin.prune = prune_with_heldout
        m2kd.train(exp, eval_streams=[], num_workers=0)
        plugin.prune = original
        end = new_class_reading(m2kd.model, split.test_stream[k], seen)
        row.update(new_end=end["acc"], as_old=end["as_old"], logit_new=end["logit_new"], logit_old=end["logit_old"])
        log = plugin.prune_log[-1] if plugin.prune_log else {}
        for key in ("before_prune", "after_prune", "end_of_step"):
            row[f"train_{key}"] = log.get(key, float("nan"))
        rows.append(row)
        print(variant, seed, {c: round(v, 3) if isinstance(v, float) else v for c, v in row.items()}, flush=True)
    return rows


def new_class_reading_refreshed(strategy, plugin, exp, seen: int) -> float:
    """Held-out new-class accuracy with BatchNorm statistics recomputed on the step's training data
    for the current weights, the running statistics restored afterwards."""
    net = plugin.network
    saved = {k: v.clone() for k, v in net.state_dict().items()
             if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    plugin._refresh_bn(strategy, plugin._step_loader(strategy))
    acc = new_class_reading(net, exp, seen)["acc"]
    net.load_state_dict(saved, strict=False)
    return acc


def insert_between_markers(path: Path, name: str, lines: list[str]) -> None:
    """Replace the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in ``path``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} block: add the two markers where the table goes")
    head, rest = text.split(start, 1)
    path.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--heldout", type=int, default=200, help="held-out training images per class")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--variants", nargs="+", default=["default", "lam=0", "prune_ratio=0", "lwf_mc"])
    p.add_argument("--out", default="docs/runs/diagnosis/readme_m2kd")
    p.add_argument("--doc", default=None, help="also put the table between this file's m2kd-diagnosis markers")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python experiments/diagnose_readme_m2kd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants:
        for seed in args.seeds:
            # one file per run, reused by a rerun (the table of many variants is rebuilt in seconds)
            cached = out / "runs" / f"{name}_seed={seed}_fraction={args.fraction:g}_lr={args.lr:g}.json"
            if cached.exists():
                steps = json.loads(cached.read_text())
            else:
                steps = run(parse_variant(name), seed, args.fraction, args.heldout, args.lr)
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(steps))
            rows += [{"variant": name, "seed": seed, **row} for row in steps]
    header = ["variant", "seed", "step", *COLUMNS]
    with open(out / "diagnosis.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows({h: (f"{r[h]:.4f}" if isinstance(r.get(h), float) else r.get(h, "")) for h in header}
                         for r in rows)
    lines = [f"M2KD README example, per-step diagnosis (lr {args.lr:g}, {args.fraction:g} of the training set, "
             f"{args.heldout} held-out training images per class; columns: "
             f"`experiments/diagnose_readme_m2kd.py`'s docstring)",
             "", f"    {command}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[h]:.3f}" if isinstance(r.get(h), float) else str(r.get(h, ""))
                                       for h in header) + " |")
    if args.doc:
        insert_between_markers(Path(args.doc), "m2kd-diagnosis", lines)
    (out / "diagnosis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
