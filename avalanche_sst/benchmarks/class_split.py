"""Pure helpers of the class-split scenarios: class orders, class groups,
relabelling tables, pixel permutations and validation slices.

Every random draw uses a local ``torch.Generator`` seeded by the caller, so
building a benchmark never touches the global RNG (Avalanche's
``class_incremental_benchmark`` calls ``torch.random.manual_seed``, which is
why the class order is drawn here and passed to the builders).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from .same_class import stratified_split


def present_classes(train_targets: torch.Tensor) -> list[int]:
    """The class ids ``0 .. max`` of ``train``; raises if one of them has no sample."""
    if len(train_targets) == 0:
        raise ValueError("train is empty: pass a training set with at least one sample per class")
    if int(train_targets.min()) < 0:
        raise ValueError(f"train has a negative label ({int(train_targets.min())}); labels must be 0 .. C-1")
    num_classes = int(train_targets.max()) + 1
    counts = torch.bincount(train_targets, minlength=num_classes)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"train has no sample of classes {empty} (labels run 0 .. {num_classes - 1}): "
            "relabel the data so that the classes are 0 .. C-1 with no gap"
        )
    return list(range(num_classes))


def draw_class_order(num_classes: int, seed: int) -> list[int]:
    """A random permutation of ``range(num_classes)`` drawn from a local generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_classes, generator=generator).tolist()


def check_class_order(class_order: Sequence[int], num_classes: int) -> list[int]:
    """``class_order`` as a list of ints; raises unless it permutes ``range(num_classes)``."""
    order = [int(c) for c in class_order]
    if sorted(order) != list(range(num_classes)):
        raise ValueError(
            f"class_order must be a permutation of the {num_classes} classes 0 .. {num_classes - 1} "
            f"(each once), got {order}; pass class_order=None to draw one from the seed"
        )
    return order


def group_sizes(classes_per_step: Union[int, Sequence[int]], num_classes: int) -> list[int]:
    """Number of classes of each experience.

    An int must divide ``num_classes``; a sequence must hold positive ints
    that sum to ``num_classes``.
    """
    if isinstance(classes_per_step, bool):
        raise TypeError("classes_per_step must be an int or a sequence of ints, got a bool")
    if isinstance(classes_per_step, int):
        if classes_per_step < 1 or num_classes % classes_per_step:
            raise ValueError(
                f"classes_per_step={classes_per_step} must be a positive divisor of the {num_classes} "
                "classes; pass a divisor or a sequence of group sizes that sums to the class count"
            )
        return [classes_per_step] * (num_classes // classes_per_step)
    sizes = list(classes_per_step)
    if not sizes or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ValueError(f"classes_per_step must list positive ints (one per experience), got {sizes}")
    if sum(sizes) != num_classes:
        raise ValueError(
            f"classes_per_step={sizes} sums to {sum(sizes)} but the data has {num_classes} classes; "
            f"give group sizes that sum to {num_classes}"
        )
    return sizes


def split_groups(class_order: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """Cut ``class_order`` into consecutive groups of ``sizes``."""
    groups, start = [], 0
    for size in sizes:
        groups.append(list(class_order[start : start + size]))
        start += size
    return groups


def relabel_table(groups: Sequence[Sequence[int]], per_group: bool) -> torch.Tensor:
    """Lookup ``table[original_class] = new_label``.

    ``per_group=False``: labels run over the whole order (the i-th class of
    the order gets label i: one growing head); ``per_group=True``: labels
    restart at 0 in every group (one head per task).
    """
    num_classes = sum(len(g) for g in groups)
    table = torch.empty(num_classes, dtype=torch.long)
    offset = 0
    for group in groups:
        for i, cls in enumerate(group):
            table[cls] = i if per_group else offset + i
        offset += len(group)
    return table


def pixel_permutations(n_tasks: int, num_pixels: int, seed: int) -> list[torch.Tensor]:
    """``n_tasks`` distinct permutations of ``range(num_pixels)``, the first the identity.

    Drawn from a local generator; a draw that repeats an earlier permutation is
    redrawn (possible only on tiny images), so tasks always differ.
    """
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"n_tasks must be a positive int, got {n_tasks!r}")
    if num_pixels < 20 and n_tasks > math.factorial(num_pixels):
        raise ValueError(
            f"n_tasks={n_tasks} but images of {num_pixels} pixels allow only "
            f"{math.factorial(num_pixels)} distinct permutations; ask for fewer tasks"
        )
    generator = torch.Generator().manual_seed(seed)
    perms = [torch.arange(num_pixels)]
    seen = {tuple(perms[0].tolist())}
    while len(perms) < n_tasks:
        perm = torch.randperm(num_pixels, generator=generator)
        key = tuple(perm.tolist())
        if key not in seen:
            seen.add(key)
            perms.append(perm)
    return perms


def permute_pixels(image: torch.Tensor, permutation: Optional[torch.Tensor]) -> torch.Tensor:
    """Move pixel ``permutation[j]`` of every channel of ``[C, H, W]`` to position ``j``."""
    if permutation is None:
        return image
    return image.reshape(image.shape[0], -1)[:, permutation].reshape(image.shape)


def validation_split(train_targets: torch.Tensor, fraction: float, seed: int):
    """(kept indices, held-out indices or None): ``fraction`` of every class held out."""
    if fraction == 0:
        return torch.arange(len(train_targets)), None
    smallest = int(torch.bincount(train_targets).min())
    if smallest < 2:
        raise ValueError(
            f"validation_fraction={fraction} needs >= 2 training samples per class (one to train, one "
            f"to validate) but a class has {smallest}; use validation_fraction=0 or more data"
        )
    keep, held = stratified_split(train_targets, (1 - fraction, fraction), torch.Generator().manual_seed(seed))
    return keep, held


def select_classes(targets: torch.Tensor, indices: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """The entries of ``indices`` whose target is one of ``classes`` (order kept)."""
    return indices[torch.isin(targets[indices], torch.as_tensor(list(classes), dtype=torch.long))]
