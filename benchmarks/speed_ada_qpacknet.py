"""Ada-QPacknet speed rows: inference of the decoded model against the float
model, and the cost of the per-task search.

One task of generated 1x28x28 uint8 images (class-dependent mean, so the net
learns something) is trained with :class:`AdaQPackNet`; then, in eval mode
and under ``torch.no_grad``:

* ``float``: a plain copy of the network holding the task's decoded weights
  and its fp32 tensors as ordinary parameters (the float model's speed);
* ``decoded``: ``QuantizedMultiTaskModel(x, task)``, decoding cached per task
  (the first call decodes; it is timed separately as ``first_decode``).

The two are interleaved per repetition; the ratio is the median of the
per-repetition ratios (target: decoded / float <= 1.10). Training rows:
``search`` (Alg. 1: P_S candidates x search epochs, with their validation),
``full`` (the winner's full training through Avalanche's loop),
``quantize`` (Alg. 2: k-means per bit-width tried, with validation), each in
seconds per task, and search / full.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_ada_qpacknet.py [--model mlp-256] [--device cpu]
        [--train-samples 2000] [--population 16] [--search-epochs 5] [--full-epochs 50]
        [--batch 128] [--reps 50] [--csv PATH]

Defaults are the paper's search sizes; shrink them on a CPU (e.g.
``--population 2 --search-epochs 1 --full-epochs 2 --train-samples 400``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from avalanche_sst.benchmarks import TensorImageDataset  # noqa: E402
from avalanche_sst.benchmarks.scenarios import task_incremental  # noqa: E402
from avalanche_sst.models import build_model  # noqa: E402
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet  # noqa: E402


def generated_images(n: int, classes: int, seed: int) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, classes, (n,), generator=g)
    base = (30 + 200 * ys.float() / max(classes - 1, 1)).view(-1, 1, 1, 1)
    images = (base + 40 * torch.randn(n, 1, 28, 28, generator=g)).round().clamp(0, 255).to(torch.uint8)
    return TensorImageDataset(images, ys)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, sink: dict, key: str):
    def wrapper(*args, **kwargs):
        sync(device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(device)
        sink[key] = sink.get(key, 0.0) + time.perf_counter() - t0
        return out
    return wrapper


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp-256")
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-samples", type=int, default=2000)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument("--full-epochs", type=int, default=50)
    p.add_argument("--batch", type=int, default=128, help="inference batch size")
    p.add_argument("--reps", type=int, default=50, help="timed inference repetitions (after 3 warm-ups)")
    p.add_argument("--csv", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

    bench = task_incremental(generated_images(args.train_samples, 2, 0), generated_images(200, 2, 1),
                             classes_per_step=2, seed=0, validation_fraction=0.2, augment=False)
    net = build_model(args.model, num_classes=bench.num_classes, in_channels=1, image_size=28)
    strategy = AdaQPackNet(model=net, valid_stream=bench.valid_stream, population=args.population,
                           search_epochs=args.search_epochs, full_epochs=args.full_epochs, train_mb_size=128,
                           eval_mb_size=1000, device=device)
    phases: dict = {}
    strategy._search = timed(strategy._search, device, phases, "search")
    strategy._quantize_and_commit = timed(strategy._quantize_and_commit, device, phases, "quantize")
    sync(device)
    t0 = time.perf_counter()
    strategy.train(bench.train_stream[0], eval_streams=[])
    sync(device)
    total = time.perf_counter() - t0
    phases["full"] = total - phases.get("search", 0.0) - phases["quantize"]
    model = strategy.model.eval()
    report = strategy.task_reports[0]

    x = torch.randn(args.batch, 1, 28, 28, device=device)
    with torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        model(x, 0)
        sync(device)
        first_decode = time.perf_counter() - t0
        reference = copy.deepcopy(model.net).eval()
        reference.load_state_dict(model.task_substitutions(0), strict=False)
        assert torch.allclose(reference(x), model(x, 0), atol=1e-5), "float copy must compute the same function"
        runs = {"float": lambda: reference(x), "decoded": lambda: model(x, 0)}
        times = {k: [] for k in runs}
        for rep in range(args.reps + 3):
            order = list(runs) if rep % 2 == 0 else list(reversed(list(runs)))
            for name in order:
                sync(device)
                t0 = time.perf_counter()
                runs[name]()
                sync(device)
                if rep >= 3:
                    times[name].append(time.perf_counter() - t0)
    ratio = statistics.median(d / f for d, f in zip(times["decoded"], times["float"]))
    rows = [
        {"row": "infer_float_ms", "value": 1e3 * statistics.median(times["float"])},
        {"row": "infer_decoded_ms", "value": 1e3 * statistics.median(times["decoded"])},
        {"row": "decoded_over_float", "value": ratio},
        {"row": "first_decode_ms", "value": 1e3 * first_decode},
        {"row": "search_s_per_task", "value": phases.get("search", 0.0)},
        {"row": "full_train_s_per_task", "value": phases["full"]},
        {"row": "quantize_s_per_task", "value": phases["quantize"]},
        {"row": "search_over_full", "value": phases.get("search", 0.0) / max(phases["full"], 1e-9)},
        {"row": "bits", "value": report["bits"]},
        {"row": "capacity_fraction", "value": report["capacity_fraction"]},
    ]
    print(f"# {args.model} on {device}, batch {args.batch}, P_S={args.population}, "
          f"search {args.search_epochs} ep, full {args.full_epochs} ep, {args.train_samples} samples")
    for row in rows:
        print(f"{row['row']:<24}{row['value']:>12.4f}")
    if ratio > 1.10:
        print(f"note: decoded/float = {ratio:.3f} is above the 1.10 target")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["row", "value"])
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
