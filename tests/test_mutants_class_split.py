"""Tests that kill the mutation survivors of benchmarks/class_split (docs/testing.md): the exact
refusals of bad labels, class orders and group sizes, one-sample and one-task edge cases,
distinct pixel permutations on tiny images, and the relabelling table's integer labels."""

from __future__ import annotations

import itertools

import pytest
import torch

from avalanche_sst.benchmarks.class_split import (
    check_class_order,
    group_sizes,
    pixel_permutations,
    present_classes,
    relabel_table,
)


def test_present_classes_edge_cases_and_messages():
    assert present_classes(torch.tensor([0])) == [0]  # one sample is a training set
    with pytest.raises(ValueError, match=r"^train is empty: pass a training set with at least one sample per class$"):
        present_classes(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match=r"^train has a negative label \(-1\); labels must be 0 \.\. C-1$"):
        present_classes(torch.tensor([0, -1]))
    with pytest.raises(ValueError, match=r"^train has no sample of classes \[1\] \(labels run 0 \.\. 2\): relabel the "
                                         r"data so that the classes are 0 \.\. C-1 with no gap$"):
        present_classes(torch.tensor([0, 2, 2]))


def test_class_order_and_group_size_messages():
    with pytest.raises(ValueError, match=r"^class_order must be a permutation of the 3 classes 0 \.\. 2 \(each once\), "
                                         r"got \[0, 0, 1\]; pass class_order=None to draw one from the seed$"):
        check_class_order([0, 0, 1], 3)
    with pytest.raises(TypeError, match=r"^classes_per_step must be an int or a sequence of ints, got a bool$"):
        group_sizes(True, 4)
    with pytest.raises(ValueError, match=r"^classes_per_step=3 must be a positive divisor of the 4 classes; pass a "
                                         r"divisor or a sequence of group sizes that sums to the class count$"):
        group_sizes(3, 4)
    for bad in ([2, 1.5, 0.5], [2, True, 1]):  # they sum to 4, but are not positive ints
        with pytest.raises(ValueError, match=r"^classes_per_step must list positive ints \(one per experience\)"):
            group_sizes(bad, 4)


def test_pixel_permutations_one_task_bad_counts_and_distinct_draws():
    assert [p.tolist() for p in pixel_permutations(1, 4, seed=0)] == [[0, 1, 2, 3]]  # one task: the identity
    with pytest.raises(ValueError, match=r"^n_tasks must be a positive int, got 2\.5$"):
        pixel_permutations(2.5, 4, seed=0)
    # seed 0's first draw of 2 pixels is the identity again: it is redrawn, not used twice
    assert torch.randperm(2, generator=torch.Generator().manual_seed(0)).tolist() == [0, 1]
    assert [p.tolist() for p in pixel_permutations(2, 2, seed=0)] == [[0, 1], [1, 0]]
    # all 3! permutations of 3 pixels, each once
    perms = sorted(tuple(p.tolist()) for p in pixel_permutations(6, 3, seed=0))
    assert perms == sorted(itertools.permutations(range(3)))


def test_relabel_table_holds_integer_labels():
    groups = [[2, 0], [1]]
    whole = relabel_table(groups, per_group=False)
    assert whole.dtype == torch.long and whole.tolist() == [1, 2, 0]
    assert relabel_table(groups, per_group=True).tolist() == [1, 0, 0]
