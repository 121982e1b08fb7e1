"""The same-class accumulating scenario: splits, validation slices, label noise,
streams, input checks, and Avalanche strategies running on it."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
from conftest import subset_of
import torch
from torch.utils.data import TensorDataset

from avalanche.training import EWC, Cumulative, LwF, Naive

from avalanche_sst.benchmarks import inject_label_noise, same_class_accumulating, stratified_split
from avalanche_sst.metrics import accuracy, make_evaluator
from avalanche_sst.models import build_model

ACC_KEY = "Top1_Acc_Stream/eval_phase/test_stream/Task000"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def class_counts(targets, indices) -> Counter:
    return Counter(int(targets[i]) for i in indices)


def bench(train, test, **kw):
    kw.setdefault("augment", False)
    return same_class_accumulating(train, test, **kw)


# --------------------------------------------------------------------------
# the split
# --------------------------------------------------------------------------
@pytest.mark.parametrize("ratios", [(1, 1, 1, 1), (2, 1, 1)])
@pytest.mark.parametrize("counts", [40, (30, 21, 13, 50)], ids=["balanced", "imbalanced"])
def test_parts_disjoint_cover_and_proportional(make_data, ratios, counts):
    train, test = make_data(counts, seed=0), make_data(5, seed=1)
    b = bench(train, test, ratios=ratios, seed=3)
    assert len(b.train_stream) == len(ratios)
    parts = [subset_of(e).indices for e in b.train_stream]
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)), "parts overlap"
    assert sorted(flat) == list(range(len(train))), "parts do not cover the training set"

    n_class = Counter(train.targets)
    for p, idx in enumerate(parts):
        got = class_counts(train.targets, idx)
        assert set(got) == set(n_class), f"part {p} misses a class"
        for c, n in n_class.items():
            exact = n * ratios[p] / sum(ratios)
            assert abs(got[c] - exact) < 1, (p, c, got[c], exact)


@pytest.mark.parametrize("ratios", [(1, 1, 1, 1), (2, 1, 1)])
def test_parts_with_validation_cover_the_training_set(make_data, ratios):
    train, test = make_data((30, 21, 13, 50), seed=0), make_data(5, seed=1)
    frac = 0.2
    b = bench(train, test, ratios=ratios, seed=1, validation_fraction=frac)
    assert len(b.valid_stream) == len(b.train_stream) == len(ratios)
    tr = [subset_of(e).indices for e in b.train_stream]
    va = [subset_of(e).indices for e in b.valid_stream]
    flat = [i for p in tr + va for i in p]
    assert len(flat) == len(set(flat)), "train/validation slices overlap"
    assert sorted(flat) == list(range(len(train)))

    n_class = Counter(train.targets)
    for p, (t_idx, v_idx) in enumerate(zip(tr, va)):
        assert not set(t_idx) & set(v_idx)
        t_cnt, v_cnt = class_counts(train.targets, t_idx), class_counts(train.targets, v_idx)
        assert set(v_cnt) == set(n_class), f"validation slice {p} misses a class"
        for c, n in n_class.items():
            part_c = t_cnt[c] + v_cnt[c]
            assert abs(part_c - n * ratios[p] / sum(ratios)) < 1
            assert abs(v_cnt[c] - frac * part_c) < 1, (p, c, v_cnt[c], part_c)
        # the validation slice keeps the true labels
        assert subset_of(b.valid_stream[p]).targets == [train.targets[i] for i in v_idx]


def test_stratified_split_direct():
    targets = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    parts = stratified_split(targets, (1, 1, 1), torch.Generator().manual_seed(0))
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(20))
    for p in parts:
        cnt = Counter(targets[p].tolist())
        assert set(cnt) == {0, 1, 2}
        for c, n in ((0, 10), (1, 7), (2, 3)):
            assert abs(cnt[c] - n / 3) < 1
        assert torch.equal(p, torch.sort(p).values)  # sorted indices
    # uneven ratios, one class
    one = stratified_split(torch.zeros(10, dtype=torch.long), (0.7, 0.3), torch.Generator().manual_seed(0))
    assert [len(p) for p in one] == [7, 3]


def test_no_valid_stream_without_validation(tiny_data):
    b = bench(*tiny_data, ratios=(1, 1), validation_fraction=0.0)
    assert not hasattr(b, "valid_stream")


# --------------------------------------------------------------------------
# seeding
# --------------------------------------------------------------------------
def test_same_seed_same_split_other_seed_other_split(tiny_data):
    def idx(seed):
        b = bench(*tiny_data, ratios=(1, 1, 1), seed=seed, validation_fraction=0.2, label_noise=0.2)
        return ([subset_of(e).indices for e in b.train_stream],
                [subset_of(e).indices for e in b.valid_stream],
                [subset_of(e).targets for e in b.train_stream])

    a, a2, other = idx(5), idx(5), idx(6)
    assert a == a2
    assert a[0][0] != other[0][0]
    assert a[1][0] != other[1][0]


@pytest.mark.parametrize("data_path", ["batched", "per_sample"])
def test_building_leaves_global_rngs_untouched(tiny_data, data_path):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    b = same_class_accumulating(*tiny_data, ratios=(1, 1), seed=7, validation_fraction=0.2, label_noise=0.3,
                                augment=True, data_path=data_path)
    assert len(b.train_stream) == 2
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    after = np.random.get_state()
    assert after[0] == states[2][0] and np.array_equal(after[1], states[2][1]) and after[2:] == states[2][2:]


# --------------------------------------------------------------------------
# label noise
# --------------------------------------------------------------------------
@pytest.mark.parametrize("validation_fraction", [0.0, 0.2])
def test_label_noise_on_the_benchmark(tiny_data, validation_fraction):
    train, test = tiny_data
    frac = 0.3
    b = bench(train, test, ratios=(1, 1, 1), seed=2, validation_fraction=validation_fraction, label_noise=frac)
    true = torch.tensor(train.targets)
    for k, exp in enumerate(b.train_stream):
        sub = subset_of(exp)
        old = true[sub.indices]
        new = torch.tensor(sub.targets)
        # What Avalanche sees (targets and the items themselves) are the noisy labels.
        assert list(exp.dataset.targets) == sub.targets
        assert [exp.dataset[i][1] for i in range(len(exp.dataset))] == sub.targets
        changed = int((new != old).sum())
        if k == 0:
            assert changed == 0, "the first part must stay clean"
        else:
            assert changed == math.floor(frac * len(sub) + 0.5), (k, changed, len(sub))
            assert changed == round(frac * len(sub))  # no .5 tie for these sizes
        assert ((new >= 0) & (new < 4)).all()


def test_label_noise_without_noise_keeps_every_label(tiny_data):
    train, test = tiny_data
    b = bench(train, test, ratios=(1, 1, 1), label_noise=0.0)
    for exp in b.train_stream:
        sub = subset_of(exp)
        assert sub.targets == [train.targets[i] for i in sub.indices]


def test_inject_label_noise_direct():
    targets = torch.arange(4).repeat(25)  # 100 labels, 4 classes
    g = torch.Generator().manual_seed(0)
    noisy = inject_label_noise(targets, 0.37, 4, g)
    changed = noisy != targets
    assert int(changed.sum()) == 37
    assert ((noisy >= 0) & (noisy < 4)).all()
    # the new labels are spread over all the other classes, not a fixed shift
    offsets = set(((noisy[changed] - targets[changed]) % 4).tolist())
    assert offsets == {1, 2, 3}
    # deterministic given the generator
    again = inject_label_noise(targets, 0.37, 4, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    # two classes: a changed label is the other class
    t2 = torch.tensor([0, 1] * 10)
    n2 = inject_label_noise(t2, 0.5, 2, torch.Generator().manual_seed(1))
    assert int((n2 != t2).sum()) == 10
    assert torch.equal(inject_label_noise(t2, 0.0, 2, g), t2)
    assert not torch.equal(inject_label_noise(targets, 0.37, 4, torch.Generator().manual_seed(1)), noisy)


# --------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------
def test_test_stream_and_task_labels(tiny_data):
    train, test = tiny_data
    b = bench(train, test, ratios=(1, 1), validation_fraction=0.2)
    assert len(b.test_stream) == 1
    t = b.test_stream[0]
    assert len(t.dataset) == len(test)
    assert list(t.dataset.targets) == test.targets
    x0, y0 = t.dataset[3][0], t.dataset[3][1]
    assert torch.equal(x0, test.images[3]) and y0 == test.targets[3]
    for stream in (b.train_stream, b.test_stream, b.valid_stream):
        for e in stream:
            assert e.task_label == 0
            assert e.task_labels == [0]
            assert set(e.dataset.targets_task_labels) == {0}
    assert [e.current_experience for e in b.train_stream] == [0, 1]
    assert b.num_classes == 4 and b.ratios == (1, 1) and b.seed == 0


# --------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(ratios=(1, 0, 1)), "ratios must be positive"),
    (dict(ratios=(1, -1)), "ratios must be positive"),
    (dict(ratios=()), "ratios must have at least one entry"),
    (dict(ratios=(1, float("nan"))), "ratios must be positive"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(validation_fraction=-0.1), "validation_fraction"),
    (dict(label_noise=1.0), "label_noise"),
    (dict(label_noise=-0.1), "label_noise"),
    (dict(data_path="nope"), "data_path"),
])
def test_bad_arguments(tiny_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        same_class_accumulating(*tiny_data, **kwargs)


def test_class_with_fewer_samples_than_parts(make_data):
    train = make_data((10, 10, 10, 2), seed=0)
    with pytest.raises(ValueError, match="class 3 has 2 samples but ratios asks for 3 parts"):
        same_class_accumulating(train, make_data(3, seed=1), ratios=(1, 1, 1))


def test_dataset_without_targets(tiny_data):
    train, test = tiny_data
    plain = TensorDataset(train.images, torch.tensor(train.targets))
    with pytest.raises(ValueError, match="train has no `targets`"):
        same_class_accumulating(plain, test)
    with pytest.raises(ValueError, match="test has no `targets`"):
        same_class_accumulating(train, TensorDataset(test.images, torch.tensor(test.targets)))


# --------------------------------------------------------------------------
# Avalanche strategies run on it
# --------------------------------------------------------------------------
STRATEGIES = {
    "naive": lambda **kw: Naive(**kw),
    "lwf": lambda **kw: LwF(alpha=1.0, temperature=2.0, **kw),
    "ewc": lambda **kw: EWC(ewc_lambda=1.0, **kw),
    "cumulative": lambda **kw: Cumulative(**kw),
}


@pytest.mark.parametrize("name, data_path", [(n, "batched") for n in STRATEGIES] + [("naive", "per_sample")])
def test_avalanche_strategies_train_and_eval(tiny_data, name, data_path):
    b = same_class_accumulating(*tiny_data, ratios=(1, 1), seed=0, data_path=data_path)
    torch.manual_seed(0)
    model = build_model("resnet8-w4", num_classes=b.num_classes, in_channels=1)
    strategy = STRATEGIES[name](
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        criterion=torch.nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=1, eval_mb_size=64,
        evaluator=make_evaluator(),
    )
    for exp in b.train_stream:  # two experiences: LwF/EWC penalties are active on the second
        strategy.train(exp)
    result = strategy.eval(b.test_stream)
    assert ACC_KEY in result
    acc = float(result[ACC_KEY])
    assert 0.0 <= acc <= 1.0
    # Avalanche evaluated the whole test set: its number equals our own loop's.
    assert acc == pytest.approx(accuracy(strategy.model, b.test_stream[0].dataset), abs=1e-9)
    assert torch.isfinite(torch.tensor(float(result["Loss_Stream/eval_phase/test_stream/Task000"])))
