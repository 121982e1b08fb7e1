"""Machine description and data of ``benchmarks/speed.py``."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from avalanche_sst.benchmarks import TensorImageDataset, same_class_accumulating, stratified_split


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    info = {"cpu": cpu, "cores": cores, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def generated_data(spec: str, n_train: int, n_test: int, classes: int = 10):
    """``generated:CxHxW``: random uint8 images of 10 classes (timing only: the labels mean nothing)."""
    try:
        c, h, w = (int(v) for v in spec.split(":", 1)[1].lower().split("x"))
    except ValueError:
        raise SystemExit(f"--data {spec!r}: expected fashion-mnist or generated:CxHxW, e.g. generated:3x32x32")
    g = torch.Generator().manual_seed(0)

    def part(n):
        return TensorImageDataset(torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g),
                                  torch.arange(n) % classes)

    return part(n_train), part(n_test)


def load_data(train_samples: int, validation_fraction: float, data_root=None, data: str = "fashion-mnist",
              test_samples: int = 10000):
    from avalanche_sst.benchmarks import fashion_mnist

    if data.startswith("generated:"):
        train, test = generated_data(data, train_samples, test_samples or 10000)
    elif data == "fashion-mnist":
        train, test = fashion_mnist(data_root)
    else:
        raise SystemExit(f"--data {data!r}: expected fashion-mnist or generated:CxHxW, e.g. generated:3x32x32")
    n = len(train)
    if train_samples < n:
        targets = torch.as_tensor(train.targets)
        frac = train_samples / n
        keep, _ = stratified_split(targets, (frac, 1 - frac), torch.Generator().manual_seed(0))
        train = TensorImageDataset(train.images[keep], targets[keep], train.classes)
    benchmark = same_class_accumulating(train, test, ratios=(1,), seed=0,
                                        validation_fraction=validation_fraction)
    return benchmark, test


def materialize(dataset) -> TensorImageDataset:
    """The uint8 images and labels of an Avalanche experience's dataset."""
    items = [dataset[i] for i in range(len(dataset))]
    return TensorImageDataset(torch.stack([it[0] for it in items]), [int(it[1]) for it in items])


def load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return None
