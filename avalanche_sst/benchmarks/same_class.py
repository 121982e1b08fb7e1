"""The "same-class accumulating data" scenario of Lee & Kim (2023), sec. IV-A.

One labelled training set is cut into disjoint random parts (1:1 for
single-step, 1:1:1:1 for multi-step, any ratios allowed). Every part holds
every class in the given proportions (stratified), each part is one training
experience, and every step is evaluated on the whole test set.

The benchmark is built with Avalanche's own ``benchmark_from_datasets`` and
``with_task_labels``, on task-aware classification datasets with task label 0,
so every Avalanche strategy (LwF and EWC included) runs on it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from avalanche.benchmarks.scenarios import benchmark_from_datasets, with_task_labels
from avalanche.benchmarks.utils.classification_dataset import (
    _make_taskaware_classification_dataset,
)

from .tensor_data import BatchCollate, TensorImageDataset, per_sample_transforms

DATA_PATHS = ("batched", "per_sample")


class RelabelledSubset(Dataset):
    """``base[indices]`` with its own targets (used for splits and label noise)."""

    def __init__(self, base: Dataset, indices: torch.Tensor, targets: torch.Tensor):
        self.base = base
        self.indices = indices.tolist()
        self.targets: list[int] = targets.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]][0], self.targets[i]

    def gather(self, positions: torch.Tensor):
        """``[self[i] for i in positions]`` as one batch, where ``base`` can gather (else None)."""
        if not callable(getattr(self.base, "gather", None)):
            return None
        if getattr(self, "_index_tensors", None) is None:
            self._index_tensors = (torch.as_tensor(self.indices, dtype=torch.long),
                                   torch.as_tensor(self.targets, dtype=torch.long))
        base_indices, targets = self._index_tensors
        batch = self.base.gather(base_indices.index_select(0, positions))
        if batch is None:
            return None
        batch.columns = [targets.index_select(0, positions)]
        return batch


def _targets_of(dataset, name: str) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(
            f"{name} has no `targets` attribute: the scenario needs the label of every "
            "sample to stratify; wrap it so that `dataset.targets` lists the labels"
        )
    return torch.as_tensor(list(targets) if not isinstance(targets, torch.Tensor) else targets).long()


def check_test_classes(train_targets: torch.Tensor, test_targets: torch.Tensor) -> None:
    """Raise if ``test`` holds a class that ``train`` never shows (no model could learn it)."""
    missing = sorted(set(test_targets.tolist()) - set(train_targets.tolist()))
    if missing:
        raise ValueError(
            f"test holds classes {missing} that train lacks: a model cannot learn them; "
            "drop those samples from test or pass a training set that holds them"
        )


def _proportional_counts(n: int, weights: Sequence[float]) -> list[int]:
    """Split ``n >= len(weights)`` items by ``weights`` (largest remainder; each part >= 1)."""
    total = float(sum(weights))
    exact = [n * w / total for w in weights]
    counts = [max(1, math.floor(e)) for e in exact]
    while sum(counts) > n:  # the max(1, .) floor can overshoot on tiny classes
        # take from the most over-served part that keeps one (as n >= len(weights), one does)
        i = max((j for j in range(len(counts)) if counts[j] > 1), key=lambda j: (counts[j] - exact[j], counts[j]))
        counts[i] -= 1
    order = sorted(range(len(counts)), key=lambda j: exact[j] - counts[j], reverse=True)
    for j in order[: n - sum(counts)]:
        counts[j] += 1
    return counts


def stratified_split(
    targets: torch.Tensor, ratios: Sequence[float], generator: torch.Generator
) -> list[torch.Tensor]:
    """Disjoint index sets, one per ratio, each holding every class.

    Per class the indices are shuffled with ``generator`` and cut by
    ``ratios`` (largest-remainder rounding, so each part's count is within 1
    of the exact proportion). Raises if a class has fewer samples than parts.
    """
    parts: list[list[torch.Tensor]] = [[] for _ in ratios]
    for cls in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == cls).flatten()
        if len(idx) < len(ratios):
            raise ValueError(
                f"class {cls} has {len(idx)} samples but ratios asks for {len(ratios)} parts; "
                "every part must hold every class: use fewer parts or more data"
            )
        idx = idx[torch.randperm(len(idx), generator=generator)]
        start = 0
        for p, count in enumerate(_proportional_counts(len(idx), ratios)):
            parts[p].append(idx[start : start + count])
            start += count
    return [torch.sort(torch.cat(p)).values for p in parts]


def inject_label_noise(
    targets: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Replace exactly ``round(fraction * len)`` labels by a different class."""
    noisy = targets.clone()
    n_noisy = int(math.floor(fraction * len(targets) + 0.5))
    if n_noisy == 0:
        return noisy
    which = torch.randperm(len(targets), generator=generator)[:n_noisy]
    # An offset in [1, C-1] guarantees the new label differs from the old one.
    offset = torch.randint(1, num_classes, (n_noisy,), generator=generator)
    noisy[which] = (targets[which] + offset) % num_classes
    return noisy


