"""Shared fixtures: tiny generated image data sets (no downloads, a few ms each).

Also the ``isolated`` marker: a test that exercises a native path known to crash on some
CPUs (channels-last, bfloat16 autocast, other oneDNN kernels) runs in a fresh
``python -m pytest`` child process, so a segfault or abort fails that one test, with the
signal and faulthandler's traceback in its message, and the rest of the suite still runs.
A spawned child rather than a fork: forking after torch started its OpenMP threads is unsafe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Sequence

import pytest
import torch

from avalanche_sst.benchmarks import TensorImageDataset
from avalanche_sst.benchmarks.same_class import RelabelledSubset

# Two CPU cores are shared with long-running jobs: keep every test single-threaded.
torch.set_num_threads(1)

ISOLATED_CHILD_ENV = "AVALANCHE_SST_ISOLATED_CHILD"  # set in the child: run the test in-process there
ISOLATED_TIMEOUT_S = 600
ISOLATED_OUTPUT_CHARS = 12000  # the child's output tail kept in a failure message


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "isolated: run the test in a fresh `python -m pytest` child process, so a native crash "
        "fails only this test (with the signal named) instead of killing the whole suite")


def _isolated_outcome(returncode: int, output: str) -> tuple[str, str]:
    """("passed" | "skipped" | "failed", message) of a child pytest run of one test."""
    tail = output[-ISOLATED_OUTPUT_CHARS:]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return "failed", f"isolated test died with {name} in its child process; its output:\n{tail}"
    if returncode != 0:
        return "failed", f"isolated test failed in its child process (exit status {returncode}); its output:\n{tail}"
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    if "skipped" in summary and "passed" not in summary:
        reasons = [line for line in output.splitlines() if line.startswith("SKIPPED")]
        return "skipped", f"skipped in the isolated child: {' '.join(reasons) or summary}"
    return "passed", ""


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if pyfuncitem.get_closest_marker("isolated") is None or os.environ.get(ISOLATED_CHILD_ENV):
        return None
    root = pyfuncitem.config.rootpath
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", str(root),
               "-o", "addopts=", pyfuncitem.nodeid]
    try:
        done = subprocess.run(command, cwd=root, env={**os.environ, ISOLATED_CHILD_ENV: "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=ISOLATED_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        output = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"isolated test timed out after {ISOLATED_TIMEOUT_S} s in its child process:\n"
                    f"{output[-ISOLATED_OUTPUT_CHARS:]}", pytrace=False)
    outcome, message = _isolated_outcome(done.returncode, done.stdout)
    if outcome == "failed":
        pytest.fail(message, pytrace=False)
    if outcome == "skipped":
        pytest.skip(message)
    return True


def make_images(
    n_per_class: int | Sequence[int] = 40,
    seed: int = 0,
    classes: int = 4,
    size: int = 8,
    channels: int = 1,
) -> TensorImageDataset:
    """uint8 ``[N, C, size, size]`` images whose mean intensity depends on the class.

    ``n_per_class`` may list one count per class (a class-imbalanced set).
    Classes are well separated (means 40, 90, 140, 190; noise std 20), so even
    a tiny network learns them in an epoch or two.
    """
    counts = [n_per_class] * classes if isinstance(n_per_class, int) else list(n_per_class)
    g = torch.Generator().manual_seed(seed)
    ys = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    # Interleave the classes so that the data set is not sorted by label.
    ys = ys[torch.randperm(len(ys), generator=g)]
    base = (40 + 50 * ys).float().view(-1, 1, 1, 1)
    noise = 20 * torch.randn(len(ys), channels, size, size, generator=g)
    images = (base + noise).round().clamp(0, 255).to(torch.uint8)
    return TensorImageDataset(images, ys)


def spread_gamma_resnet8(seed: int = 0) -> torch.nn.Module:
    """A ResNet-8 (width 4, 3 classes, 1 channel) whose |gamma| are spread over [0, 1.5], as after
    SST (a fresh model's are all 1, and eq. 4's re-initialisation range would be empty)."""
    from avalanche_sst.models import resnet_cifar, scaling_factors

    torch.manual_seed(seed)
    model = resnet_cifar(depth=8, num_classes=3, in_channels=1, width=4)
    factors = scaling_factors(model)
    values = torch.linspace(0.0, 1.5, sum(f.bn.weight.numel() for f in factors))
    start = 0
    with torch.no_grad():
        for f in factors:
            f.bn.weight.copy_(values[start:start + f.bn.weight.numel()])
            start += f.bn.weight.numel()
    return model


def two_same_class_parts():
    """A same-class benchmark of two parts of 3 classes (8x8 images): 45 training and 15 validation
    images per part, 30 test images."""
    from avalanche_sst.benchmarks import same_class_accumulating

    g = torch.Generator().manual_seed(123)
    labels = torch.arange(3).repeat_interleave(40)
    images = (labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (120, 1, 8, 8), generator=g)).to(torch.uint8)
    test_labels = torch.arange(3).repeat_interleave(10)
    test_images = (test_labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (30, 1, 8, 8), generator=g))
    return same_class_accumulating(TensorImageDataset(images, labels),
                                   TensorImageDataset(test_images.to(torch.uint8), test_labels),
                                   ratios=(1, 1), seed=0, validation_fraction=0.25, padding=1)


def tiny_task_net() -> torch.nn.Module:
    """Conv(1->4, 3x3) (36 weights) + BatchNorm(4) + Linear(144->16) (2304) + head Linear(16->2)."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 36, 16), nn.ReLU(), nn.Linear(16, 2))


