"""Class-split continual-learning scenarios on the uint8 tensor data path.

- :func:`class_incremental`: disjoint class groups, one growing head, no task
  labels (M2KD's setting, seed 002);
- :func:`task_incremental`: the same groups with task label k for
  experience k and labels from 0 in each task (Ada-QPacknet, seed 003);
- :func:`permuted`: every task holds all classes under its own fixed pixel
  permutation (the first unpermuted), with task labels;
- :func:`new_class`: the "9+1" setting of the edge filter-pruning paper
  (seed 004, Tables 4-5): base classes, then the rest;
- :func:`unseen_class`: that paper's sec. 4.2 (Table 7): a teacher pre-trained
  on all classes, a student that sees images of ``seen_classes`` classes only
  and is tested on the others.

Each benchmark is made of Avalanche task-aware classification datasets (the
:class:`~avalanche_sst.benchmarks.tensor_data.BatchCollate` fast path, as in
:func:`~avalanche_sst.benchmarks.same_class.same_class_accumulating`) put
together by Avalanche's ``benchmark_from_datasets``, ``with_task_labels`` and
``with_classes_timeline`` (so ``classes_in_this_experience``, which
``MultiHeadClassifier`` and iCaRL read, is set). Avalanche's
``class_incremental_benchmark`` is not used: it seeds the global RNG, does not
relabel, and ``task_incremental_benchmark`` does not restart labels per task.

Every benchmark carries ``.setting``, ``.class_order`` (original class ids),
``.class_groups`` (original ids per training experience),
``.classes_per_exp`` (labels each training experience uses, after
relabelling), ``.num_classes`` (units a single head needs), ``.seed`` and
``.valid_stream`` (per-experience stratified slices held out of the training
data, or ``None`` when ``validation_fraction`` is 0); each stream's
``.benchmark`` is the benchmark, so ``experience.origin_stream.benchmark.setting``
names the setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from avalanche.benchmarks.scenarios import benchmark_from_datasets, with_task_labels
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline

from .class_split import (
    check_class_order,
    draw_class_order,
    group_sizes,
    permute_pixels,
    pixel_permutations,
    present_classes,
    relabel_table,
    select_classes,
    split_groups,
    validation_split,
)
from .same_class import (
    DATA_PATHS,
    _channel_stats,
    _targets_of,
    check_test_classes,
    classification_dataset,
    link_streams,
)

_TIMELINE = ("classes_in_this_experience", "previous_classes", "classes_seen_so_far", "future_classes")
SETTINGS = ("same_class", "class_incremental", "task_incremental", "new_class", "unseen_class")


class PermutedImages(Dataset):
    """``base`` with the pixels of every image moved by a fixed permutation."""

    def __init__(self, base: Dataset, permutation: Optional[torch.Tensor]):
        self.base = base
        self.permutation = permutation
        self.targets = base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, target = self.base[index]
        return permute_pixels(image, self.permutation), target

    def gather(self, indices: torch.Tensor):
        """``[self[i] for i in indices]`` as one batch (None where ``base`` cannot gather)."""
        batch = self.base.gather(indices) if callable(getattr(self.base, "gather", None)) else None
        if batch is not None and self.permutation is not None:
            n, c = batch.images.shape[:2]
            batch.images = batch.images.reshape(n, c, -1)[:, :, self.permutation].reshape(batch.images.shape)
        return batch


@dataclass
class _DataPath:
    """How samples become Avalanche datasets (shared by every stream of a benchmark)."""

    augment: bool
    data_path: str
    mean: Sequence[float]
    std: Sequence[float]
    padding: int
    image_size: int

    def dataset(self, base, indices, targets, task_label: int, training: bool):
        return classification_dataset(
            base, indices, targets, task_label=task_label, augment=self.augment and training,
            data_path=self.data_path, mean=self.mean, std=self.std, padding=self.padding,
            image_size=self.image_size,
        )


def _prepare(train, test, validation_fraction, augment, data_path, mean, std, padding):
    """Check the inputs; return (train targets, test targets, class count, data path)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if data_path not in DATA_PATHS:
        raise ValueError(f"data_path must be one of {DATA_PATHS}, got {data_path!r}")
    train_targets = _targets_of(train, "train")
    test_targets = _targets_of(test, "test")
    num_classes = len(present_classes(train_targets))
    check_test_classes(train_targets, test_targets)
    if len(test_targets) == 0:
        raise ValueError("test is empty: pass a test set with samples of the classes to evaluate")
    if mean is None or std is None:
        mean, std = _channel_stats(train)
    path = _DataPath(augment, data_path, mean, std, padding, int(test[0][0].shape[-1]))
    return train_targets, test_targets, num_classes, path


def _finish(streams: dict, **attributes):
    """An Avalanche benchmark from ``{stream name: [datasets]}``, with our attributes."""
    benchmark = link_streams(with_classes_timeline(with_task_labels(benchmark_from_datasets(**streams))))
    for stream in benchmark.streams.values():
        for experience in stream:
            # with_classes_timeline stores sets; its protocol (and MultiHeadClassifier,
            # which indexes a tensor with them) wants lists.
            for name in _TIMELINE:
                setattr(experience, name, sorted(getattr(experience, name)))
    benchmark.valid_stream = getattr(benchmark, "valid_stream", None)
    for name, value in attributes.items():
        setattr(benchmark, name, value)
    return benchmark


