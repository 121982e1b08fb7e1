"""Ada-QPacknet strategy tests that kill the mutants of ``strategies/ada_qpacknet`` the rest of the
suite let through: the search's seeded draws and occupied positions, the capacity checks, the
prune-only and quantize-only reports, the logged scalars, the optimizer reset between tasks, the
schedules of a one-batch experience and the validation passes."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from avalanche_sst.functional.adaptive_pruning import weighted_sparsity_left
from avalanche_sst.strategies import ada_qpacknet as module
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet
from conftest import tiny_task_net, two_binary_tasks

torch.set_num_threads(1)


_tiny_net = tiny_task_net


@pytest.fixture(scope="module")
def two_tasks():
    return two_binary_tasks()


def _strategy(bm, **kw) -> AdaQPackNet:
    args = dict(population=3, search_epochs=1, full_epochs=1, train_mb_size=8, eval_mb_size=64,
                valid_stream=bm.valid_stream)
    args.update(kw)
    torch.manual_seed(0)
    return AdaQPackNet(model=_tiny_net(), **args)


class _Draws:
    """Records the generator's seed and the candidates of every draw of the search."""

    def __init__(self, monkeypatch):
        self.seeds, self.candidates, draw = [], [], module.draw_candidate_masks

        def recording(available, population, v_min, v_max, generator):
            self.seeds.append(generator.initial_seed())
            self.candidates.append(draw(available, population, v_min, v_max, generator))
            return self.candidates[-1]

        monkeypatch.setattr(module, "draw_candidate_masks", recording)


def test_the_search_draws_from_a_generator_seeded_by_seed_and_task(two_tasks, monkeypatch) -> None:
    """Reproducible, per task different candidate draws: seed * 1_000_003 + task label."""
    draws = _Draws(monkeypatch)
    strat = _strategy(two_tasks, seed=2)
    for experience in two_tasks.train_stream:
        strat.train(experience)
    assert draws.seeds == [2_000_006, 2_000_007]
    for report, candidates in zip(strat.task_reports, draws.candidates):
        assert report["drawn_sparsity"] == list(candidates[report["chosen"]].sparsity)


def test_sparsity_left_counts_positions_an_earlier_one_bit_task_occupies(two_tasks, monkeypatch) -> None:
    """Eq. 7 at task 1: a position task 0 holds with a single bit is occupied, as are the candidate's own."""
    draws = _Draws(monkeypatch)
    strat = _strategy(two_tasks, start_bits=1, max_bits=1)
    for experience in two_tasks.train_stream:
        strat.train(experience)
    slot = strat.model.tasks["0"]
    first = [slot.mask_0.cpu(), slot.mask_1.cpu()]
    assert int(slot.bits) == 1 and all(bool(m.any()) for m in first)
    expected = [weighted_sparsity_left([o | m for o, m in zip(first, cand.masks)]) for cand in draws.candidates[1]]
    alone = [weighted_sparsity_left(list(cand.masks)) for cand in draws.candidates[1]]
    assert expected != alone  # the test can tell task 0's positions counted from left out
    assert strat.task_reports[1]["candidate_sparsity_left"] == expected


def test_a_layer_without_capacity_is_refused_by_name(two_tasks) -> None:
    strat = _strategy(two_tasks)
    strat.model.used_bits()[0].fill_(32)
    with pytest.raises(ValueError, match="^" + re.escape(
            "no capacity left in layers ['0'] for task 0: every position holds 32 bits already; "
            "use a wider model or fewer tasks") + "$"):
        strat.train(two_tasks.train_stream[0])


def test_prune_off_keeps_every_available_position_and_reports_density_one(two_tasks) -> None:
    """Quantization only, with one conv position left: the mask is every available position (drawn
    sparsity 0, density 1 in both layers), and the full conv layer beside it holds no new bits."""
    strat = _strategy(two_tasks, prune=False, start_bits=2, max_bits=2)
    conv_used = strat.model.used_bits()[0]
    conv_used.fill_(32)
    conv_used.view(-1)[5] = 0
    strat.train(two_tasks.train_stream[0])
    report = strat.task_reports[0]
    assert report["drawn_sparsity"] == [0.0, 0.0] and report["density"] == [1.0, 1.0]
    assert strat.model.tasks["0"].mask_0.sum() == 1 and bool(strat.model.tasks["0"].mask_0.view(-1)[5])
    assert int(conv_used.view(-1)[5]) == 2


def test_quantize_off_uses_only_positions_with_32_free_bits(two_tasks) -> None:
    """Pruning only: a position an earlier task holds with 8 bits cannot take 32 more; the density is
    the mask over the positions with 32 bits free; bits 32, accuracy unchanged, delta met."""
    strat = _strategy(two_tasks, quantize=False)
    conv_used = strat.model.used_bits()[0]
    conv_used.view(-1)[:18] = 8
    held = (conv_used > 0).cpu()
    strat.train(two_tasks.train_stream[0])
    report, slot = strat.task_reports[0], strat.model.tasks["0"]
    assert not bool((slot.mask_0.cpu() & held).any())
    assert report["density"] == [float(slot.mask_0.sum()) / 18, float(slot.mask_1.sum()) / 2304]
    assert (report["bits"], report["met_delta"]) == (32, 1)
    assert report["accuracy_quantized"] == report["accuracy_fp32"]


