"""Tests that kill mutation survivors of benchmarks/scenarios (docs/testing.md), and the link from
every stream to its benchmark that lets a plugin read the setting of the experience it is given."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from avalanche_sst.benchmarks import same_class_accumulating, scenarios
from avalanche_sst.benchmarks.class_split import draw_class_order
from avalanche_sst.benchmarks.same_class import _channel_stats
from avalanche_sst.benchmarks.scenarios import PermutedImages
from avalanche_sst.benchmarks.tensor_data import BatchCollate, TensorImageDataset
from avalanche_sst.plugins.m2kd import M2KDModel, M2KDPlugin

from conftest import PlainDataset, make_images


@pytest.fixture(scope="module")
def data():
    """(train, test): 4 classes x 6 train / 2 test images of 1x8x8."""
    return make_images(6, seed=0), make_images(2, seed=1)


BUILDERS = {
    "class_incremental": lambda tr, te: scenarios.class_incremental(tr, te, validation_fraction=0.5, augment=False),
    "task_incremental": lambda tr, te: scenarios.task_incremental(tr, te, validation_fraction=0.5, augment=False),
    "new_class": lambda tr, te: scenarios.new_class(tr, te, base_classes=2, validation_fraction=0.5, augment=False),
    "unseen_class": lambda tr, te: scenarios.unseen_class(tr, te, validation_fraction=0.5, augment=False),
    "permuted": lambda tr, te: scenarios.permuted(tr, te, 2, validation_fraction=0.5),
    "same_class": lambda tr, te: same_class_accumulating(tr, te, ratios=(1, 1), validation_fraction=0.5,
                                                         augment=False),
}
SETTING = {"permuted": "task_incremental"}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_stream_knows_its_benchmark_and_setting(data, name):
    benchmark = BUILDERS[name](*data)
    assert benchmark.setting == SETTING.get(name, name)
    assert "valid" in benchmark.streams
    for stream in benchmark.streams.values():
        assert stream.benchmark is benchmark
        for experience in stream:
            assert experience.origin_stream.benchmark.setting == benchmark.setting


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.layer1 = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2, 4)

    def forward(self, x):
        return self.fc(self.pool(self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))))


def test_m2kd_refuses_an_experience_of_a_benchmark_of_another_setting(data):
    """The new-class benchmark's first experience has task label 0 and labels 0, 1 from nothing seen:
    only its setting tells M2KD it is not class-incremental, read through the experience's stream."""
    plugin = M2KDPlugin(network=M2KDModel(_Backbone()))
    ours = scenarios.class_incremental(*data, augment=False).train_stream[0]
    assert plugin._check_experience(SimpleNamespace(experience=ours)) == 2
    other = BUILDERS["new_class"](*data).train_stream[0]
    message = "'new_class', task labels [0] and classes [0, 1] while 0 units are already seen"
    with pytest.raises(ValueError, match=r"^M2KD runs in the class-incremental setting \(disjoint class groups, "
                                         r"task label 0\); experience 0 has setting " + re.escape(message)):
        plugin._check_experience(SimpleNamespace(experience=other))


# ------------------------------------------------------------------ what each builder passes on
FUNCS = {
    "class_incremental": scenarios.class_incremental,
    "task_incremental": scenarios.task_incremental,
    "new_class": lambda tr, te, **kw: scenarios.new_class(tr, te, **{"base_classes": 2, **kw}),
    "unseen_class": scenarios.unseen_class,
    "permuted": lambda tr, te, **kw: scenarios.permuted(tr, te, 2, **kw),
}
TRAINING_STREAMS = {"train", "pretrain"}


def _items(experience):
    """(uint8 image bytes, target, task label) of every sample of the experience."""
    data = experience.dataset
    return [(data[i][0].numpy().tobytes(), int(data[i][1]), int(data[i][2])) for i in range(len(data))]