def _class_split(
    train, test, sizes_for: Callable[[int], list], seed, validation_fraction, class_order,
    per_task: bool, setting: str, augment, data_path, mean, std, padding,
):
    """Experiences of disjoint class groups (class_incremental, task_incremental, new_class)."""
    train_targets, test_targets, num_classes, path = _prepare(
        train, test, validation_fraction, augment, data_path, mean, std, padding
    )
    order = draw_class_order(num_classes, seed) if class_order is None else check_class_order(class_order, num_classes)
    groups = split_groups(order, sizes_for(num_classes))
    table = relabel_table(groups, per_group=per_task)
    keep, held = validation_split(train_targets, validation_fraction, seed)

    def stream(base, targets, indices, training):
        datasets = []
        for k, group in enumerate(groups):
            chosen = select_classes(targets, indices, group)
            if len(chosen) == 0:
                raise ValueError(
                    f"test has no sample of classes {group} (experience {k}): every class group needs "
                    "test images; pass a test set that holds every class"
                )
            datasets.append(path.dataset(base, chosen, table[targets[chosen]], k if per_task else 0, training))
        return datasets

    streams = {
        "train": stream(train, train_targets, keep, True),
        "test": stream(test, test_targets, torch.arange(len(test_targets)), False),
    }
    if held is not None:
        streams["valid"] = stream(train, train_targets, held, False)
    return _finish(
        streams,
        setting=setting,
        class_order=order,
        class_groups=groups,
        classes_per_exp=[sorted(table[group].tolist()) for group in groups],
        num_classes=max(len(g) for g in groups) if per_task else num_classes,
        seed=seed,
    )


def class_incremental(
    train: Dataset,
    test: Dataset,
    classes_per_step: Union[int, Sequence[int]] = 2,
    seed: int = 0,
    validation_fraction: float = 0.0,
    class_order: Optional[Sequence[int]] = None,
    augment: bool = True,
    data_path: str = "batched",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    padding: int = 4,
):
    """Class-incremental benchmark: disjoint class groups, one head, task label 0.

    Labels are relabelled by the class order (``class_order[i]`` -> ``i``), so
    experience k holds contiguous labels; the test stream has one experience
    per group (evaluate on ``test_stream[: k + 1]`` for "all classes seen so far").

    :param train, test: labelled uint8 image sets (``.targets``, labels 0 .. C-1).
    :param classes_per_step: classes per experience: an int dividing C, or one
        size per experience summing to C (e.g. ``(5, 1, 1, 1, 1, 1)``).
    :param seed: draws the class order (and the validation slices) from a local
        generator; the global RNG is untouched.
    :param validation_fraction: stratified fraction of each class held out of
        training into ``valid_stream`` (one slice per experience).
    :param class_order: a permutation of ``range(C)`` to use instead of a drawn one.
    :param augment, data_path, mean, std, padding: as in
        :func:`~avalanche_sst.benchmarks.same_class.same_class_accumulating`.
    """
    return _class_split(
        train, test, lambda c: group_sizes(classes_per_step, c), seed, validation_fraction, class_order,
        False, "class_incremental", augment, data_path, mean, std, padding,
    )


def task_incremental(
    train: Dataset,
    test: Dataset,
    classes_per_step: Union[int, Sequence[int]] = 2,
    seed: int = 0,
    validation_fraction: float = 0.0,
    class_order: Optional[Sequence[int]] = None,
    augment: bool = True,
    data_path: str = "batched",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    padding: int = 4,
):
    """Task-incremental benchmark: the split of :func:`class_incremental`,
    experience k with task label k and labels ``0 .. |group k| - 1``.

    ``num_classes`` is the largest group: the units one shared head needs
    (a multi-head model grows one head per task; see
    :func:`avalanche_sst.models.multi_head`). Arguments as in :func:`class_incremental`.
    """
    return _class_split(
        train, test, lambda c: group_sizes(classes_per_step, c), seed, validation_fraction, class_order,
        True, "task_incremental", augment, data_path, mean, std, padding,
    )


def new_class(
    train: Dataset,
    test: Dataset,
    base_classes: int = 9,
    seed: int = 0,
    validation_fraction: float = 0.0,
    class_order: Optional[Sequence[int]] = None,
    augment: bool = True,
    data_path: str = "batched",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    padding: int = 4,
):
    """The "9+1" new-class benchmark: experience 0 holds the first
    ``base_classes`` classes of the order, experience 1 the rest.

    Test stream: experience 0 = base-class test images (old-class accuracy),
    experience 1 = new-class test images. Labels relabelled by the order (base
    classes first), task label 0. Other arguments as in :func:`class_incremental`.
    """

    def sizes(num_classes: int) -> list:
        if isinstance(base_classes, bool) or not isinstance(base_classes, int) or not 1 <= base_classes < num_classes:
            raise ValueError(
                f"base_classes must be an int in [1, {num_classes - 1}] for data of {num_classes} classes "
                f"(at least one new class), got {base_classes!r}"
            )
        return [base_classes, num_classes - base_classes]

    benchmark = _class_split(
        train, test, sizes, seed, validation_fraction, class_order,
        False, "new_class", augment, data_path, mean, std, padding,
    )
    benchmark.base_classes = base_classes
    return benchmark