def two_binary_tasks():
    """Task-incremental, 2 tasks of 2 classes: 30 training, 10 validation images per task."""
    from avalanche_sst.benchmarks.scenarios import task_incremental

    torch.manual_seed(0)
    return task_incremental(make_images(20, seed=0, classes=4), make_images(6, seed=1, classes=4),
                            classes_per_step=2, seed=0, validation_fraction=0.25, augment=False)


@pytest.fixture
def fetches(monkeypatch) -> dict:
    """Counts of ``TensorImageDataset.gather`` and per-sample ``__getitem__`` calls."""
    calls = {"gather": 0, "getitem": 0}
    getitem, gather = TensorImageDataset.__getitem__, TensorImageDataset.gather

    def counting_getitem(self, index):
        calls["getitem"] += 1
        return getitem(self, index)

    def counting_gather(self, indices):
        calls["gather"] += 1
        return gather(self, indices)

    monkeypatch.setattr(TensorImageDataset, "__getitem__", counting_getitem)
    monkeypatch.setattr(TensorImageDataset, "gather", counting_gather)
    return calls


@pytest.fixture(scope="session")
def make_data():
    """The :func:`make_images` factory, for tests that need other sizes."""
    return make_images


@pytest.fixture
def tiny_data():
    """(train, test): 4 classes x 40 train / 20 test samples of 1x8x8 uint8 images."""
    return make_images(40, seed=0), make_images(20, seed=1)


def subset_of(exp_or_dataset) -> RelabelledSubset:
    """The RelabelledSubset an experience's Avalanche dataset wraps."""
    todo = [getattr(exp_or_dataset, "dataset", exp_or_dataset)]
    while todo:
        d = todo.pop()
        if isinstance(d, RelabelledSubset):
            return d
        todo.extend(getattr(d, "_datasets", None) or [])
    raise AssertionError("no RelabelledSubset inside the experience's dataset")


def paired_p_by_hand(diffs) -> float:
    """Two-sided p of a paired t-test over 3 seeds (df = 2), by hand: 1 - t / sqrt(t^2 + 2)."""
    import math

    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = abs(mean) / (sd / math.sqrt(3))
    return 1 - t / math.sqrt(t * t + 2)


class PlainDataset(torch.utils.data.Dataset):
    """``base``'s samples behind a plain torch Dataset (no ``gather``, not a TensorImageDataset);
    with ``targets=False`` it does not expose ``.targets`` either."""

    def __init__(self, base, targets: bool = True):
        self.base = base
        if targets:
            self.targets = base.targets

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]
