"""The library's own loaders (Ada-QPacknet's search, the validation accuracy, the
edge method's pruning batch, M2KD's statistics pass) fetch a mini-batch with one
gather and give the batches the per-sample fetch gave under the same seed."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from avalanche_sst.benchmarks import TensorImageDataset, batched_fetch, class_incremental, task_incremental
from avalanche_sst.benchmarks.batched_fetch import batched_loader
from avalanche_sst.functional.filter_pruning import pruning_batch
from avalanche_sst.metrics.validation import accuracy, validation_data
from avalanche_sst.plugins.m2kd import M2KDPlugin
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet
from conftest import make_images


def per_sample(monkeypatch) -> None:
    """The fetch as before: the loaders see the Avalanche dataset itself (one ``dataset[i]`` per sample)."""
    monkeypatch.setattr(batched_fetch, "batched", lambda dataset: dataset)


def _bench(augment=True, validation_fraction=0.0):
    return class_incremental(make_images(13, seed=0), make_images(5, seed=1), classes_per_step=2, seed=0,
                             augment=augment, validation_fraction=validation_fraction)


def _equal(a, b) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b))


def test_batched_loader_gives_torchs_per_sample_batches_with_one_gather_each(fetches):
    data = _bench().train_stream[0].dataset.train()  # 26 samples, crops and flips on
    fetches.update(gather=0, getitem=0)  # building the benchmark reads one sample
    torch.manual_seed(5)
    got = [batch for batch in batched_loader(data, 8, shuffle=True)]
    assert fetches == {"gather": 4, "getitem": 0}  # batches of 8, 8, 8, 2
    torch.manual_seed(5)
    want = list(DataLoader(data, batch_size=8, shuffle=True, collate_fn=data.collate_fn))
    assert fetches["getitem"] == 26
    assert len(got) == len(want) == 4
    for a, b in zip(got, want):
        assert _equal(a, b)
    assert not torch.equal(got[0][0], got[0][0].flip(-1))  # the images are not trivially symmetric


class Recording(nn.Module):
    """A linear classifier that keeps a copy of every input batch."""

    def __init__(self, features: int = 64, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(features, classes)
        self.inputs: list = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("held_out", [True, False], ids=["validation_slice", "training_data_unaugmented"])
def test_validation_accuracy_sees_the_same_batches_in_one_gather_each(monkeypatch, fetches, held_out):
    bench = _bench(validation_fraction=0.3 if held_out else 0.0)
    exp = bench.train_stream[0]
    data = validation_data(exp, bench.valid_stream if held_out else None)
    model = Recording()
    fetches.update(gather=0, getitem=0)
    acc = accuracy(model, data, batch_size=4)
    batches = math.ceil(len(data) / 4)
    assert fetches == {"gather": batches, "getitem": 0} and len(model.inputs) == batches
    batched_inputs, model.inputs = model.inputs, []
    per_sample(monkeypatch)
    assert accuracy(model, data, batch_size=4) == acc
    assert fetches["getitem"] == len(data)
    assert _equal(batched_inputs, model.inputs)


def test_pruning_batch_is_one_gather(monkeypatch, fetches):
    exp = _bench().train_stream[1]
    fetches.update(gather=0, getitem=0)
    batch = pruning_batch(exp, num_images=9, seed=3)
    assert fetches == {"gather": 1, "getitem": 0}
    per_sample(monkeypatch)
    assert torch.equal(pruning_batch(exp, num_images=9, seed=3), batch)
    assert fetches["getitem"] == 9


def test_m2kd_statistics_loader_is_one_gather_per_batch(monkeypatch, fetches):
    exp = _bench().train_stream[0]
    strategy = SimpleNamespace(adapted_dataset=None, experience=exp, train_mb_size=8)
    fetches.update(gather=0, getitem=0)
    torch.manual_seed(2)  # the training experience's collate crops and flips, after .eval() too
    got = list(M2KDPlugin._step_loader(None, strategy))
    assert fetches == {"gather": 4, "getitem": 0}
    per_sample(monkeypatch)
    torch.manual_seed(2)
    want = list(M2KDPlugin._step_loader(None, strategy))
    assert fetches["getitem"] == 26
    assert len(got) == len(want) == 4 and all(_equal(a, b) for a, b in zip(got, want))


def _ada_qpacknet_weights(fetches: dict) -> tuple[dict, list]:
    bench = task_incremental(make_images(12, seed=0), make_images(4, seed=1), classes_per_step=2, seed=0,
                             validation_fraction=0.25, augment=True)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    strategy = AdaQPackNet(model=net, valid_stream=bench.valid_stream, population=2, search_epochs=2, full_epochs=1,
                           train_mb_size=5, eval_mb_size=64)
    short_train, gathers = strategy._short_train, []

    def counted(task, epochs):
        before = fetches["gather"]
        short_train(task, epochs)
        gathers.append((fetches["gather"] - before, epochs * math.ceil(len(strategy.experience.dataset) / 5)))

    strategy._short_train = counted
    torch.manual_seed(1)
    strategy.train(bench.train_stream[0], eval_streams=[])
    return {k: v.clone() for k, v in strategy.model.state_dict().items()}, gathers


def test_ada_qpacknet_search_fetches_one_gather_per_batch_and_trains_as_before(monkeypatch, fetches):
    weights, gathers = _ada_qpacknet_weights(fetches)
    assert len(gathers) == 2 and all(got == want for got, want in gathers)  # one short training per candidate
    assert fetches["getitem"] <= 1  # nor anywhere else in the step (building the benchmark reads one sample)
    per_sample(monkeypatch)
    fetches.update(gather=0, getitem=0)
    again, _ = _ada_qpacknet_weights(fetches)
    assert fetches["getitem"] > 2 * 24
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
