"""Epoch time of M2KD against Naive with P = 1, 2, 4 snapshot teachers, and
M2KD's memory against iCaRL's exemplars (the paper's Table 2, in kind).

Speed: each snapshot teacher is one extra forward pass without gradients
(about a third of a training step), so the target is
``epoch(M2KD, P) <= 1.15 x (1 + P / 3) x epoch(Naive)``. The M2KD strategy
is put in the state it has at step P+1 (P finished steps: owner ids spread
over steps 0..P-1, P saved snapshots, a head over 2P classes) without
training those steps, then both strategies train one epoch on the same
experience of a generated class-incremental benchmark (2 classes per step).
Epochs are timed between ``before_training_epoch`` and ``after_training_epoch``;
repetitions are interleaved, the first is a warm-up; medians are reported.

Memory: bytes kept beyond one model after K steps (owner ids + every step's
BatchNorm, biases and heads), computed from the architecture (no training),
against ``memory_size`` exemplars of the benchmark's images stored as uint8.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_m2kd.py [--model resnet32] [--samples 2048]
        [--image-size 32] [--channels 3] [--batch-size 128] [--reps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_sst.benchmarks import TensorImageDataset, class_incremental
from avalanche_sst.models import build_model
from avalanche_sst.functional.ownership import OWNER_BUFFER
from avalanche_sst.plugins.m2kd import exemplar_bytes, grow_incremental_classifier, m2kd_memory_bytes
from avalanche_sst.strategies.m2kd import M2KD

warnings.filterwarnings("ignore")


class EpochTimer(SupervisedPlugin):
    def __init__(self, device):
        super().__init__()
        self.device, self.seconds, self._t0 = device, [], 0.0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def before_training_epoch(self, strategy, **kwargs):
        self._sync()
        self._t0 = time.perf_counter()

    def after_training_epoch(self, strategy, **kwargs):
        self._sync()
        self.seconds.append(time.perf_counter() - self._t0)


def synthetic_data(n: int, classes: int, size: int, channels: int, seed: int = 0) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, classes, (n,), generator=g)
    images = ((ys.float() * 20 + 30).view(-1, 1, 1, 1) + 25 * torch.randn(n, channels, size, size, generator=g))
    return TensorImageDataset(images.round().clamp(0, 255).to(torch.uint8), ys)


def _common(timer, batch_size, device):
    return dict(train_mb_size=batch_size, train_epochs=1, eval_mb_size=batch_size, device=device,
                evaluator=EvaluationPlugin(loggers=[]), plugins=[timer])


def prepare_m2kd_at_step(strategy: M2KD, snapshots: int, classes_per_step: int = 2) -> None:
    """Give ``strategy`` the state of step ``snapshots`` + 1 without training the earlier steps."""
    plugin, net = strategy.m2kd, strategy.m2kd.network
    units = classes_per_step * snapshots
    for head in (net.head, getattr(net, "aux_head", [None])[-1]):
        if head is not None:
            grow_incremental_classifier(head, units)
            head.active_units.fill_(1)
    g = torch.Generator().manual_seed(0)
    for _, m in plugin._layers():
        draw = torch.rand(m.weight.shape, generator=g)
        owner = getattr(m, OWNER_BUFFER)
        for k in range(snapshots):  # r of the free weights released at each step
            owner[(owner == 255) & (draw < 1 - plugin.prune_ratio ** (k + 1))] = k
    plugin.boundaries = [classes_per_step * (k + 1) for k in range(snapshots)]
    owned = {f"{n}.weight" for n, _ in plugin._layers()} if plugin.prune_ratio > 0 else set()
    state = {k: v.clone() for k, v in net.state_dict().items() if k not in owned and not k.endswith(OWNER_BUFFER)}
    plugin.snapshots = [dict(state) for _ in range(snapshots)]


def time_m2kd_epochs(model: str = "resnet8", samples: int = 512, image_size: int = 16, channels: int = 1,
                     batch_size: int = 64, reps: int = 2, snapshot_counts=(1, 2, 4), device: str = "cpu") -> list[dict]:
    """Median epoch seconds of Naive and of M2KD with P snapshots, and their ratio against the target."""
    dev = torch.device(device)
    steps = max(snapshot_counts) + 1
    data = synthetic_data(samples * steps // 2 + samples, 2 * steps, image_size, channels)
    bench = class_incremental(data, synthetic_data(64 * steps, 2 * steps, image_size, channels, seed=1),
                              classes_per_step=2, seed=0, augment=False)
    runs = {}
    timers = {}
    for p in snapshot_counts:
        torch.manual_seed(0)
        timers[p] = EpochTimer(dev)
        net = build_model(model, num_classes=2, in_channels=channels)
        s = M2KD(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9),
                 finetune_epochs=0, **_common(timers[p], batch_size, dev))
        prepare_m2kd_at_step(s, p)
        runs[p] = (s, bench.train_stream[p])
    torch.manual_seed(0)
    timers["naive"] = EpochTimer(dev)
    net = build_model(model, num_classes=2 * steps, in_channels=channels)
    runs["naive"] = (Naive(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9),
                           **_common(timers["naive"], batch_size, dev)), bench.train_stream[1])
    order = list(runs)
    for rep in range(reps + 1):
        for name in order[rep % len(order):] + order[: rep % len(order)]:
            strategy, exp = runs[name]
            if name != "naive":  # keep P teachers: undo the step the epoch just finished
                strategy.m2kd.boundaries = strategy.m2kd.boundaries[:name]
                strategy.m2kd.snapshots = strategy.m2kd.snapshots[:name]
            strategy.train(exp, eval_streams=[])
    naive = statistics.median(timers["naive"].seconds[1:])
    rows = []
    for p in snapshot_counts:
        sec = statistics.median(timers[p].seconds[1:])
        target = 1.15 * (1 + p / 3)
        rows.append({"snapshots": p, "naive_s": naive, "m2kd_s": sec, "ratio": sec / naive, "target": target,
                     "ok": sec / naive <= target})
    return rows


def memory_rows(model: str = "resnet32", classes: int = 100, classes_per_step: int = 10, prune_ratio: float = 0.75,
                image_shape=(3, 32, 32), memory_size: int = 2000) -> dict:
    """Bytes M2KD keeps beyond one model after all steps, against iCaRL's uint8 exemplars."""
    net = build_model(model, num_classes=2, in_channels=image_shape[0])
    torch.manual_seed(0)
    s = M2KD(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), prune_ratio=prune_ratio,
             evaluator=EvaluationPlugin(loggers=[]))
    plugin, steps = s.m2kd, classes // classes_per_step
    snapshot_bytes = []
    for k in range(steps):
        for head in (plugin.network.head, getattr(plugin.network, "aux_head", [None])[-1]):
            if head is not None:
                grow_incremental_classifier(head, classes_per_step * (k + 1))
        owned = {f"{n}.weight" for n, _ in plugin._layers()} if prune_ratio > 0 else set()
        snapshot_bytes.append(sum(t.numel() * t.element_size() for n, t in plugin.network.state_dict().items()
                                  if n not in owned and not n.endswith(OWNER_BUFFER)))
    ids = sum(getattr(m, OWNER_BUFFER).numel() for _, m in plugin._layers()) if prune_ratio > 0 else 0
    m2kd = m2kd_memory_bytes(ids, snapshot_bytes)
    icarl = exemplar_bytes(memory_size, image_shape)
    return {"m2kd_MB": m2kd / 2**20, "icarl_MB": icarl / 2**20, "icarl_over_m2kd": icarl / m2kd}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet32")
    ap.add_argument("--samples", type=int, default=2048, help="training images per experience")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    rows = time_m2kd_epochs(args.model, args.samples, args.image_size, args.channels, args.batch_size, args.reps,
                            device=args.device)
    print(f"{'P':>2} {'naive s':>8} {'m2kd s':>8} {'ratio':>6} {'target':>6} ok")
    for r in rows:
        print(f"{r['snapshots']:>2} {r['naive_s']:8.3f} {r['m2kd_s']:8.3f} {r['ratio']:6.2f} {r['target']:6.2f} "
              f"{'yes' if r['ok'] else 'NO'}")
    mem = memory_rows(args.model, image_shape=(args.channels, args.image_size, args.image_size))
    print(f"memory beyond one model, 10-class steps on 100 classes: M2KD {mem['m2kd_MB']:.3f} MB, "
          f"iCaRL 2000 exemplars {mem['icarl_MB']:.3f} MB ({mem['icarl_over_m2kd']:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
