"""The class-split scenarios (class-, task-incremental, permuted, new-class,
unseen-class): partitions, seeding, task labels, relabelling, permutations,
validation slices, input checks, and Avalanche strategies running in each."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import subset_of
import torch

from avalanche.models.packnet import PackNetModel
from avalanche.training import EWC, Cumulative, LwF, Naive, PackNet, Replay

from avalanche_sst.benchmarks import (
    TensorImageDataset,
    class_incremental,
    new_class,
    permuted,
    same_class_accumulating,
    task_incremental,
    unseen_class,
)
from avalanche_sst.benchmarks.class_split import (
    check_class_order,
    draw_class_order,
    group_sizes,
    present_classes,
    relabel_table,
    select_classes,
    split_groups,
    validation_split,
)
from avalanche_sst.benchmarks.scenarios import PermutedImages
from avalanche_sst.metrics import accuracy, make_evaluator
from avalanche_sst.models import build_model


def ten_classes(n_per_class: int, seed: int, classes: int = 10, size: int = 8) -> TensorImageDataset:
    """uint8 ``[N, 1, size, size]`` images; class c has mean intensity 15 + 24 c (noise std 5)."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(classes).repeat_interleave(n_per_class)
    ys = ys[torch.randperm(len(ys), generator=g)]
    x = (15 + 24 * ys).float().view(-1, 1, 1, 1) + 5 * torch.randn(len(ys), 1, size, size, generator=g)
    return TensorImageDataset(x.round().clamp(0, 255).to(torch.uint8), ys)


@pytest.fixture(scope="module")
def data():
    """(train, test): 10 classes x 12 train / 4 test images of 1x8x8."""
    return ten_classes(12, seed=0), ten_classes(4, seed=1)


def original_classes(experience, base) -> set:
    return {base.targets[i] for i in subset_of(experience).indices}


def items(experience):
    d = experience.dataset
    return [d[i] for i in range(len(d))]


BUILDERS = {
    "class_incremental": lambda tr, te, **kw: class_incremental(tr, te, classes_per_step=2, **kw),
    "task_incremental": lambda tr, te, **kw: task_incremental(tr, te, classes_per_step=2, **kw),
    "permuted": lambda tr, te, **kw: permuted(tr, te, n_tasks=3, **kw),
    "new_class": lambda tr, te, **kw: new_class(tr, te, base_classes=9, **kw),
    "unseen_class": lambda tr, te, **kw: unseen_class(tr, te, seen_classes=2, **kw),
}


# --------------------------------------------------------------------------
# the pure helpers, by hand
# --------------------------------------------------------------------------
def test_group_sizes_split_and_relabel_tables():
    assert group_sizes(2, 6) == [2, 2, 2]
    assert group_sizes((3, 1, 2), 6) == [3, 1, 2]
    groups = split_groups([4, 0, 5, 2, 1, 3], [3, 1, 2])
    assert groups == [[4, 0, 5], [2], [1, 3]]
    # one head: class_order[i] -> i
    assert relabel_table(groups, per_group=False).tolist() == [1, 4, 3, 5, 0, 2]
    # one head per task: positions restart at 0 in each group
    assert relabel_table(groups, per_group=True).tolist() == [1, 0, 0, 1, 0, 2]


def test_class_order_draw_and_check():
    assert draw_class_order(6, seed=3) == torch.randperm(6, generator=torch.Generator().manual_seed(3)).tolist()
    assert check_class_order((2, 0, 1), 3) == [2, 0, 1]
    with pytest.raises(ValueError, match="class_order must be a permutation of the 3 classes"):
        check_class_order([0, 1, 3], 3)


