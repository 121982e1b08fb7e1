"""On-device cost of the edge method (Zhao, Chen & Zhao, sec. 5.2.1, Table 6).

The paper's claim: the compressed students converge in the incremental
("9+1") step within 3-6 minutes on a phone CPU. This script times, on ONE CPU
thread, one epoch of:

* each student's incremental step (``EdgeKTPlugin``: teacher forward + the
  student with only its last conv per group and classifier learning), for
  every threshold P;
* the same student's step without the teacher (cross entropy on the same
  layers): the device's cost when the teacher's outputs are not computed there;
* the teacher's own epoch on the same data (every layer, cross entropy): what
  updating the uncompressed model on the device would cost;

and reports seconds per epoch, the student/teacher epoch-time ratio and the
memory peak. Every measurement runs in a fresh process so its peak resident
set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own; the peak
above the process's footprint before training is given too.

The teacher is first trained briefly (``--teacher-epochs``) on the base
classes so that the pruning rule sees real activation patterns. Data: the
new-class benchmark on Fashion-MNIST when ``--dataset fashion_mnist`` is
available, else generated images (``--dataset synthetic``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_edge.py [--model resnet20] [--thresholds 1.0 0.9 0.8 0.7]
        [--dataset synthetic|fashion_mnist] [--images-per-class N] [--size S] [--batch-size B]
        [--teacher-epochs N] [--repeats N] [--csv PATH]

Time to converge = seconds per epoch x the epochs the step needs (the paper:
its incremental runs to convergence; the ``full`` preset: ``epochs_finetune``).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _synthetic(images_per_class: int, size: int, channels: int, classes: int, seed: int):
    from avalanche_sst.benchmarks import TensorImageDataset

    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(classes).repeat_interleave(images_per_class)
    base = (20 + 220 * ys.float() / max(classes - 1, 1)).view(-1, 1, 1, 1)
    x = (base + 25 * torch.randn(len(ys), channels, size, size, generator=g)).round().clamp(0, 255)
    return TensorImageDataset(x.to(torch.uint8), ys)


def _benchmark(args):
    from avalanche_sst.benchmarks import new_class

    if args.dataset == "fashion_mnist":
        from avalanche_sst.benchmarks import fashion_mnist

        train, test = fashion_mnist(args.data_root)
    else:
        train = _synthetic(args.images_per_class, args.size, args.channels, 10, 0)
        test = _synthetic(max(args.images_per_class // 4, 2), args.size, args.channels, 10, 1)
    return new_class(train, test, base_classes=9, seed=0)


def _evaluator():
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin(loggers=[])


def _template(model, args, epochs: int, plugins=()):
    from avalanche.training.templates import SupervisedTemplate

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return SupervisedTemplate(model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
                              train_mb_size=args.batch_size, train_epochs=epochs, eval_mb_size=256,
                              evaluator=_evaluator(), eval_every=-1, plugins=list(plugins))


def _child(kind: str, threshold: float, args, teacher_path: str, queue) -> None:
    """One measurement in a fresh process: (seconds per epoch, params, peak RSS MiB, RSS before)."""
    torch.set_num_threads(1)
    from avalanche_sst.functional.filter_pruning import prune_plan
    from avalanche_sst.metrics.validation import validation_data
    from avalanche_sst.models import build_model
    from avalanche_sst.models.student import build_student
    from avalanche_sst.plugins.edge_kt import EdgeKTPlugin, LastConvsOnlyPlugin

    bench = _benchmark(args)
    channels = int(bench.test_stream[0].dataset[0][0].shape[0])
    teacher = build_model(args.model, num_classes=bench.num_classes, in_channels=channels)
    teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
    if kind == "teacher":
        model, plugins = teacher, []
    else:
        base = validation_data(bench.train_stream[0])  # the base classes' images, augmentation off
        batch = next(iter(torch.utils.data.DataLoader(base, batch_size=args.batch_size, shuffle=False,
                                                      collate_fn=getattr(base, "collate_fn", None))))[0]
        torch.manual_seed(0)
        model = build_student(teacher, prune_plan(teacher, batch, threshold).widths)
        plugins = ([EdgeKTPlugin(teacher, teacher_classes=bench.classes_per_exp[0])] if kind == "student_kt"
                   else [LastConvsOnlyPlugin()])
    strategy = _template(model, args, 1, plugins)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(args.repeats + 1):  # the first epoch warms up
        t0 = time.perf_counter()
        strategy.train(bench.train_stream[1], eval_streams=[])
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    queue.put((statistics.median(times[1:]), params, peak, rss_before))


def _measure(kind: str, threshold: float, args, teacher_path: str):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, threshold, args, teacher_path, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7])
    p.add_argument("--dataset", choices=("synthetic", "fashion_mnist"), default="synthetic")
    p.add_argument("--data-root", default=None)
    p.add_argument("--images-per-class", type=int, default=600)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--teacher-epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results" / "speed_edge_cpu.csv")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from avalanche_sst.functional.filter_pruning import check_threshold
    from avalanche_sst.models import build_model

    for t in args.thresholds:
        check_threshold(t)
    bench = _benchmark(args)
    channels = int(bench.test_stream[0].dataset[0][0].shape[0])
    torch.manual_seed(0)
    teacher = build_model(args.model, num_classes=bench.num_classes, in_channels=channels)
    t0 = time.perf_counter()
    _template(teacher, args, args.teacher_epochs).train(bench.train_stream[0], eval_streams=[])
    print(f"teacher {args.model}: {args.teacher_epochs} epoch(s) on the base classes in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "teacher.pt")
        torch.save(teacher.state_dict(), path)
        t_sec, t_params, t_peak, t_before = _measure("teacher", 1.0, args, path)
        rows.append({"model": f"teacher {args.model}", "P": "", "params": t_params, "s_per_epoch": t_sec,
                     "epoch_ratio_vs_teacher": 1.0, "peak_rss_mib": t_peak, "peak_above_start_mib": t_peak - t_before})
        for threshold in args.thresholds:
            for kind, label in (("student_kt", "student (KT step)"), ("student_ce", "student (no teacher)")):
                sec, params, peak, before = _measure(kind, threshold, args, path)
                rows.append({"model": label, "P": threshold, "params": params, "s_per_epoch": sec,
                             "epoch_ratio_vs_teacher": sec / t_sec, "peak_rss_mib": peak,
                             "peak_above_start_mib": peak - before})

    n_new = len(bench.train_stream[1].dataset)
    print(f"\nincremental epoch on {n_new} new-class images, batch {args.batch_size}, 1 CPU thread, "
          f"median of {args.repeats}")
    header = ["model", "P", "params", "s_per_epoch", "epoch_ratio_vs_teacher", "peak_rss_mib", "peak_above_start_mib"]
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in header))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwritten to {args.csv}")


if __name__ == "__main__":
    main()
