"""Each method's phase against a plain PyTorch loop doing the same math, per iteration.

Rows (generated 1x28x28 uint8 images, batch 128, one thread, process CPU
time; runs interleaved per repetition, the first repetition a warm-up;
medians of the per-repetition differences and ratios):

* ``m2kd``: one training epoch of :class:`~avalanche_sst.strategies.m2kd.M2KD`
  (``make_evaluator()``) at step 2, one snapshot teacher (the state is set
  without training step 1, as ``benchmarks/speed_m2kd.py`` does), against a
  plain loop over the same images: the teacher's forward
  (``snapshot_forward``), the student's, ``mmd_loss`` + ``ad_loss`` combined
  by ``m2kd_loss``, backward and the SGD step inside ``frozen_update``;
* ``adaqpacknet_infer``: ``strategy.eval`` of a trained
  :class:`~avalanche_sst.strategies.ada_qpacknet.AdaQPackNet` (decoded
  weights, task 0) on its test set, against a plain ``no_grad`` loop calling
  the same ``QuantizedMultiTaskModel(x, 0)`` and counting hits;
* ``edge_kt``: one epoch of the student's incremental step
  (``SupervisedTemplate`` + ``EdgeKTPlugin``, last convs only) against a
  plain loop: the student's forward, the teacher's under ``no_grad``,
  ``edge_kt_loss`` on the hooked block outputs, backward and an SGD step over
  the last convs and the classifier.

A training row times Avalanche's ``training_epoch`` (the loop over the
mini-batches with every per-iteration callback; the epoch's and the
experience's callbacks, e.g. M2KD closing its step, are left out); the
evaluation row times all of ``strategy.eval``. ``ms/it+`` is the framework's
time over the plain loop per iteration (an evaluation batch for
``adaqpacknet_infer``), ``x plain`` the ratio.

Usage::

    python benchmarks/speed.py --suite methods [--reps 5] [--samples 1024] [--csv PATH] [--doc docs/speed.md]
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

from avalanche.training.templates import SupervisedTemplate  # noqa: E402

from avalanche_sst.benchmarks import TensorImageDataset, class_incremental, new_class, task_incremental  # noqa: E402
from avalanche_sst.experiments.tables import machine_description  # noqa: E402
from avalanche_sst.functional.edge_transfer import edge_kt_loss  # noqa: E402
from avalanche_sst.functional.filter_pruning import prune_plan  # noqa: E402
from avalanche_sst.functional.m2kd_losses import ad_loss, m2kd_loss, mmd_loss  # noqa: E402
from avalanche_sst.functional.ownership import frozen_update  # noqa: E402
from avalanche_sst.metrics import make_evaluator  # noqa: E402
from avalanche_sst.models import build_model  # noqa: E402
from avalanche_sst.models.introspection import capture_block_outputs  # noqa: E402
from avalanche_sst.models.student import build_student, residual_groups  # noqa: E402
from avalanche_sst.plugins.edge_kt import EdgeKTPlugin, edge_trainable_parameters  # noqa: E402
from avalanche_sst.plugins.m2kd import grow_incremental_classifier  # noqa: E402
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet  # noqa: E402
from avalanche_sst.strategies.m2kd import M2KD  # noqa: E402
from speed_m2kd import prepare_m2kd_at_step  # noqa: E402
from speed_report import splice_into_doc  # noqa: E402

BATCH = 128


def images(n: int, classes: int, seed: int) -> TensorImageDataset:
    """uint8 1x28x28 images whose mean depends on the class (the nets learn something)."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(n) % classes
    base = (30 + 200 * ys.float() / max(classes - 1, 1)).view(-1, 1, 1, 1)
    x = (base + 40 * torch.randn(n, 1, 28, 28, generator=g)).round().clamp(0, 255).to(torch.uint8)
    return TensorImageDataset(x, ys)


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def epoch_timer(strategy) -> list:
    """CPU seconds of each ``training_epoch``: the template's loop over the mini-batches with every
    per-iteration callback (the epoch's and the experience's callbacks, e.g. M2KD closing its step, excluded)."""
    seconds, inner = [], strategy.training_epoch

    def timed(*args, **kwargs):
        start = time.process_time()
        inner(*args, **kwargs)
        seconds.append(time.process_time() - start)

    strategy.training_epoch = timed
    return seconds


def plain_loader(dataset, shuffle: bool = True) -> DataLoader:
    """The plain loops' loader: the experience's images as one uint8 dataset, its collate."""
    items = [dataset[i] for i in range(len(dataset))]
    data = TensorImageDataset(torch.stack([it[0] for it in items]), [int(it[1]) for it in items])
    return DataLoader(data, batch_size=BATCH, shuffle=shuffle, collate_fn=dataset.collate_fn)


