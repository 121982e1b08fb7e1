"""M2KD's snapshot teachers are charged by the cost meter: one forward (1/3 of a
training pass, metrics.cost) per sample per snapshot run at the iteration; the
BatchNorm statistics pass at the end of each step adds one forward per sample."""

from __future__ import annotations

import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin

from avalanche_sst.metrics.cost import CostMeter
from avalanche_sst.models import build_model
from avalanche_sst.strategies.m2kd import M2KD

from test_m2kd import _bench


def _costs(epochs, **kw):
    """Step costs of 3 steps of 2 classes x 12 images (N = 24 per step), and the
    samples the snapshots actually ran on, per step."""
    bench = _bench(3)
    torch.manual_seed(0)
    model = build_model("resnet8-w2", num_classes=2, in_channels=1)
    meter = CostMeter()
    strategy = M2KD(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=16,
                    train_epochs=epochs, eval_mb_size=32, evaluator=EvaluationPlugin(loggers=[]),
                    plugins=[meter], **kw)
    seen = []
    forward = strategy.m2kd.snapshot_forward

    def counted(k, x):
        seen[-1] += x.shape[0]
        return forward(k, x)

    strategy.m2kd.snapshot_forward = counted
    for exp in bench.train_stream:
        seen.append(0)
        strategy.train(exp, eval_streams=[])
    return meter, seen


def test_each_snapshot_forward_costs_a_third_per_sample():
    meter, seen = _costs(epochs=2, prune_ratio=0.5, finetune_epochs=1)  # snapshots rebuilt from masks
    n = 24 * 2  # samples x epochs per step
    bn = 24 / 3  # one forward of the step's 24 samples to recompute BatchNorm statistics
    assert meter.step_costs == pytest.approx([n + bn, n * (1 + 1 / 3) + bn, n * (1 + 2 / 3) + bn])
    assert seen == [0, n, 2 * n]  # hand count: step k runs k - 1 snapshots on every sample
    assert [b["teacher"] for b in meter.step_breakdown] == pytest.approx([s / 3 for s in seen])


def test_lwf_mc_pays_for_its_one_teacher_only():
    meter, seen = _costs(epochs=1, teachers="last", prune_ratio=0.0, lam=0.0)
    bn = 24 / 3
    assert meter.step_costs == pytest.approx([24 + bn, 24 * (1 + 1 / 3) + bn, 24 * (1 + 1 / 3) + bn])
    assert seen == [0, 24, 24]