def test_select_classes_and_validation_split_by_hand():
    targets = torch.tensor([0, 1, 2, 1, 0, 2, 1, 0])
    assert select_classes(targets, torch.tensor([7, 1, 2, 3, 0]), [0, 1]).tolist() == [7, 1, 3, 0]
    keep, held = validation_split(targets, 0.34, seed=0)
    assert sorted(keep.tolist() + held.tolist()) == list(range(8))
    # 3 samples of classes 0 and 1 -> 1 held each; 2 samples of class 2 -> 1 held (each part >= 1)
    assert sorted(targets[held].tolist()) == [0, 1, 2]
    all_kept, none = validation_split(targets, 0.0, seed=0)
    assert none is None and all_kept.tolist() == list(range(8))
    assert present_classes(targets) == [0, 1, 2]


# --------------------------------------------------------------------------
# class groups, order, relabelling
# --------------------------------------------------------------------------
@pytest.mark.parametrize("builder", [class_incremental, task_incremental])
@pytest.mark.parametrize("classes_per_step, sizes", [(2, [2] * 5), ((4, 3, 2, 1), [4, 3, 2, 1]), (10, [10])])
def test_class_groups_partition_the_classes(data, builder, classes_per_step, sizes):
    train, test = data
    b = builder(train, test, classes_per_step=classes_per_step, seed=3, augment=False)
    assert [len(g) for g in b.class_groups] == sizes
    flat = [c for g in b.class_groups for c in g]
    assert sorted(flat) == list(range(10)) and flat == b.class_order
    assert len(b.train_stream) == len(b.test_stream) == len(sizes)
    for k, group in enumerate(b.class_groups):
        assert original_classes(b.train_stream[k], train) == set(group)
        assert original_classes(b.test_stream[k], test) == set(group)
        # every image of the group's classes is in the experience
        assert len(b.train_stream[k].dataset) == 12 * len(group)
        assert len(b.test_stream[k].dataset) == 4 * len(group)


def test_class_order_from_seed_reproducible_and_overridable(data):
    first, again, other = (class_incremental(*data, seed=s, augment=False) for s in (0, 0, 1))
    assert first.class_order == again.class_order and first.class_groups == again.class_groups
    assert first.class_order != other.class_order
    assert sorted(other.class_order) == list(range(10))
    assert [subset_of(e).indices for e in first.train_stream] == [subset_of(e).indices for e in again.train_stream]
    given = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    b = class_incremental(*data, seed=0, class_order=given, augment=False)
    assert b.class_order == given and b.class_groups[0] == [9, 8]
    assert original_classes(b.train_stream[0], data[0]) == {8, 9}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_building_leaves_global_rngs_untouched(data, name):
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    before = torch.random.get_rng_state(), random.getstate(), np.random.get_state()
    BUILDERS[name](*data, seed=5, validation_fraction=0.25, augment=True)
    assert torch.equal(torch.random.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    after = np.random.get_state()
    assert np.array_equal(after[1], before[2][1]) and after[2:] == before[2][2:]


def test_class_incremental_relabels_by_the_order(data):
    train, test = data
    b = class_incremental(train, test, classes_per_step=(3, 3, 4), seed=2, validation_fraction=0.25, augment=False)
    position = {c: i for i, c in enumerate(b.class_order)}
    assert b.classes_per_exp == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]] and b.num_classes == 10
    for stream, base in ((b.train_stream, train), (b.test_stream, test), (b.valid_stream, train)):
        for k, exp in enumerate(stream):
            indices = subset_of(exp).indices
            got = items(exp)
            assert [y for _, y, _ in got] == [position[base.targets[i]] for i in indices]
            assert all(t == 0 for _, _, t in got)
            assert exp.task_label == 0
            assert exp.classes_in_this_experience == b.classes_per_exp[k]
            assert torch.equal(got[0][0], base.images[indices[0]])  # uint8 image untouched