# --- M2KD ----------------------------------------------------------------------------


def m2kd_pair(samples: int, model: str) -> tuple:
    bench = class_incremental(images(samples, 4, 0), images(64, 4, 1), classes_per_step=2, seed=0, augment=False)
    exp = bench.train_stream[1]

    def strategy():
        torch.manual_seed(0)
        net = build_model(model, num_classes=2, in_channels=1)
        s = M2KD(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9), finetune_epochs=0,
                 train_mb_size=BATCH, train_epochs=1, eval_mb_size=BATCH, evaluator=make_evaluator(), eval_every=-1)
        prepare_m2kd_at_step(s, 1)
        return s

    framework = strategy()
    seconds = epoch_timer(framework)

    def run_framework():
        framework.m2kd.boundaries, framework.m2kd.snapshots = framework.m2kd.boundaries[:1], framework.m2kd.snapshots[:1]
        framework.train(exp, eval_streams=[])  # closing the step appends a snapshot: undone above
        return seconds[-1]

    reference = strategy()
    plugin, net = reference.m2kd, reference.m2kd.network
    units = 4
    for head in (net.head, net.aux_head[-1] if hasattr(net, "aux_head") else None):
        if head is not None:
            grow_incremental_classifier(head, units)
    reference.experience = exp
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    reference.optimizer = optimizer
    plugin.before_training_exp(reference)  # phase, units, weight decay: the step's state
    loader, bounds = plain_loader(exp.dataset), [*plugin.boundaries, units]

    def plain_epoch():
        net.train()
        for x, y, *_ in loader:
            main, aux = plugin.snapshot_forward(0, x)
            optimizer.zero_grad()
            logits = net(x)
            loss = m2kd_loss(mmd_loss(logits, y, [torch.sigmoid(main)], bounds),
                             ad_loss(net.aux_logits(), y, [torch.sigmoid(aux)], bounds, plugin.alpha), plugin.lam)
            loss.backward()
            with frozen_update(plugin._layers(), plugin._frozen, plugin._zeroed):
                optimizer.step()

    return run_framework, lambda: cpu_seconds(plain_epoch), len(loader)


# --- Ada-QPacknet inference ------------------------------------------------------------


def adaqpacknet_pair(samples: int, model: str) -> tuple:
    bench = task_incremental(images(samples, 2, 0), images(2048, 2, 1), classes_per_step=2, seed=0,
                             validation_fraction=0.2, augment=False)
    torch.manual_seed(0)
    net = build_model(model, num_classes=2, in_channels=1, image_size=28)
    strategy = AdaQPackNet(model=net, valid_stream=bench.valid_stream, population=2, search_epochs=1, full_epochs=1,
                           train_mb_size=BATCH, eval_mb_size=BATCH, evaluator=make_evaluator())
    strategy.train(bench.train_stream[0], eval_streams=[])
    test = bench.test_stream[:1]
    loader = plain_loader(test[0].dataset, shuffle=False)
    model_ = strategy.model

    def plain_eval():
        model_.eval()
        correct = torch.zeros((), dtype=torch.long)
        with torch.no_grad():
            for x, y, *_ in loader:
                correct += (model_(x, 0).argmax(dim=1) == y).sum()
        return int(correct)

    return lambda: cpu_seconds(lambda: strategy.eval(test)), lambda: cpu_seconds(plain_eval), len(loader)


# --- edge: the student's knowledge-transfer step ---------------------------------------


