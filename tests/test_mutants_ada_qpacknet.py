"""Ada-QPacknet tests that kill mutants the rest of the suite let through: the
search's shared start (Alg. 1), full training from the winner's weights, and the
capacity of eq. 10 counted by hand on a whole model (BatchNorm statistics included)."""

from __future__ import annotations

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from avalanche_sst.benchmarks.scenarios import task_incremental
from avalanche_sst.models.quantized_multitask import USED_BITS, QuantizedMultiTaskModel
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet
from conftest import make_images

torch.set_num_threads(1)


def _tiny_net() -> nn.Module:
    """Conv(1->4, 3x3) + BatchNorm(4) + Linear(144->16) + head Linear(16->2)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 36, 16), nn.ReLU(), nn.Linear(16, 2))


@pytest.fixture(scope="module")
def two_tasks():
    torch.manual_seed(0)
    return task_incremental(make_images(20, seed=0, classes=4), make_images(6, seed=1, classes=4),
                            classes_per_step=2, seed=0, validation_fraction=0.25, augment=False)


def _weights(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if not k.endswith(USED_BITS)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _StartOfFullTraining(SupervisedPlugin):
    """The network's weights when the full training's first epoch begins."""

    def __init__(self):
        super().__init__()
        self.weights = None

    def before_training_epoch(self, strategy, **kwargs):
        if self.weights is None:
            self.weights = _weights(strategy.model.net)


def _strategy(bm, **kw) -> AdaQPackNet:
    args = dict(population=3, search_epochs=1, full_epochs=1, train_mb_size=8, eval_mb_size=64)
    args.update(kw)
    torch.manual_seed(0)
    return AdaQPackNet(model=_tiny_net(), valid_stream=bm.valid_stream, **args)


def test_every_candidate_trains_from_the_same_initialisation(two_tasks) -> None:
    """Alg. 1: each candidate of the population starts from the task's shared initial weights,
    not from the previous candidate's trained ones."""
    strat = _strategy(two_tasks)
    starts, short_train = [], strat._short_train

    def recording(task, epochs):
        starts.append(_weights(strat.model.net))
        short_train(task, epochs)

    strat._short_train = recording
    strat.train(two_tasks.train_stream[0])
    assert len(starts) == 3
    assert all(_same(starts[0], s) for s in starts[1:])


def test_full_training_starts_from_the_winning_candidate(two_tasks) -> None:
    """The winner (here candidate 0, not the last one trained) is what full training continues."""
    probe = _StartOfFullTraining()
    strat = _strategy(two_tasks, plugins=[probe])
    trained, short_train = [], strat._short_train
    val_accs = iter([1.0, 0.0, 0.0])  # candidate 0 wins by accuracy (fitness 0.9 + ...)

    def recording(task, epochs):
        short_train(task, epochs)
        trained.append(_weights(strat.model.net))

    strat._short_train = recording
    strat._val_accuracy = lambda task: next(val_accs, 1.0)
    strat.train(two_tasks.train_stream[0])
    assert strat.task_reports[0]["chosen"] == 0 and len(trained) == 3
    assert not _same(trained[0], trained[-1])  # the test can tell the winner from the last one
    assert _same(probe.weights, trained[0])


def test_capacity_of_a_whole_model_by_hand() -> None:
    """Eq. 10 on the model: codes + mask bits + codebooks + 32 bits per fp32 value the task keeps
    (conv bias 4, BatchNorm weight/bias/running mean/running variance 4 each, hidden bias 16,
    head 16*2 + 2 = 70 values; num_batches_tracked is an integer and not counted)."""
    torch.manual_seed(0)
    model = QuantizedMultiTaskModel(_tiny_net())
    (_, conv), (_, hidden) = model.quantized_layers()
    masks = [torch.zeros(conv.weight.shape, dtype=torch.bool), torch.zeros(hidden.weight.shape, dtype=torch.bool)]
    masks[0].view(-1)[:20] = True
    masks[1].view(-1)[:1000] = True
    model.begin_task(0, masks)
    book = torch.tensor([-0.2, -0.1, 0.1, 0.2])
    quantized = [(book, torch.zeros(20, dtype=torch.uint8)), (book, torch.zeros(1000, dtype=torch.uint8))]
    model.commit_task(2, quantized)
    codes, mask_bits, codebooks, fp32 = 1020 * 2, 1020, 2 * 4 * (32 + 2), 70 * 32
    assert model.task_capacity_bits(0) == codes + mask_bits + codebooks + fp32 == 5572
    assert model.model_bits() == 32 * (36 + 144 * 16 + 16 * 2)
    # the unquantized (pruning-only) task: 32-bit values, no codebook
    model.begin_task(1, [~m for m in masks])
    model.commit_task(32, None)
    kept = (36 - 20) + (2304 - 1000)
    assert model.task_capacity_bits(1) == kept * 32 + kept + 70 * 32