def test_task_incremental_task_labels_and_per_task_labels(data):
    train, test = data
    b = task_incremental(train, test, classes_per_step=(4, 2, 2, 2), seed=1, validation_fraction=0.25, augment=False)
    assert b.classes_per_exp == [[0, 1, 2, 3], [0, 1], [0, 1], [0, 1]] and b.num_classes == 4
    for stream, base in ((b.train_stream, train), (b.test_stream, test), (b.valid_stream, train)):
        assert len(stream) == 4
        for k, exp in enumerate(stream):
            assert exp.task_label == k and exp.task_labels == [k]
            position = {c: i for i, c in enumerate(b.class_groups[k])}
            got = items(exp)
            assert [y for _, y, _ in got] == [position[base.targets[i]] for i in subset_of(exp).indices]
            assert {t for _, _, t in got} == {k}


# --------------------------------------------------------------------------
# permuted
# --------------------------------------------------------------------------
def test_permutations_fixed_per_task_identity_first(data):
    train, test = data
    b = permuted(train, test, n_tasks=4, seed=7, validation_fraction=0.25)
    perms = b.permutations
    assert b.setting == "task_incremental" and len(perms) == 4
    assert torch.equal(perms[0], torch.arange(64))
    for p in perms:
        assert torch.equal(torch.sort(p).values, torch.arange(64))  # every pixel exactly once
    assert len({tuple(p.tolist()) for p in perms}) == 4
    again = permuted(train, test, n_tasks=4, seed=7).permutations
    assert all(torch.equal(p, q) for p, q in zip(perms, again))
    other = permuted(train, test, n_tasks=4, seed=8).permutations
    assert not torch.equal(perms[1], other[1])
    for stream, base in ((b.train_stream, train), (b.test_stream, test), (b.valid_stream, train)):
        for k, exp in enumerate(stream):
            assert exp.task_label == k
            indices = subset_of(exp).indices
            image, label, task = exp.dataset[1]
            original = base.images[indices[1]]
            assert torch.equal(image.flatten(), original.flatten()[perms[k]])
            assert label == base.targets[indices[1]] and task == k
    assert b.classes_per_exp == [list(range(10))] * 4
    assert len(b.test_stream[2].dataset) == len(test)


def test_permuted_images_move_pixels_by_hand():
    image = torch.arange(8, dtype=torch.uint8).view(2, 2, 2)  # 2 channels of 2x2
    base = TensorImageDataset(image[None], [0])
    out, _ = PermutedImages(base, torch.tensor([3, 0, 2, 1]))[0]
    assert out.tolist() == [[[3, 0], [2, 1]], [[7, 4], [6, 5]]]


# --------------------------------------------------------------------------
# new class, unseen class
# --------------------------------------------------------------------------
def test_new_class_contents(data):
    train, test = data
    b = new_class(train, test, base_classes=9, seed=4, augment=False)
    base, new = b.class_order[:9], b.class_order[9:]
    assert b.setting == "new_class" and b.base_classes == 9
    assert len(b.train_stream) == len(b.test_stream) == 2
    assert original_classes(b.train_stream[0], train) == set(base)
    assert original_classes(b.train_stream[1], train) == set(new)
    assert original_classes(b.test_stream[0], test) == set(base)
    assert original_classes(b.test_stream[1], test) == set(new)
    assert {y for _, y, _ in items(b.test_stream[1])} == {9}
    assert b.classes_per_exp == [list(range(9)), [9]]


def test_unseen_class_contents(data):
    train, test = data
    b = unseen_class(train, test, seen_classes=3, seed=2, labelled=False, validation_fraction=0.25, augment=False)
    seen, unseen = set(b.seen_classes), set(b.unseen_classes)
    assert seen == set(b.class_order[:3]) and seen | unseen == set(range(10)) and not seen & unseen
    assert b.labelled is False and b.setting == "unseen_class"
    assert len(b.pretrain_stream) == len(b.train_stream) == len(b.test_stream) == 1
    assert original_classes(b.pretrain_stream[0], train) == set(range(10))
    assert original_classes(b.train_stream[0], train) == seen
    assert original_classes(b.test_stream[0], test) == unseen
    assert len(b.test_stream[0].dataset) == 4 * 7
    # original labels, no relabelling
    exp = b.train_stream[0]
    assert [y for _, y, _ in items(exp)] == [train.targets[i] for i in subset_of(exp).indices]
    # the held-out slice is out of both training streams
    held = set(subset_of(b.pretrain_valid_stream[0]).indices)
    assert not held & set(subset_of(b.pretrain_stream[0]).indices)
    assert set(subset_of(b.valid_stream[0]).indices) <= held
    assert original_classes(b.valid_stream[0], train) == seen
    assert unseen_class(train, test, seed=2).labelled is True