def classification_dataset(
    base: Dataset,
    indices: torch.Tensor,
    targets: torch.Tensor,
    task_label: int,
    augment: bool,
    data_path: str,
    mean: Sequence[float],
    std: Sequence[float],
    padding: int,
    image_size: int,
):
    """``base[indices]`` with ``targets``, as an Avalanche task-aware classification dataset.

    ``data_path="batched"``: uint8 samples, augmentation (``augment``) and
    normalisation done on the whole batch by :class:`BatchCollate`;
    ``"per_sample"``: the torchvision pipeline per sample.
    """
    data = RelabelledSubset(base, indices, targets)
    if data_path == "batched":
        return _make_taskaware_classification_dataset(
            data,
            task_labels=task_label,
            targets=data.targets,
            collate_fn=BatchCollate(mean, std, augment=augment, padding=padding),
        )
    tf = per_sample_transforms(mean, std, augment, image_size, padding)
    return _make_taskaware_classification_dataset(
        data,
        task_labels=task_label,
        targets=data.targets,
        transform_groups={
            "train": (tf, None),
            "eval": (per_sample_transforms(mean, std, False, image_size), None),
        },
    )


def _channel_stats(train: Dataset) -> tuple[list[float], list[float]]:
    if isinstance(train, TensorImageDataset):
        x = train.images.float().div_(255.0)
        return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()
    return [0.5], [0.5]


def _validate(ratios, validation_fraction, label_noise, data_path):
    if len(ratios) == 0:
        raise ValueError("ratios must have at least one entry, e.g. (1, 1, 1, 1)")
    for r in ratios:
        if not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
            raise ValueError(f"ratios must be positive numbers, got {tuple(ratios)}; e.g. (1, 1) or (0.5, 0.5)")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
    if data_path not in DATA_PATHS:
        raise ValueError(f"data_path must be one of {DATA_PATHS}, got {data_path!r}")


def link_streams(benchmark):
    """Give every stream of ``benchmark`` its ``.benchmark`` (returns ``benchmark``).

    Avalanche 0.6's ``benchmark_from_datasets`` leaves it None, so a plugin that reads
    the benchmark's ``.setting`` through ``experience.origin_stream.benchmark`` (M2KD's
    per-experience check) would never find it."""
    for stream in benchmark.streams.values():
        stream.benchmark = benchmark
    return benchmark


def same_class_accumulating(
    train: Dataset,
    test: Dataset,
    ratios: Sequence[float] = (1, 1, 1, 1),
    seed: int = 0,
    validation_fraction: float = 0.0,
    label_noise: float = 0.0,
    augment: bool = True,
    data_path: str = "batched",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    padding: int = 4,
):
    """Build the same-class accumulating benchmark.

    :param train: labelled training set (``.targets``); its samples must be
        uint8 ``[C, H, W]`` tensors (as every loader of
        :mod:`avalanche_sst.benchmarks.datasets` returns).
    :param test: the test set; the test stream has one experience holding all of it.
    :param ratios: relative size of each part; one training experience each.
    :param seed: seeds a local ``torch.Generator``; the global RNG is untouched.
    :param validation_fraction: if > 0, a stratified slice of each part is held
        out as that experience's ``valid_stream`` entry (AOD and MSL use it).
    :param label_noise: fraction of labels of every part after the first that
        are replaced by a wrong class (pseudo-labelled new data); part 1 stays clean.
    :param augment: random crop (``padding``) and horizontal flip on training data.
    :param data_path: ``"batched"`` (default): uint8 samples, augmentation and
        normalisation as tensor ops on the whole batch in the collate function;
        ``"per_sample"``: the classic per-sample torchvision pipeline.
    :param mean, std: normalisation; by default computed from ``train``.

    The benchmark carries ``.setting`` (``"same_class"``), ``.num_classes``,
    ``.ratios`` and ``.seed``; each stream's ``.benchmark`` is the benchmark.
    """
    ratios = tuple(ratios)
    _validate(ratios, validation_fraction, label_noise, data_path)
    train_targets = _targets_of(train, "train")
    test_targets = _targets_of(test, "test")
    check_test_classes(train_targets, test_targets)
    num_classes = int(max(train_targets.max(), test_targets.max())) + 1
    if mean is None or std is None:
        mean, std = _channel_stats(train)
    generator = torch.Generator().manual_seed(seed)

    parts = stratified_split(train_targets, ratios, generator)
    train_parts, valid_parts = [], []
    for k, idx in enumerate(parts):
        if validation_fraction > 0:
            part_targets = train_targets[idx]
            keep, held = stratified_split(part_targets, (1 - validation_fraction, validation_fraction), generator)
            valid_parts.append((idx[held], train_targets[idx[held]]))
            idx = idx[keep]
        targets = train_targets[idx]
        if k > 0 and label_noise > 0:
            targets = inject_label_noise(targets, label_noise, num_classes, generator)
        train_parts.append((idx, targets))

    image_size = int(test[0][0].shape[-1])

    def wrap(base, idx, targets, augment_this):
        return classification_dataset(
            base, idx, targets, task_label=0, augment=augment_this, data_path=data_path,
            mean=mean, std=std, padding=padding, image_size=image_size,
        )

    streams = {
        "train": [wrap(train, i, t, augment) for i, t in train_parts],
        "test": [wrap(test, torch.arange(len(test)), test_targets, False)],
    }
    if valid_parts:
        streams["valid"] = [wrap(train, i, t, False) for i, t in valid_parts]
    benchmark = link_streams(with_task_labels(benchmark_from_datasets(**streams)))
    benchmark.setting = "same_class"
    benchmark.num_classes = num_classes
    benchmark.ratios = ratios
    benchmark.seed = seed
    return benchmark
