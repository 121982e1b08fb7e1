"""Shared fixtures: tiny generated image data sets (no downloads, a few ms each)."""

from __future__ import annotations

from typing import Sequence

import pytest
import torch

from avalanche_sst.benchmarks import TensorImageDataset
from avalanche_sst.benchmarks.same_class import RelabelledSubset

# Two CPU cores are shared with long-running jobs: keep every test single-threaded.
torch.set_num_threads(1)


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
