"""TensorBoard lines runs up: every method's evaluation scalars at x = step and, as ``by_cost/<tag>``,
at x = cumulative training sample-passes; the learning rate of every phase as ``lr/<phase>``."""

from __future__ import annotations

import csv
import itertools

import pytest

from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import run_sweep
from test_resume import tb_scalars

LR_SCRATCH, LR_FINETUNE = 0.1, 0.02


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory, make_data):
    """Fine-tuning (one Avalanche strategy) and the SST framework (phases in inner strategies,
    whose outer clock counts no iterations: Avalanche's own x-axis stays at 0 for it)."""
    out = tmp_path_factory.mktemp("axis")
    preset = Preset(name="axis", model="resnet8-w4", methods=("finetune", "sst"), ratios=(1, 1), seeds=(0,),
                    epochs_scratch=1, epochs_finetune=1, sst_epochs=3, aod_epochs=1, batch_size=16,
                    eval_batch_size=64, validation_fraction=0.2, lr_scratch=LR_SCRATCH, lr_finetune=LR_FINETUNE,
                    num_threads=1)
    run_sweep(preset, out, data=(make_data(40, seed=0), make_data(20, seed=1)), log=lambda s: None)
    with open(out / "runs.csv", newline="") as f:
        costs = {}
        for row in csv.DictReader(f):
            costs.setdefault(row["method"], []).append(float(row["cost"]))
    return {m: tb_scalars(out / m / "seed0" / "tb") for m in preset.methods}, costs


@pytest.mark.parametrize("method", ["finetune", "sst"])
def test_evaluation_scalars_on_the_step_and_cost_axes(two_methods, method):
    scalars, costs = two_methods
    tags = scalars[method]
    evaluation = [t for t in tags if "/eval_phase/" in t and not t.startswith("by_cost/")]
    assert "Top1_Acc_Stream/eval_phase/test_stream/Task000" in evaluation
    assert "StreamForgetting/eval_phase/test_stream" in evaluation
    cumulative = [round(c) for c in itertools.accumulate(costs[method])]
    assert cumulative[0] > 0 and cumulative[1] > cumulative[0]
    for tag in evaluation:
        assert [step for step, _ in tags[tag]] == [1, 2], tag
        assert [step for step, _ in tags["by_cost/" + tag]] == cumulative, tag
        assert [v for _, v in tags["by_cost/" + tag]] == [v for _, v in tags[tag]], tag


def test_learning_rate_of_every_phase(two_methods):
    scalars, costs = two_methods
    # fine-tuning: from scratch at the first step's start, the fine-tuning rate at the second's
    lr = scalars["finetune"]["lr/train"]
    assert [step for step, _ in lr] == [0, round(costs["finetune"][0])]
    assert [v for _, v in lr] == pytest.approx([LR_SCRATCH, LR_FINETUNE])
    # the SST framework: each phase under its own tag, every epoch, on the shared cost axis
    sst = scalars["sst"]
    assert {t for t in sst if t.startswith("lr/")} == {"lr/scratch", "lr/sst", "lr/aod"}
    assert sst["lr/scratch"] == [(0, pytest.approx(LR_SCRATCH))]
    assert len(sst["lr/sst"]) == 3 and sst["lr/sst"][0][1] == pytest.approx(LR_SCRATCH)
    assert [v for _, v in sst["lr/sst"]] == sorted((v for _, v in sst["lr/sst"]), reverse=True)  # cosine
    assert sst["lr/aod"] == [(round(costs["sst"][0]), pytest.approx(LR_FINETUNE))]