def test_the_task_reports_are_logged_with_the_task_label_as_step(two_tasks) -> None:
    strat = _strategy(two_tasks)
    for experience in two_tasks.train_stream:
        strat.train(experience)
    events = [e for e in strat.sst_events if e.tag.startswith("adaqpacknet/")]
    tags = ["adaqpacknet/sparsity/0", "adaqpacknet/sparsity/4", "adaqpacknet/bits", "adaqpacknet/accuracy_fp32",
            "adaqpacknet/accuracy_quantized", "adaqpacknet/capacity_fraction", "adaqpacknet/met_delta",
            "adaqpacknet/capacity_total"]
    assert [e.tag for e in events] == tags * 2
    assert [e.step for e in events] == [0] * 8 + [1] * 8
    r0, r1 = strat.task_reports
    total = 0.0
    for report, logged in ((r0, events[:8]), (r1, events[8:])):
        total += report["capacity_fraction"]
        assert [e.value for e in logged] == pytest.approx(
            [*report["drawn_sparsity"], report["bits"], report["accuracy_fp32"], report["accuracy_quantized"],
             report["capacity_fraction"], report["met_delta"], total], abs=1e-7)
    assert events[-1].value == pytest.approx(r0["capacity_fraction"] + r1["capacity_fraction"], abs=1e-7)


class _AdamStateAtStart(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.sizes = []

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == 0:
            self.sizes.append(len(strategy.optimizer.state))


def test_every_tasks_full_training_starts_with_a_fresh_adam_state(two_tasks) -> None:
    """Adam's moments of task 0 do not carry into task 1's full training."""
    probe = _AdamStateAtStart()
    strat = _strategy(two_tasks, plugins=[probe])
    for experience in two_tasks.train_stream:
        strat.train(experience)
    assert len(strat.optimizer.state) > 0  # the probe can see a state when there is one
    assert probe.sizes == [0, 0]


class _LastLearningRate(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.ends = []

    def after_training_exp(self, strategy, **kwargs):
        self.ends.append(strategy.optimizer.param_groups[0]["lr"])


def test_a_one_batch_experience_anneals_to_lr_min_in_its_single_iteration(two_tasks, monkeypatch) -> None:
    lr, lr_min = 0.02, 0.001
    schedules, probe = [], _LastLearningRate()

    class Recording(module.CosineAnnealingLR):
        def __init__(self, optimizer, T_max, eta_min=0.0):
            schedules.append(T_max)
            super().__init__(optimizer, T_max=T_max, eta_min=eta_min)

    monkeypatch.setattr(module, "CosineAnnealingLR", Recording)
    strat = _strategy(two_tasks, lr=lr, lr_min=lr_min, train_mb_size=64, plugins=[probe])
    assert len(two_tasks.train_stream[0].dataset) <= 64
    strat.train(two_tasks.train_stream[0])
    assert schedules == [1, 1, 1, 1]  # three candidates, then full training: one iteration each
    assert probe.ends == pytest.approx([lr_min], rel=1e-9)


def test_the_strategy_trains_with_the_given_criterion(two_tasks) -> None:
    calls = []

    class Counting(nn.CrossEntropyLoss):
        def forward(self, logits, targets):
            calls.append(len(targets))
            return super().forward(logits, targets)

    criterion = Counting()
    strat = _strategy(two_tasks, criterion=criterion)
    assert strat._criterion is criterion
    strat.train(two_tasks.train_stream[0])
    assert sum(calls) == 4 * len(two_tasks.train_stream[0].dataset)  # 3 candidates + full training, 1 epoch


def test_validation_passes_use_the_strategys_eval_mb_size(two_tasks, monkeypatch) -> None:
    sizes, accuracy = [], module.accuracy

    def recording(model, data, device, batch_size=1000):
        sizes.append(batch_size)
        return accuracy(model, data, device, batch_size)

    monkeypatch.setattr(module, "accuracy", recording)
    _strategy(two_tasks, eval_mb_size=5).train(two_tasks.train_stream[0])
    assert len(sizes) >= 4 and set(sizes) == {5}  # 3 candidates, fp32, each bit-width tried


@pytest.mark.parametrize("dataset", [[], None])
def test_an_empty_validation_slice_is_refused(two_tasks, dataset) -> None:
    strat = _strategy(two_tasks, valid_stream=[SimpleNamespace(dataset=dataset)])
    strat.experience = two_tasks.train_stream[0]
    with pytest.raises(ValueError, match="^" + re.escape(
            "valid_stream has no data for experience 0; build the benchmark with validation_fraction > 0") + "$"):
        strat._valid_data()


def test_a_one_sample_validation_slice_is_used(two_tasks) -> None:
    one = two_tasks.valid_stream[0].dataset.subset([0])
    strat = _strategy(two_tasks, valid_stream=[SimpleNamespace(dataset=one)])
    strat.experience = two_tasks.train_stream[0]
    assert strat._valid_data() is one


def test_the_linear_quantizer_commits_an_evenly_spaced_codebook(two_tasks) -> None:
    """quantizer="linear" reaches Alg. 2: every committed codebook is a linspace (k-means' is not)."""
    books = {}
    for quantizer in ("linear", "kmeans"):
        strat = _strategy(two_tasks, quantizer=quantizer, start_bits=3, max_bits=3)
        strat.train(two_tasks.train_stream[0])
        books[quantizer] = [strat.model.tasks["0"].codebook_0, strat.model.tasks["0"].codebook_1]

    def even(book):
        steps = book.double().diff()
        return torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-4, atol=0)

    assert all(even(b) for b in books["linear"])
    assert not any(even(b) for b in books["kmeans"])
