"""Ada-QPacknet tests that kill mutants the rest of the suite let through: the
search's shared start (Alg. 1), full training from the winner's weights, and the
capacity of eq. 10 counted by hand on a whole model (BatchNorm statistics included)."""

from __future__ import annotations

import re

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from avalanche_sst.functional.adaptive_pruning import fitness, select_candidate
from avalanche_sst.models.quantized_multitask import USED_BITS, QuantizedMultiTaskModel
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet
from conftest import tiny_task_net, two_binary_tasks

torch.set_num_threads(1)


_tiny_net = tiny_task_net


@pytest.fixture(scope="module")
def two_tasks():
    return two_binary_tasks()


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


def test_search_report_scores_the_candidates_with_the_strategys_alpha_and_beta(two_tasks) -> None:
    """Alg. 1 lines 12-14 with alpha 0.3, beta 0.7: the reported fitness and the winner are those of the
    strategy's own weights over its candidates' accuracies and sparsities left; at task 0 nothing is
    occupied before, so each candidate's sparsity left counts the positions its own mask leaves free."""
    strat = _strategy(two_tasks, alpha=0.3, beta=0.7)
    val_accs = iter([1.0, 0.6, 0.9])  # then 1.0 for the quantization step
    strat._val_accuracy = lambda task: next(val_accs, 1.0)
    strat.train(two_tasks.train_stream[0])
    report = strat.task_reports[0]
    accs, lefts = report["candidate_accuracy"], report["candidate_sparsity_left"]
    assert accs == [1.0, 0.6, 0.9]
    positions = sum(int(a.numel()) for a in strat.model.available_masks(8))
    assert all(0 < left < positions for left in lefts)
    assert report["candidate_fitness"] == pytest.approx([float(f) for f in fitness(accs, lefts, 0.3, 0.7)], abs=0)
    chosen = select_candidate(accs, lefts, 0.3, 0.7)
    # the weights matter here: the defaults' beta (0.1) with either alpha would choose another candidate
    assert chosen not in (select_candidate(accs, lefts, 0.7, 0.1), select_candidate(accs, lefts, 0.3, 0.1))
    assert report["chosen"] == chosen
    cap = strat.model.task_capacity_bits(0)
    assert report["capacity_bits"] == cap and report["capacity_fraction"] == cap / strat.model.model_bits()


def test_method_state_is_a_copy_and_loads_without_reports(two_tasks) -> None:
    strat = _strategy(two_tasks)
    strat.task_reports = [{"task": 0, "chosen": 1, "density": [0.5]}]
    state = strat.method_state()
    state["task_reports"][0]["density"][0] = 9.0
    assert strat.task_reports == [{"task": 0, "chosen": 1, "density": [0.5]}]
    other = _strategy(two_tasks)
    other.load_method_state(state)
    state["task_reports"][0]["density"][0] = 7.0
    assert other.task_reports == [{"task": 0, "chosen": 1, "density": [9.0]}]
    other.load_method_state({})  # a checkpoint written before any task
    assert other.task_reports == []


