"""What a user passes to the edge method's prune_plan: an experience, a dataset, or a
normalised float batch; raw pixels are refused with the fix."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from avalanche_sst.benchmarks.scenarios import class_incremental
from avalanche_sst.benchmarks.tensor_data import to_normalized_float
from avalanche_sst.functional.filter_pruning import prune_plan, pruning_batch
from avalanche_sst.models import resnet_cifar
from conftest import make_images


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    bm = class_incremental(make_images(10, seed=0, classes=4), make_images(4, seed=1, classes=4),
                           classes_per_step=2, seed=0, augment=True)  # augmentation must be switched off
    torch.manual_seed(0)
    teacher = resnet_cifar(8, num_classes=4, in_channels=1, width=4)
    return bm.train_stream[0], teacher


def test_pruning_batch_is_the_collated_normalised_unaugmented_choice(setup):
    exp, _ = setup
    batch = pruning_batch(exp, num_images=8, seed=3)
    data = exp.dataset.eval()
    picked = torch.randperm(len(data), generator=torch.Generator().manual_seed(3))[:8].tolist()
    raw = torch.stack([data[i][0] for i in picked])
    assert raw.dtype == torch.uint8
    collate = data.collate_fn
    assert torch.equal(batch, to_normalized_float(raw, collate.mean, collate.std))
    assert torch.equal(pruning_batch(exp.dataset, num_images=8, seed=3), batch)  # the dataset alone: same


def test_experience_dataset_and_collated_batch_plan_the_same_widths(setup):
    exp, teacher = setup
    data = exp.dataset.eval()
    assert data.collate_fn.augment  # a training experience's collate_fn augments even after .eval() ...
    collate = dataclasses.replace(data.collate_fn, augment=False)  # ... prune_plan switches it off
    loader = DataLoader(data, batch_size=len(data), collate_fn=collate)
    from_batch = prune_plan(teacher, next(iter(loader))[0], threshold=0.9)
    for given in (exp, exp.dataset):
        plan = prune_plan(teacher, given, threshold=0.9, num_images=len(data))
        assert plan.to_dict() == from_batch.to_dict()


def test_raw_pixel_batches_are_refused_with_the_fix(setup):
    exp, teacher = setup
    raw = next(iter(DataLoader(exp.dataset, batch_size=16)))[0]  # no collate_fn: uint8 pixels
    assert raw.dtype == torch.uint8
    with pytest.raises(ValueError, match=r"torch.uint8 batch of raw pixels.*prune_plan\(teacher, benchmark"):
        prune_plan(teacher, raw, threshold=0.9)
    with pytest.raises(ValueError, match=r"raw 0-255 pixels cast to float.*collate_fn"):
        prune_plan(teacher, raw.float(), threshold=0.9)
    with pytest.raises(ValueError, match="num_images"):
        prune_plan(teacher, exp, threshold=0.9, num_images=0)