# --------------------------------------------------------------------------
# validation slices
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BUILDERS))
def test_valid_stream_disjoint_from_train_and_stratified(data, name):
    train, _ = data
    b = BUILDERS[name](*data, seed=0, validation_fraction=0.25, augment=False)
    assert len(b.valid_stream) == len(b.train_stream)
    for tr, va in zip(b.train_stream, b.valid_stream):
        tr_idx, va_idx = set(subset_of(tr).indices), set(subset_of(va).indices)
        assert va_idx and not tr_idx & va_idx
        assert original_classes(va, train) == original_classes(tr, train)
        for c in original_classes(va, train):
            assert sum(train.targets[i] == c for i in va_idx) == 3  # 25% of 12
    assert BUILDERS[name](*data, seed=0, augment=False).valid_stream is None


# --------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda tr, te: class_incremental(tr, te, classes_per_step=3), "classes_per_step=3 must be a positive divisor"),
    (lambda tr, te: class_incremental(tr, te, classes_per_step=(4, 4)), r"sums to 8 .* 10 classes"),
    (lambda tr, te: task_incremental(tr, te, classes_per_step=(5, 0, 5)), "classes_per_step must list positive"),
    (lambda tr, te: class_incremental(tr, te, class_order=[0, 1, 2]), "class_order must be a permutation"),
    (lambda tr, te: task_incremental(tr, te, class_order=[0] * 10), "class_order must be a permutation"),
    (lambda tr, te: permuted(tr, te, n_tasks=0), "n_tasks must be a positive int"),
    (lambda tr, te: new_class(tr, te, base_classes=10), r"base_classes must be an int in \[1, 9\]"),
    (lambda tr, te: new_class(tr, te, base_classes=0), "base_classes"),
    (lambda tr, te: unseen_class(tr, te, seen_classes=10), r"seen_classes must be an int in \[1, 9\]"),
    (lambda tr, te: class_incremental(tr, te, validation_fraction=1.0), "validation_fraction"),
    (lambda tr, te: class_incremental(tr, te, data_path="nope"), "data_path"),
])
def test_bad_arguments_name_the_argument(data, call, match):
    with pytest.raises(ValueError, match=match):
        call(*data)


def test_more_tasks_than_permutations_of_a_tiny_image():
    train, test = ten_classes(2, seed=0, size=2), ten_classes(1, seed=1, size=2)
    assert len(permuted(train, test, n_tasks=24).permutations) == 24  # 4! distinct, all used
    with pytest.raises(ValueError, match="n_tasks=25 but images of 4 pixels allow only 24"):
        permuted(train, test, n_tasks=25)


def test_empty_class_and_missing_classes(data):
    train, test = data
    gap = TensorImageDataset(train.images, [c if c != 3 else 4 for c in train.targets])
    for builder in BUILDERS.values():
        with pytest.raises(ValueError, match=r"train has no sample of classes \[3\]"):
            builder(gap, TensorImageDataset(test.images, [c if c != 3 else 4 for c in test.targets]))
    nine = TensorImageDataset(train.images, [min(c, 8) for c in train.targets])
    for call in (*BUILDERS.values(), same_class_accumulating):
        with pytest.raises(ValueError, match=r"test holds classes \[9\] that train lacks"):
            call(nine, test)
    no_test_of_7 = TensorImageDataset(test.images, [c if c != 7 else 6 for c in test.targets])
    with pytest.raises(ValueError, match=r"test has no sample of classes \[.*7.*\]"):
        class_incremental(train, no_test_of_7, classes_per_step=1)


