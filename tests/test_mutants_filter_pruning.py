"""Tests that kill the mutation survivors of functional/filter_pruning (docs/testing.md): the
batch prune_plan draws (default seed, seed passed on), plain torch datasets, the stem's own
kept filters when it does not join group 1, and check_image_batch's refusals and bounds."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from avalanche_sst.functional.filter_pruning import RAW_PIXEL_BOUND, check_image_batch, prune_plan, pruning_batch
from avalanche_sst.models import resnet_cifar, wide_resnet

torch.set_num_threads(1)


def _signed_images() -> TensorDataset:
    """Four constant 8x8 images: +1, +1, -1, -1 (normalised range)."""
    x = torch.tensor([1.0, 1.0, -1.0, -1.0]).view(4, 1, 1, 1).expand(4, 1, 8, 8).clone()
    return TensorDataset(x, torch.zeros(4, dtype=torch.long))


def _sign_reading_stem() -> nn.Module:
    """A ResNet whose stem channel 0 is alive on positive images only and channels 1-3 on negative
    ones only (conv weights +1/-1, identity eval BN): at P = 1 a +1 image has 3 prunable stem
    filters, a -1 image 1, so the stem's rule width n - avgc tells which images were drawn."""
    torch.manual_seed(0)
    model = resnet_cifar(8, width=4, in_channels=1, num_classes=3)
    with torch.no_grad():
        model.conv1.weight.fill_(-1.0)
        model.conv1.weight[0] = 1.0
        model.bn1.weight.fill_(1.0)
        model.bn1.bias.zero_()
    return model


def test_pruning_batch_of_a_plain_dataset_is_the_seeded_choice() -> None:
    ds = _signed_images()
    # randperm(4) under seed 0 starts [0, 1], under seed 1 [1, 3] (checked here, not assumed)
    assert torch.randperm(4, generator=torch.Generator().manual_seed(0))[:2].tolist() == [0, 1]
    assert torch.randperm(4, generator=torch.Generator().manual_seed(1))[:2].tolist() == [1, 3]
    assert torch.equal(pruning_batch(ds, 2), ds.tensors[0][[0, 1]])  # default seed 0
    assert torch.equal(pruning_batch(ds, 2, seed=1), ds.tensors[0][[1, 3]])
    assert pruning_batch(ds, 1).shape == (1, 1, 8, 8)  # M = 1 is a batch
    one = TensorDataset(ds.tensors[0][:1], ds.tensors[1][:1])
    assert torch.equal(pruning_batch(one, 4), ds.tensors[0][:1])  # fewer items than M: all of them


def test_pruning_batch_refusals_name_the_argument() -> None:
    ds = _signed_images()
    for bad in (2.5, 0, True):
        with pytest.raises(ValueError, match=r"^num_images must be a positive int \(M, the batch of sec. 3\), got "):
            pruning_batch(ds, bad)
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="^prune_plan: the dataset is empty$"):
        pruning_batch(empty, 2)


def test_prune_plan_draws_with_the_given_seed_and_seed_0_by_default() -> None:
    """Seed 0 draws two +1 images (avgc 3, stem width 1), seed 1 one of each (avgc 2 -> 2),
    seed 3 two -1 images (avgc 1 -> 3)."""
    model, ds = _sign_reading_stem(), _signed_images()
    assert prune_plan(model, ds, threshold=1.0, num_images=2).rule_widths["stem"] == 1
    assert prune_plan(model, ds, threshold=1.0, num_images=2, seed=1).rule_widths["stem"] == 2
    assert prune_plan(model, ds, threshold=1.0, num_images=2, seed=3).rule_widths["stem"] == 3


def test_a_stem_that_does_not_join_group_1_keeps_its_own_filters() -> None:
    """WRN-10-2: the stem (16) feeds group 1 (32) through a projection, so it keeps its own rule
    width and its own live filters: 3 of 16 dead where its output meets its ReLU -> 13."""
    torch.manual_seed(0)
    model = wide_resnet(10, 2, in_channels=1, num_classes=3)
    assert not model.layer1[0].equal_in_out
    dead = [2, 7, 11]
    with torch.no_grad():  # eval-mode BN output -1 on the dead channels, +1 elsewhere, whatever it reads
        bn = model.layer1[0].bn1
        bn.weight.zero_()
        bn.bias.fill_(1.0)
        bn.bias[dead] = -1.0
    images = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    plan = prune_plan(model, images, threshold=0.7)
    assert plan.rule_widths["stem"] == 13 and plan.widths.stem == 13
    assert plan.kept["stem"] == [i for i in range(16) if i not in dead]


def test_check_image_batch_names_what_it_got() -> None:
    with pytest.raises(ValueError, match=r"^prune_plan: images must be a float batch \[M, C, H, W\], a dataset or an "
                                         r"experience, got \(3, 8, 8\); pass the experience"):
        check_image_batch(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"a dataset or an experience, got list; pass the experience"):
        check_image_batch([1.0, 2.0])


def test_check_image_batch_bounds() -> None:
    empty = torch.zeros(0, 1, 8, 8)
    assert check_image_batch(empty) is empty  # nothing to measure the peak of: not raw pixels
    at_bound = torch.full((1, 1, 2, 2), RAW_PIXEL_BOUND)
    assert check_image_batch(at_bound) is at_bound  # the bound itself is still a normalised image
    with pytest.raises(ValueError, match=r"reach \|x\| = 20.5, raw 0-255 pixels"):
        check_image_batch(torch.full((1, 1, 2, 2), -20.5))
