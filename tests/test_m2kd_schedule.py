"""M2KD's schedule and statistics: constant-rate fine-tuning after pruning with a fresh
optimizer, BatchNorm statistics recomputed with the final weights, the per-step prune log."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from torch.optim.swa_utils import update_bn

from avalanche_sst.models import build_model
from avalanche_sst.plugins.schedule import cosine_then_constant

from test_m2kd import _bench, _run, _strategy


def test_cosine_then_constant_hand_values():
    f = cosine_then_constant(4, 0.2)
    expected = [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.2, 0.2]
    assert [f(t) for t in range(6)] == pytest.approx(expected)


class LrRecorder(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.lrs: list[float] = []
        self.state_sizes: list[int] = []

    def before_training_iteration(self, strategy, **kwargs):
        self.lrs.append(strategy.optimizer.param_groups[0]["lr"])
        self.state_sizes.append(len(strategy.optimizer.state))


def _sweep_strategy(bench, epochs=4):
    from avalanche_sst.experiments.methods import StrategyContext, get_method
    from avalanche_sst.experiments.presets import Preset

    preset = Preset(epochs_scratch=epochs, epochs_finetune=epochs, lr_scratch=0.1, lr_finetune=0.1, batch_size=8,
                    weight_decay=5e-4)
    recorder = LrRecorder()
    ctx = StrategyContext(model=build_model("resnet8-w2", num_classes=2, in_channels=1), config=preset,
                          evaluator=EvaluationPlugin(loggers=[]), device=torch.device("cpu"), benchmark=bench,
                          plugins=[recorder])
    return get_method("m2kd:finetune_epochs=2").build(ctx), recorder


def test_sweep_m2kd_fine_tunes_at_a_constant_fifth_of_the_rate_with_a_fresh_optimizer():
    bench = _bench(1)  # 24 images, batch 8: 3 iterations per epoch
    torch.manual_seed(0)
    s, rec = _sweep_strategy(bench)
    assert s.plugins[0].epochs == (6, 6)  # 4 training + 2 fine-tuning epochs
    s.train(bench.train_stream[0], eval_streams=[])
    assert len(rec.lrs) == 18
    anneal = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 12)) for t in range(12)]
    assert rec.lrs[:12] == pytest.approx(anneal)  # cosine over the 4 training epochs
    assert rec.lrs[12:] == pytest.approx([0.02] * 6)  # fine-tuning: constant 0.2 x lr
    assert rec.state_sizes[12] == 0 < rec.state_sizes[11]  # the optimizer restarts at the prune point
    # the sweep gives M2KD the preset's weight decay at every step (the table's one rule)
    assert (s.m2kd.weight_decay_first, s.m2kd.weight_decay_after) == (5e-4, 5e-4)


def _bn_stats(model):
    return {n: b.clone() for n, b in model.state_dict().items() if n.endswith(("running_mean", "running_var"))}


def _recomputed(model, exp, batch):
    twin = copy.deepcopy(model)
    data = exp.dataset.eval()
    update_bn(torch.utils.data.DataLoader(data, batch_size=batch, collate_fn=data.collate_fn), twin)
    return _bn_stats(twin)


@pytest.mark.parametrize("recompute", [True, False])
def test_statistics_after_a_pruned_step_are_those_of_the_final_weights(recompute):
    bench = _bench(2)
    s = _strategy(prune_ratio=0.75, epochs=3, finetune=1)
    s.m2kd.recompute_bn = recompute
    expected = []
    _run(s, bench, 2, lambda k: expected.append(_recomputed(s.m2kd.network, bench.train_stream[k], 16)))
    got = _bn_stats(s.m2kd.network)
    worst = max((got[n] - expected[1][n]).abs().max().item() for n in got)
    snap = s.m2kd.snapshots[0]
    worst_snapshot = max((snap[n] - expected[0][n]).abs().max().item() for n in expected[0])
    if recompute:  # evaluation and snapshot 0 read the statistics of the weights they run with
        assert worst < 1e-5 and worst_snapshot < 1e-5
    else:  # control: momentum 0.1 over 2 fine-tuning iterations leaves the unpruned weights' statistics
        assert worst > 1e-2 and worst_snapshot > 1e-2


def test_prune_log_reads_each_step_before_and_after_pruning_and_at_its_end():
    bench = _bench(2)
    s = _strategy(prune_ratio=0.75, epochs=3, finetune=1)
    ends = []

    @torch.no_grad()
    def end_accuracy(k):
        data = bench.train_stream[k].dataset.eval()
        x, y, *_ = next(iter(torch.utils.data.DataLoader(data, batch_size=len(data), collate_fn=data.collate_fn)))
        s.m2kd.network.eval()
        ends.append((s.m2kd.network(x).argmax(1) == y).float().mean().item())

    _run(s, bench, 2, end_accuracy)
    log = s.m2kd.prune_log
    assert [r["step"] for r in log] == [1.0, 2.0]
    assert all(set(r) == {"step", "before_prune", "after_prune", "end_of_step"} for r in log)
    assert [r["end_of_step"] for r in log] == pytest.approx(ends)
    assert s.m2kd.state_dict()["prune_log"] == log