def test_validation_needs_two_samples_per_class():
    train, test = ten_classes(1, seed=0), ten_classes(1, seed=1)
    with pytest.raises(ValueError, match="validation_fraction=0.2 needs >= 2 training samples per class"):
        class_incremental(train, test, validation_fraction=0.2)


# --------------------------------------------------------------------------
# Avalanche strategies in every setting
# --------------------------------------------------------------------------
STRATEGIES = {
    "naive": lambda **kw: Naive(**kw),
    "lwf": lambda **kw: LwF(alpha=1.0, temperature=2.0, **kw),
    "ewc": lambda **kw: EWC(ewc_lambda=1.0, **kw),
    "replay": lambda **kw: Replay(mem_size=8, **kw),
    "cumulative": lambda **kw: Cumulative(**kw),
}


@pytest.fixture(scope="module")
def small_data():
    """10 classes x 4 train / 2 test images: one experience is a handful of images."""
    return ten_classes(4, seed=2), ten_classes(2, seed=3)


EVERY_SETTING = {**BUILDERS, "same_class": lambda tr, te, **kw: same_class_accumulating(tr, te, ratios=(1, 1), **kw)}


@pytest.mark.parametrize("setting", list(EVERY_SETTING))
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_avalanche_strategies_train_and_eval_in_every_setting(small_data, setting, name):
    b = EVERY_SETTING[setting](*small_data, seed=0)
    task_aware = setting in ("task_incremental", "permuted")
    torch.manual_seed(0)
    model = build_model("mlp-16", b.num_classes, in_channels=1, image_size=8, multi_head=task_aware)
    before = [p.detach().clone() for p in model.parameters()]
    strategy = STRATEGIES[name](
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=8, train_epochs=1, eval_mb_size=16, evaluator=make_evaluator(),
    )
    # Two experiences, so that LwF's and EWC's penalties, Replay's buffer and
    # Cumulative's union (two task labels in a batch) are all exercised.
    steps = [b.pretrain_stream[0], b.train_stream[0]] if setting == "unseen_class" else b.train_stream[:2]
    strategy.train(steps[0])
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters())), "nothing was trained"
    strategy.train(steps[1])
    result = strategy.eval(b.test_stream[:2])
    for k, exp in enumerate(b.test_stream[:2]):
        acc = float(result[f"Top1_Acc_Exp/eval_phase/test_stream/Task{exp.task_label:03d}/Exp{k:03d}"])
        assert 0.0 <= acc <= 1.0
        if not task_aware:  # a single-head model: Avalanche's number equals our own loop's
            assert acc == pytest.approx(accuracy(strategy.model, exp.dataset), abs=1e-9)


@pytest.mark.parametrize("model_name", ["mlp-16", "cnn-4-8"])
def test_packnet_runs_on_the_bn_free_models_and_forgets_nothing(small_data, model_name):
    b = task_incremental(*small_data, classes_per_step=2, seed=0, augment=False)
    torch.manual_seed(0)
    model = PackNetModel(build_model(model_name, b.num_classes, in_channels=1, image_size=8))
    strategy = PackNet(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), post_prune_epochs=1,
        prune_proportion=0.5, train_mb_size=8, train_epochs=2, eval_mb_size=16, evaluator=make_evaluator(),
    )
    x0 = torch.stack([x for x, _, _ in items(b.test_stream[0])]).float()
    task0 = torch.zeros(len(x0), dtype=torch.long)

    def outputs_task0():
        model.eval()
        with torch.no_grad():
            return model(x0, task0).clone()

    strategy.train(b.train_stream[0])
    after_first = outputs_task0()
    strategy.train(b.train_stream[1])
    assert torch.equal(outputs_task0(), after_first), "PackNet changed task 0's function"
    result = strategy.eval(b.test_stream[:2])
    assert 0.0 <= float(result["Top1_Acc_Exp/eval_phase/test_stream/Task001/Exp001"]) <= 1.0