@pytest.mark.parametrize("name", list(FUNCS))
def test_explicit_data_path_reaches_every_stream_and_only_training_streams_augment(data, name):
    for augment in (True, False):
        benchmark = FUNCS[name](*data, augment=augment, validation_fraction=0.5, mean=(0.25,), std=(0.5,),
                                padding=3, seed=3)
        assert benchmark.seed == 3
        for stream_name, stream in benchmark.streams.items():
            for experience in stream:
                assert experience.dataset.collate_fn == BatchCollate(
                    (0.25,), (0.5,), augment=augment and stream_name in TRAINING_STREAMS, padding=3)


@pytest.mark.parametrize("name", list(FUNCS))
def test_defaults_seed_0_channel_statistics_padding_4_and_augmented_training_streams(data, name):
    train, test = data
    benchmark = FUNCS[name](train, test)
    mean, std = _channel_stats(train)
    augment = name != "permuted"  # crops and flips of scrambled pixels are not the same images
    assert benchmark.seed == 0
    if name != "permuted":
        assert benchmark.class_order == draw_class_order(4, 0)
    for stream_name, stream in benchmark.streams.items():
        for experience in stream:
            assert experience.dataset.collate_fn == BatchCollate(
                mean, std, augment=augment and stream_name in TRAINING_STREAMS, padding=4)


def test_a_mean_or_a_std_alone_is_replaced_by_the_channel_statistics(data):
    train, test = data
    stats = BatchCollate(*_channel_stats(train), augment=False, padding=4)
    for given in ({"mean": (0.25,)}, {"std": (0.5,)}):
        benchmark = scenarios.class_incremental(train, test, augment=False, **given)
        assert benchmark.train_stream[0].dataset.collate_fn == stats


def test_ten_class_defaults_nine_base_classes_and_two_seen_classes():
    train, test = make_images(2, classes=10), make_images(1, seed=1, classes=10)
    new = scenarios.new_class(train, test)
    assert new.base_classes == 9 and [len(g) for g in new.classes_per_exp] == [9, 1]
    assert [len(g) for g in scenarios.class_incremental(train, test).class_groups] == [2] * 5
    unseen = scenarios.unseen_class(train, test)
    assert len(unseen.seen_classes) == 2 and len(unseen.unseen_classes) == 8