def unseen_class(
    train: Dataset,
    test: Dataset,
    seen_classes: int = 2,
    seed: int = 0,
    labelled: bool = True,
    validation_fraction: float = 0.0,
    class_order: Optional[Sequence[int]] = None,
    augment: bool = True,
    data_path: str = "batched",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    padding: int = 4,
):
    """The unseen-class benchmark (original labels, task label 0).

    - ``pretrain_stream``: one experience with every class (the teacher);
    - ``train_stream``: one experience with the training images of the first
      ``seen_classes`` classes of the order (``.seen_classes``);
    - ``test_stream``: one experience with the test images of the other classes
      (``.unseen_classes``).

    ``labelled`` is recorded as ``.labelled``: whether a method may use the
    labels of ``train_stream`` (the paper's student learns without them).
    With ``validation_fraction`` > 0 the held-out slice is removed from both
    training streams: ``valid_stream`` holds its seen-class part and
    ``pretrain_valid_stream`` all of it.
    """
    if not isinstance(labelled, bool):
        raise TypeError(f"labelled must be True or False, got {labelled!r}")
    train_targets, test_targets, num_classes, path = _prepare(
        train, test, validation_fraction, augment, data_path, mean, std, padding
    )
    if isinstance(seen_classes, bool) or not isinstance(seen_classes, int) or not 1 <= seen_classes < num_classes:
        raise ValueError(
            f"seen_classes must be an int in [1, {num_classes - 1}] for data of {num_classes} classes "
            f"(at least one unseen class to test on), got {seen_classes!r}"
        )
    order = draw_class_order(num_classes, seed) if class_order is None else check_class_order(class_order, num_classes)
    seen, unseen = sorted(order[:seen_classes]), sorted(order[seen_classes:])
    keep, held = validation_split(train_targets, validation_fraction, seed)
    test_chosen = select_classes(test_targets, torch.arange(len(test_targets)), unseen)
    if len(test_chosen) == 0:
        raise ValueError(f"test has no sample of the unseen classes {unseen}: pass a test set that holds them")

    def part(base, targets, indices, training):
        return [path.dataset(base, indices, targets[indices], 0, training)]

    streams = {
        "pretrain": part(train, train_targets, keep, True),
        "train": part(train, train_targets, select_classes(train_targets, keep, seen), True),
        "test": part(test, test_targets, test_chosen, False),
    }
    if held is not None:
        streams["valid"] = part(train, train_targets, select_classes(train_targets, held, seen), False)
        streams["pretrain_valid"] = part(train, train_targets, held, False)
    return _finish(
        streams,
        setting="unseen_class",
        class_order=order,
        class_groups=[seen],
        classes_per_exp=[seen],
        seen_classes=seen,
        unseen_classes=unseen,
        num_classes=num_classes,
        labelled=labelled,
        seed=seed,
    )


def permuted(
    train: Dataset,
    test: Dataset,
    n_tasks: int,
    seed: int = 0,
    validation_fraction: float = 0.0,
    augment: bool = False,
    data_path: str = "batched",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    padding: int = 4,
):
    """Permuted-pixels benchmark (setting ``"task_incremental"``).

    Task k holds every class of ``train`` (original labels) under a fixed
    pixel permutation (``.permutations[k]``; the same one for every channel;
    task 0 the identity), with task label k; the test stream has one
    experience per task, permuted the same way. ``augment`` is off by
    default: crops and flips of scrambled pixels are not the same images.
    """
    train_targets, test_targets, num_classes, path = _prepare(
        train, test, validation_fraction, augment, data_path, mean, std, padding
    )
    height, width = test[0][0].shape[-2:]
    permutations = pixel_permutations(n_tasks, int(height * width), seed)
    keep, held = validation_split(train_targets, validation_fraction, seed)
    all_test = torch.arange(len(test_targets))
    streams = {"train": [], "test": [], "valid": []}
    for k, perm in enumerate(permutations):
        perm = None if k == 0 else perm
        train_k, test_k = PermutedImages(train, perm), PermutedImages(test, perm)
        streams["train"].append(path.dataset(train_k, keep, train_targets[keep], k, True))
        streams["test"].append(path.dataset(test_k, all_test, test_targets, k, False))
        if held is not None:
            streams["valid"].append(path.dataset(train_k, held, train_targets[held], k, False))
    if held is None:
        del streams["valid"]
    classes = list(range(num_classes))
    return _finish(
        streams,
        setting="task_incremental",
        class_order=classes,
        class_groups=[classes] * n_tasks,
        classes_per_exp=[classes] * n_tasks,
        num_classes=num_classes,
        permutations=permutations,
        seed=seed,
    )
