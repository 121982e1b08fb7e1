"""Tests that kill mutation survivors of benchmarks/same_class (docs/testing.md): the split counts
by hand where the at-least-one floor overshoots, exactly which labels the noise changes, what the
benchmark passes to every stream (normalisation, augmentation, padding, task label 0) and the
messages of bad input."""

from __future__ import annotations

import re

import pytest
import torch

from avalanche_sst.benchmarks import inject_label_noise, same_class_accumulating, stratified_split
from avalanche_sst.benchmarks.same_class import RelabelledSubset, _channel_stats, _proportional_counts
from avalanche_sst.benchmarks.tensor_data import BatchCollate, TensorImageDataset

from conftest import PlainDataset, make_images


@pytest.fixture(scope="module")
def data():
    """(train, test): 4 classes x 6 train / 2 test images of 1x8x8."""
    return make_images(6, seed=0), make_images(2, seed=1)


def test_split_counts_by_hand_when_the_floor_of_one_overshoots():
    # exact shares 6 * (1, 1, 1, 10) / 13 = (.46, .46, .46, 4.6): floors of at least one give (1, 1, 1, 4) = 7 > 6,
    # and only the large part can give one back
    assert _proportional_counts(6, (1, 1, 1, 10)) == [1, 1, 1, 3]
    assert _proportional_counts(4, (10, 1, 1, 1)) == [1, 1, 1, 1]  # (3, 1, 1, 1) = 6: two back from the first
    assert _proportional_counts(7, (1, 1, 1, 10)) == [1, 1, 1, 4]  # (1, 1, 1, 5) = 8: one back
    assert _proportional_counts(5, (1, 1, 1)) == [2, 2, 1]  # no overshoot: largest remainders first
    parts = stratified_split(torch.tensor([0] * 6 + [1] * 4), (1, 1, 1, 10), torch.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [2, 2, 2, 4]  # class 0: 1, 1, 1, 3; class 1: 1, 1, 1, 1


def test_every_part_holds_every_class_under_skewed_ratios(data):
    train, test = data
    benchmark = same_class_accumulating(train, test, ratios=(1, 1, 1, 10), augment=False)
    for experience in benchmark.train_stream:
        assert sorted(set(experience.dataset.targets)) == [0, 1, 2, 3]
    assert [len(e.dataset) for e in benchmark.train_stream] == [4, 4, 4, 12]


def test_label_noise_changes_exactly_the_drawn_labels_by_the_drawn_offsets():
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    g = torch.Generator().manual_seed(3)
    which = torch.randperm(6, generator=g)[:2]  # round(0.34 * 6) = 2 labels
    offset = torch.randint(1, 3, (2,), generator=g)
    expected = targets.clone()
    expected[which] = (targets[which] + offset) % 3
    assert torch.equal(inject_label_noise(targets, 0.34, 3, torch.Generator().manual_seed(3)), expected)
    assert int((expected != targets).sum()) == 2  # with 3 classes, t + o and t - o differ for o in {1, 2}
    one = inject_label_noise(targets, 0.1, 3, torch.Generator().manual_seed(0))  # round(0.6) = 1 label
    assert int((one != targets).sum()) == 1


def test_streams_get_the_data_path_and_task_label_0(data):
    train, test = data
    for augment in (True, False):
        benchmark = same_class_accumulating(train, test, ratios=(1, 1), validation_fraction=0.5, augment=augment,
                                            mean=(0.25,), std=(0.5,), padding=3)
        for name, stream in benchmark.streams.items():
            for experience in stream:
                assert experience.dataset.collate_fn == BatchCollate((0.25,), (0.5,), augment=augment and
                                                                     name == "train", padding=3)
                assert set(experience.dataset.targets_task_labels) == {0}
    default = same_class_accumulating(train, test, ratios=(1, 1), validation_fraction=0.5)
    stats = _channel_stats(train)
    for name, stream in default.streams.items():
        for experience in stream:
            assert experience.dataset.collate_fn == BatchCollate(*stats, augment=name == "train", padding=4)
    for given in ({"mean": (0.25,)}, {"std": (0.5,)}):  # one alone is replaced by the channel statistics
        alone = same_class_accumulating(train, test, ratios=(1, 1), augment=False, **given)
        assert alone.train_stream[0].dataset.collate_fn == BatchCollate(*stats, augment=False, padding=4)


def test_a_one_image_test_set_and_the_per_sample_crop(data):
    train, test = data
    one = TensorImageDataset(test.images[:1], torch.as_tensor(test.targets)[:1])
    assert len(same_class_accumulating(train, one, ratios=(1, 1)).test_stream[0].dataset) == 1
    per_sample = same_class_accumulating(train, test, ratios=(1, 1), data_path="per_sample")
    image, _, task = per_sample.train_stream[0].dataset[0]  # random crop to the image size, then flip
    assert image.shape == (1, 8, 8) and task == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(ratios=()), "ratios must have at least one entry, e.g. (1, 1, 1, 1)"),
    (dict(ratios=(1,) * 7), "class 0 has 6 samples but ratios asks for 7 parts; every part must hold every class: "
                            "use fewer parts or more data"),
])
def test_bad_ratios_name_the_argument(data, kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        same_class_accumulating(*data, **kwargs)


def test_split_counts_take_back_from_the_most_over_served_part_first():
    # 8 by (1, 1, 1, 1, 1, 5, 6): exact (.5, .5, .5, .5, .5, 2.5, 3); floors of at least one (1, 1, 1, 1, 1, 2, 3) = 10:
    # the last part is the most over-served (3 - 3 = 0 > 2 - 2.5) and gives one back, then the sixth
    # (2 - 2.5 > 2 - 3): (1, 1, 1, 1, 1, 1, 2)
    assert _proportional_counts(8, (1, 1, 1, 1, 1, 5, 6)) == [1, 1, 1, 1, 1, 1, 2]


def test_other_datasets_normalise_by_half_and_fetch_one_sample_at_a_time(data):
    train, test = data
    benchmark = same_class_accumulating(PlainDataset(train), test, ratios=(1, 1), augment=False)
    assert benchmark.train_stream[0].dataset.collate_fn == BatchCollate([0.5], [0.5], augment=False, padding=4)
    assert RelabelledSubset(PlainDataset(train), torch.tensor([0, 1]), torch.tensor([0, 1])).gather(torch.tensor([0])) is None
    subset = RelabelledSubset(train, torch.tensor([5, 2]), torch.tensor([3, 1]))
    batch = subset.gather(torch.tensor([1, 0]))
    assert torch.equal(batch.images, torch.stack([train[2][0], train[5][0]])) and batch.columns[0].tolist() == [1, 3]


def test_test_classes_missing_from_train_are_named(data):
    train, test = data
    few = TensorImageDataset(train.images[torch.as_tensor(train.targets) < 3],
                             torch.as_tensor(train.targets)[torch.as_tensor(train.targets) < 3])
    with pytest.raises(ValueError, match=r"^test holds classes \[3\] that train lacks: a model cannot learn them; "
                                         r"drop those samples from test or pass a training set that holds them$"):
        same_class_accumulating(few, test, ratios=(1, 1))


def test_per_sample_path_evaluates_unaugmented_and_trains_on_padded_crops(data):
    train, test = data
    benchmark = same_class_accumulating(train, test, ratios=(1, 1), data_path="per_sample", mean=(0.0,), std=(1.0,),
                                        padding=1)
    sources = {x.numpy().tobytes() for x, _ in train}
    flipped = {x.flip(-1).numpy().tobytes() for x, _ in train}

    def as_uint8(image):
        return (image * 255).round().to(torch.uint8).numpy().tobytes()

    data_k = benchmark.train_stream[0].dataset
    evaluated = data_k.eval()
    assert all(as_uint8(evaluated[i][0]) in sources for i in range(len(evaluated)))
    torch.manual_seed(0)
    trained = [as_uint8(data_k[i][0]) for i in range(len(data_k))]
    assert any(t not in sources | flipped for t in trained)  # moved by the padded random crop
    assert not any((x[0] == 0).all(dim=0).any() or (x[0] == 0).all(dim=1).any() for x, _ in train)
    for i in range(len(data_k)):  # moved by at most the padding: one zero-filled row and one column at most
        image = data_k[i][0][0]
        assert int((image == 0).all(dim=1).sum()) <= 1 and int((image == 0).all(dim=0).sum()) <= 1
