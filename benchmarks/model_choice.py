"""Epoch time and accuracy of candidate default models on Fashion-MNIST (CPU).

    .venv/bin/python benchmarks/model_choice.py [--models resnet8 resnet14 resnet20]
        [--train-fraction 0.2] [--epochs 4] [--seed 0]

Each model trains from scratch with the sweep's settings (SGD 0.1, momentum
0.9, cosine, batch 128, batched augmentation) on the same stratified subset,
then is evaluated on the whole 10k test set. Prints seconds per 60k-sample
epoch (extrapolated from the measured samples/s), test Top-1 and parameters,
and writes benchmarks/results/model_choice.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import build_benchmark, build_model, load_dataset
from avalanche_sst.experiments.tables import machine_description
from avalanche_sst.metrics.validation import accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet8", "resnet14", "resnet20"])
    parser.add_argument("--train-fraction", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/model_choice.csv")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    data = load_dataset("fashion_mnist", None)
    rows = []
    for name in args.models:
        preset = Preset(model=name, ratios=(1,), train_fraction=args.train_fraction, validation_fraction=0.0)
        bm = build_benchmark(preset, args.seed, data)
        model = build_model(preset, bm, args.seed)
        dataset = bm.train_stream[0].dataset
        loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True, collate_fn=dataset.collate_fn)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))
        torch.manual_seed(args.seed)
        start, seen = time.perf_counter(), 0
        model.train()
        for _ in range(args.epochs):
            for x, y, *_ in loader:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                seen += len(y)
        rate = seen / (time.perf_counter() - start)
        top1 = accuracy(model, bm.test_stream[0].dataset)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, rate, 60000 / rate, top1, params))
        print(f"{name:10s} {rate:7.0f} samples/s  {60000 / rate:6.1f} s per 60k epoch  "
              f"test top-1 {100 * top1:5.2f}%  {params} parameters", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("model,train_samples_per_s,seconds_per_60k_epoch,test_top1,parameters\n" + "".join(
        f"{n},{r:.1f},{s:.1f},{a:.4f},{p}\n" for n, r, s, a, p in rows))
    print(f"{args.epochs} epochs on {args.train_fraction:.0%} of the training set, seed {args.seed}; "
          f"{machine_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