def test_learning_rates_of_the_search_and_of_full_training(two_tasks, monkeypatch) -> None:
    """The search's short trainings and every task's full training start at the strategy's lr and anneal
    (cosine) to lr_min over their iterations; the short trainings draw shuffled batches."""
    from avalanche_sst.strategies import ada_qpacknet as module

    lr, lr_min = 0.02, 0.001
    probe = _LearningRates()
    strat = _strategy(two_tasks, lr=lr, lr_min=lr_min, full_epochs=2, plugins=[probe])
    schedules, shuffles, loader = [], [], module.batched_loader

    class Recording(module.CosineAnnealingLR):
        def __init__(self, optimizer, T_max, eta_min=0.0):
            schedules.append((optimizer.param_groups[0]["lr"], T_max, eta_min))
            super().__init__(optimizer, T_max=T_max, eta_min=eta_min)

    def recording_loader(data, batch_size, shuffle=False, **kw):
        shuffles.append(shuffle)
        return loader(data, batch_size, shuffle=shuffle, **kw)

    monkeypatch.setattr(module, "CosineAnnealingLR", Recording)
    monkeypatch.setattr(module, "batched_loader", recording_loader)
    for experience in two_tasks.train_stream:
        strat.train(experience)
    batches = -(-len(two_tasks.train_stream[0].dataset) // 8)  # 30 training images, mini-batches of 8
    search = [(lr, batches, lr_min)] * 3  # one short training (1 epoch) per candidate
    assert schedules == search + [(lr, 2 * batches, lr_min)] + search + [(lr, 2 * batches, lr_min)]
    assert shuffles == [True] * 6
    # full training: lr (and initial_lr) reset at each task's start, lr_min after its last iteration
    assert probe.starts == [(lr, lr), (lr, lr)]
    assert probe.ends == pytest.approx([lr_min, lr_min], rel=1e-9)


class _LearningRates(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.starts, self.ends = [], []

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == 0:
            group = strategy.optimizer.param_groups[0]
            self.starts.append((group["lr"], group["initial_lr"]))

    def after_training_exp(self, strategy, **kwargs):
        self.ends.append(strategy.optimizer.param_groups[0]["lr"])


def _with_accuracies(strat: AdaQPackNet, accuracies: list) -> AdaQPackNet:
    """Validation accuracies in call order: the 3 candidates, full precision, then each bit-width tried."""
    values = iter(accuracies)
    strat._val_accuracy = lambda task: next(values)
    return strat


def test_alg2_stops_at_the_first_bit_width_within_delta_points(two_tasks) -> None:
    # delta 25 points of 0.75: 2 bits (0.25) lose 50 points, 3 bits (0.5) lose exactly 25: kept
    strat = _with_accuracies(_strategy(two_tasks, start_bits=2, max_bits=4, delta=25.0),
                             [1.0, 1.0, 1.0, 0.75, 0.25, 0.5, 0.75])
    strat.train(two_tasks.train_stream[0])
    report = strat.task_reports[0]
    assert (report["bits"], report["accuracy_fp32"], report["accuracy_quantized"], report["met_delta"]) == \
        (3, 0.75, 0.5, 1)
    with pytest.raises(ValueError, match=r"^task label 0 was already trained: Ada-QPacknet runs only in a "
                                         r"task-incremental scenario, not a class-incremental one$"):
        strat._task_label(two_tasks.train_stream[0])


def test_alg2_keeps_max_bits_and_warns_when_no_bit_width_is_within_delta(two_tasks) -> None:
    strat = _with_accuracies(_strategy(two_tasks, start_bits=2, max_bits=4, delta=25.0),
                             [1.0, 1.0, 1.0, 0.75, 0.25, 0.25, 0.25, 0.25])
    with pytest.warns(UserWarning, match=r"^task 0: 4-bit quantization loses 50\.00 points \(> delta=25\.0\); "
                                         r"keeping 4 bits$"):
        strat.train(two_tasks.train_stream[0])
    report = strat.task_reports[0]
    assert (report["bits"], report["accuracy_quantized"], report["met_delta"]) == (4, 0.25, 0)


def test_task_label_messages(two_tasks) -> None:
    from types import SimpleNamespace

    strat = _strategy(two_tasks)
    with pytest.raises(ValueError, match=r"^Ada-QPacknet needs one task label per experience, got \[0, 1\]; "
                                         r"use a task-incremental scenario$"):
        strat._task_label(SimpleNamespace(task_labels=[0, 1]))


def test_the_papers_defaults_and_the_arguments_reach_the_strategy(two_tasks) -> None:
    torch.manual_seed(0)
    default = AdaQPackNet(model=_tiny_net(), valid_stream=two_tasks.valid_stream)
    assert (default.population, default.v_min, default.v_max, default.alpha, default.beta, default.delta) == \
        (16, 0.45, 0.85, 0.9, 0.1, 1.0)
    assert (default.search_epochs, default.full_epochs, default.start_bits, default.max_bits, default.quantizer) == \
        (5, 50, 2, 8, "kmeans")
    assert (default.prune, default.quantize, default.lr, default.lr_min, default.seed) == (True, True, 0.01, 1e-4, 0)
    assert default.train_epochs == 50 and default.optimizer.param_groups[0]["lr"] == 0.01
    assert default.model.head_name == "6" and default.model.unseen_tasks == "raise"
    given = AdaQPackNet(model=_tiny_net(), valid_stream=two_tasks.valid_stream, head="4", unseen_tasks="zeros",
                        lr=0.02, lr_min=0.02, start_bits=3, max_bits=3, delta=0.5)
    assert (given.model.head_name, given.model.unseen_tasks, given.optimizer.param_groups[0]["lr"]) == \
        ("4", "zeros", 0.02)
    assert (given.lr_min, given.start_bits, given.max_bits, given.delta) == (0.02, 3, 3, 0.5)  # equal bounds allowed
    assert AdaQPackNet(model=_tiny_net(), valid_stream=two_tasks.valid_stream, delta=0.0).delta == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(start_bits=9), "start_bits must be in 1..8 (codes are stored as uint8), got start_bits=9"),
    (dict(start_bits=5, max_bits=4), "start_bits (5) must not exceed max_bits (4)"),
    (dict(prune=False, quantize=False), "prune=False and quantize=False would give every task all 32 bits of every "
                                        "position; keep at least one stage on"),
    (dict(valid_stream=None), "Ada-QPacknet selects masks and bit-widths on validation data: pass "
                              "valid_stream=benchmark.valid_stream (a benchmark built with validation_fraction > 0)"),
    (dict(population=0), "population must be >= 1, got 0"),
    (dict(search_epochs=0), "search_epochs must be >= 1, got 0"),
    (dict(full_epochs=0), "full_epochs must be >= 1, got 0"),
    (dict(delta=-1.0), "need delta >= 0 and 0 < lr_min <= lr, got delta=-1.0, lr=0.01, lr_min=0.0001"),
    (dict(lr_min=0.0), "need delta >= 0 and 0 < lr_min <= lr, got delta=1.0, lr=0.01, lr_min=0.0"),
])
def test_bad_arguments_name_themselves(two_tasks, kwargs, message) -> None:
    args = {"model": _tiny_net(), "valid_stream": two_tasks.valid_stream, **kwargs}
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        AdaQPackNet(**args)