def edge_pair(samples: int, model: str) -> tuple:
    bench = new_class(images(samples, 10, 0), images(200, 10, 1), base_classes=9, seed=0)
    torch.manual_seed(0)
    teacher = build_model(model, num_classes=10, in_channels=1)
    base = bench.train_stream[0].dataset.eval()
    batch = next(iter(DataLoader(base, batch_size=BATCH, collate_fn=base.collate_fn)))[0]
    widths = prune_plan(teacher, batch, 0.8).widths
    exp, classes = bench.train_stream[1], bench.classes_per_exp[0]

    def student():
        torch.manual_seed(0)
        return build_student(teacher, widths)

    framework_net = student()
    framework = SupervisedTemplate(
        model=framework_net, optimizer=torch.optim.SGD(framework_net.parameters(), lr=0.01, momentum=0.9),
        criterion=nn.CrossEntropyLoss(), train_mb_size=BATCH, train_epochs=1, eval_mb_size=BATCH,
        evaluator=make_evaluator(), eval_every=-1, plugins=[EdgeKTPlugin(teacher, teacher_classes=classes)])
    seconds = epoch_timer(framework)

    def run_framework():
        framework.train(exp, eval_streams=[])
        return seconds[-1]

    net = student()
    trainable = {id(p) for p in edge_trainable_parameters(net)}
    for p in net.parameters():
        p.requires_grad_(id(p) in trainable)
    optimizer = torch.optim.SGD([p for p in net.parameters() if id(p) in trainable], lr=0.01, momentum=0.9)
    loader = plain_loader(exp.dataset)
    t_groups, s_groups = residual_groups(teacher), residual_groups(net)

    def plain_epoch():
        net.train()
        for m in net.modules():  # the step's rule: BatchNorm statistics frozen
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        teacher.eval()
        with capture_block_outputs(teacher, [b for g in t_groups for b in g]) as t_out, \
                capture_block_outputs(net, [b for g in s_groups for b in g]) as s_out:
            for x, y, *_ in loader:
                optimizer.zero_grad()
                out = net(x)
                with torch.no_grad():
                    teacher_logits = teacher(x)
                t_maps, s_maps, start = [], [], 0
                for groups, flat, maps in ((t_groups, list(t_out), t_maps), (s_groups, list(s_out), s_maps)):
                    start = 0
                    for g in groups:
                        maps.append(flat[start:start + len(g)])
                        start += len(g)
                total, _, _ = edge_kt_loss(teacher_logits, out, t_maps, s_maps, y, 1.0, 1.0, 1.0, list(classes))
                total.backward()
                optimizer.step()

    return run_framework, lambda: cpu_seconds(plain_epoch), len(loader)


# --- main ------------------------------------------------------------------------------


def measure(pairs: dict, reps: int) -> list[dict]:
    times = {name: ([], []) for name in pairs}
    for rep in range(reps + 1):
        for name, (framework, plain, _) in pairs.items():
            order = (framework, plain) if rep % 2 else (plain, framework)
            results = [run() for run in order]
            if rep:
                f, p = results if rep % 2 else results[::-1]
                times[name][0].append(f)
                times[name][1].append(p)
    rows = []
    for name, (framework, plain) in times.items():
        iterations = pairs[name][2]
        rows.append({"phase": name, "iterations": iterations,
                     "plain_ms_per_it": statistics.median(plain) / iterations * 1e3,
                     "framework_ms_per_it": statistics.median(framework) / iterations * 1e3,
                     "overhead_ms_per_it": statistics.median([(f - p) / iterations * 1e3
                                                              for f, p in zip(framework, plain)]),
                     "x_plain": statistics.median([f / p for f, p in zip(framework, plain)])})
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'phase':<18} {'its':>4} {'plain ms/it':>12} {'method ms/it':>13} {'ms/it+':>8} {'x plain':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['phase']:<18} {r['iterations']:>4} {r['plain_ms_per_it']:>12.3f} "
                     f"{r['framework_ms_per_it']:>13.3f} {r['overhead_ms_per_it']:>+8.3f} {r['x_plain']:>8.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="timed repetitions after one warm-up")
    p.add_argument("--samples", type=int, default=1024, help="training images of each timed experience")
    p.add_argument("--m2kd-model", default="resnet8-w4")
    p.add_argument("--adaqpacknet-model", default="mlp-256")
    p.add_argument("--edge-model", default="resnet8-w4")
    p.add_argument("--csv", default=str(REPO / "benchmarks" / "results" / "speed_methods_cpu.csv"))
    p.add_argument("--doc", default=None, help="also splice the table into this markdown file's methods markers")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pairs = {"m2kd": m2kd_pair(2 * args.samples, args.m2kd_model),
             "adaqpacknet_infer": adaqpacknet_pair(args.samples, args.adaqpacknet_model),
             "edge_kt": edge_pair(10 * args.samples, args.edge_model)}
    rows = measure(pairs, args.reps)
    table = format_rows(rows)
    command = "python benchmarks/speed.py --suite methods " + " ".join(argv if argv is not None else sys.argv[1:])
    body = (f"`{command.strip()}` on {machine_description()}: models m2kd {args.m2kd_model}, adaqpacknet "
            f"{args.adaqpacknet_model}, edge {args.edge_model}; generated 1x28x28 images, batch {BATCH}; process "
            f"CPU time, median of {args.reps} repetitions after a warm-up, framework and plain loop interleaved:"
            f"\n\n```\n{table}\n```\n")
    print(body)
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    out.with_suffix(".md").write_text(body)
    print(f"written {out} and {out.with_suffix('.md')}")
    if args.doc:
        doc = Path(args.doc)
        splice_into_doc(doc, "methods", body)
        print(f"written the methods section of {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