def test_per_sample_path_crops_to_the_image_size(data):
    train, test = data
    benchmark = scenarios.class_incremental(train, test, data_path="per_sample", mean=(0.0,), std=(1.0,))
    image, target, task = benchmark.train_stream[0].dataset[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and task == 0


# ------------------------------------------------------------------ arguments and messages
def test_smallest_base_and_seen_class_counts_and_a_given_class_order(data):
    new = scenarios.new_class(*data, base_classes=1, class_order=[3, 2, 1, 0], augment=False)
    assert new.class_groups == [[3], [2, 1, 0]] and new.classes_per_exp == [[0], [1, 2, 3]]
    unseen = scenarios.unseen_class(*data, seen_classes=1, class_order=[2, 0, 3, 1], augment=False)
    assert (unseen.seen_classes, unseen.unseen_classes, unseen.class_order) == ([2], [0, 1, 3], [2, 0, 3, 1])
    unseen = scenarios.unseen_class(*data, class_order=[3, 1, 0, 2], seed=5, augment=False)
    assert (unseen.seen_classes, unseen.class_groups, unseen.classes_per_exp, unseen.seed) == \
        ([1, 3], [[1, 3]], [[1, 3]], 5)


@pytest.mark.parametrize("call, error, message", [
    (lambda tr, te: scenarios.new_class(tr, te, base_classes=2.0), ValueError,
     "base_classes must be an int in [1, 3] for data of 4 classes (at least one new class), got 2.0"),
    (lambda tr, te: scenarios.unseen_class(tr, te, seen_classes=2.0), ValueError,
     "seen_classes must be an int in [1, 3] for data of 4 classes (at least one unseen class to test on), got 2.0"),
    (lambda tr, te: scenarios.unseen_class(tr, te, labelled="yes"), TypeError,
     "labelled must be True or False, got 'yes'"),
    (lambda tr, te: scenarios.unseen_class(tr, _only(te, [2, 3]), class_order=[2, 3, 0, 1]), ValueError,
     "test has no sample of the unseen classes [0, 1]: pass a test set that holds them"),
    (lambda tr, te: scenarios.class_incremental(tr, _only(te, [0, 1]), class_order=[0, 1, 2, 3]), ValueError,
     "test has no sample of classes [2, 3] (experience 1): every class group needs test images; pass a test set "
     "that holds every class"),
    (lambda tr, te: scenarios.class_incremental(tr, _only(te, [])), ValueError,
     "test is empty: pass a test set with samples of the classes to evaluate"),
    (lambda tr, te: scenarios.class_incremental(PlainDataset(tr, targets=False), te), ValueError,
     "train has no `targets` attribute: the scenario needs the label of every sample to stratify; wrap it so that "
     "`dataset.targets` lists the labels"),
    (lambda tr, te: scenarios.class_incremental(tr, PlainDataset(te, targets=False)), ValueError,
     "test has no `targets` attribute: the scenario"),
])
def test_bad_input_names_the_argument(data, call, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        call(*data)


def _only(dataset, classes):
    keep = torch.tensor([int(t) in classes for t in dataset.targets], dtype=torch.bool)
    return TensorImageDataset(dataset.images[keep], torch.as_tensor(dataset.targets)[keep])


def test_a_one_image_test_set_is_enough(data):
    train, test = data
    one = _only(test, [1])
    one = TensorImageDataset(one.images[:1], torch.as_tensor(one.targets)[:1])
    unseen = scenarios.unseen_class(train, one, seen_classes=3, class_order=[0, 2, 3, 1], augment=False)
    assert len(unseen.test_stream[0].dataset) == 1
    two_class_train = _only(train, [0, 1])
    permuted = scenarios.permuted(two_class_train, one, 2)
    assert [len(e.dataset) for e in permuted.test_stream] == [1, 1]
    assert (permuted.class_order, permuted.class_groups, permuted.classes_per_exp, permuted.num_classes) == \
        ([0, 1], [[0, 1], [0, 1]], [[0, 1], [0, 1]], 2)


# ------------------------------------------------------------------ the unseen-class streams' contents
def test_unseen_class_streams_hold_the_source_images_with_task_label_0(data):
    train, test = data
    benchmark = scenarios.unseen_class(train, test, class_order=[3, 1, 0, 2], validation_fraction=0.5,
                                       augment=False)
    source = {"train": train, "pretrain": train, "valid": train, "pretrain_valid": train, "test": test}
    classes = {"train": {1, 3}, "valid": {1, 3}, "pretrain": {0, 1, 2, 3}, "pretrain_valid": {0, 1, 2, 3},
               "test": {0, 2}}
    held = set()
    for name, stream in benchmark.streams.items():
        pairs = {(x.numpy().tobytes(), int(y)) for x, y in source[name]}
        (experience,) = list(stream)
        items = _items(experience)
        assert {(x, y) for x, y, _ in items} <= pairs and {t for _, _, t in items} == {0}
        assert {y for _, y, _ in items} == classes[name]
        assert set(experience.dataset.targets_task_labels) == {0}
        if name in ("valid", "pretrain_valid"):
            held |= {x for x, _, _ in items}
    assert len(benchmark.test_stream[0].dataset) == len(test) // 2  # the images of the two unseen classes
    assert not held & {x for x, _, _ in _items(benchmark.train_stream[0])}


# ------------------------------------------------------------------ permuted images
def test_permuted_images_keep_the_targets_and_gather_the_moved_pixels(data):
    train, _ = data
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    moved = PermutedImages(train, perm)
    assert moved.targets is train.targets
    indices = torch.tensor([3, 0, 5])
    batch = moved.gather(indices)
    assert torch.equal(batch.images, torch.stack([moved[i][0] for i in indices.tolist()]))
    assert torch.equal(batch.images[1].flatten(), train[0][0].flatten()[perm])
    assert torch.equal(batch.columns[0], torch.as_tensor([train.targets[i] for i in indices.tolist()]))
    plain = PermutedImages(train, None).gather(indices)  # no permutation: the base's own batch
    assert torch.equal(plain.images, train.gather(indices).images)
    assert PermutedImages(SimpleNamespace(targets=train.targets), perm).gather(indices) is None  # cannot gather
