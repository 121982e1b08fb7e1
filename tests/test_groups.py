"""Per-group accuracy and prediction shares (avalanche_sst.metrics.groups): hand-made predictions,
the Avalanche plugin on a fixed model, and the sweep's runs.csv columns."""

from __future__ import annotations

import math

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from avalanche_sst.benchmarks import class_incremental
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import run_sweep
from avalanche_sst.metrics.groups import ClassGroupPredictions, group_columns, group_scores
from conftest import make_images

GROUPS = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}


def test_group_scores_hand_values():
    targets = torch.tensor([0, 0, 1, 2, 3, 3, 4, 1])
    predictions = torch.tensor([0, 2, 1, 2, 2, 5, 4, 7])  # class 7 belongs to no group
    scores = group_scores(predictions, targets, GROUPS, seen_groups=2)
    # the image of class 4 (group 3, not trained yet) is left out: 7 images remain
    # group 1 (classes 0, 1): targets 0, 0, 1, 1 -> predicted 0, 2, 1, 7: 2 of 4 right
    # group 2 (classes 2, 3): targets 2, 3, 3 -> predicted 2, 2, 5: 1 of 3 right
    # predicted groups: 1, 2, 1, 2, 2, 3 (not seen), none -> shares 2/7, 3/7, unseen 2/7
    assert scores == pytest.approx({"group_acc_1": 0.5, "group_acc_2": 1 / 3, "group_share_1": 2 / 7,
                                    "group_share_2": 3 / 7, "group_share_unseen": 2 / 7})
    after_three = group_scores(predictions, targets, GROUPS, seen_groups=3)
    assert after_three["group_acc_3"] == 1.0 and after_three["group_share_3"] == pytest.approx(2 / 8)
    assert after_three["group_share_unseen"] == pytest.approx(1 / 8)


def test_group_scores_errors_and_empty_groups():
    with pytest.raises(ValueError, match="1-D of one length"):
        group_scores(torch.tensor([0, 1]), torch.tensor([0]), GROUPS, 1)
    with pytest.raises(ValueError, match="seen_groups must be >= 1"):
        group_scores(torch.tensor([0]), torch.tensor([0]), GROUPS, 0)
    with pytest.raises(ValueError, match=r"targets \[9\] have no group"):
        group_scores(torch.tensor([0]), torch.tensor([9]), GROUPS, 1)
    only_group_1 = group_scores(torch.tensor([0, 1]), torch.tensor([0, 0]), GROUPS, 2)
    assert math.isnan(only_group_1["group_acc_2"]) and only_group_1["group_share_2"] == 0.0


def test_group_columns_order():
    keys = {"top1_seen", "group_share_unseen", "group_share_10", "group_acc_2", "group_share_2", "group_acc_10",
            "group_acc_1", "group_share_1"}
    assert group_columns(keys) == ["group_acc_1", "group_acc_2", "group_acc_10", "group_share_1", "group_share_2",
                                   "group_share_10", "group_share_unseen"]


class AlwaysClass(torch.nn.Module):
    """Predicts ``cls`` for every image (logits from a bias only)."""

    def __init__(self, cls: int, classes: int = 6):
        super().__init__()
        self.fc = torch.nn.Linear(1, classes)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(cls), classes).float())

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :1] * 0)


def test_plugin_reads_the_groups_from_the_evaluated_stream():
    bench = class_incremental(make_images(6, classes=6), make_images(4, seed=1, classes=6), classes_per_step=2,
                              seed=0, augment=False)
    group_of = {int(c): k for k, exp in enumerate(bench.test_stream) for c in exp.classes_in_this_experience}
    second_group_class = min(c for c, g in group_of.items() if g == 1)
    plugin = ClassGroupPredictions()
    model = AlwaysClass(second_group_class)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0), train_mb_size=8,
                     eval_mb_size=5, evaluator=EvaluationPlugin(loggers=[]), plugins=[plugin])
    strategy.clock.train_exp_counter = 1  # one step "trained": only group 1's images count
    strategy.eval(bench.test_stream)
    assert plugin.last == {"group_acc_1": 0.0, "group_share_1": 0.0, "group_share_unseen": 1.0}
    strategy.clock.train_exp_counter = 2
    strategy.eval(bench.test_stream)
    # group 2's images: half of them (4 of 8) are of the predicted class
    assert plugin.last == {"group_acc_1": 0.0, "group_acc_2": 0.5, "group_share_1": 0.0, "group_share_2": 1.0,
                           "group_share_unseen": 0.0}
    assert [e.tag for e in strategy.sst_events][-5:] == [f"groups/{k}" for k in plugin.last]


def test_a_class_incremental_sweep_writes_the_group_columns(tmp_path):
    preset = Preset(name="groups", model="resnet8-w4", methods=("finetune",), seeds=(0,),
                    scenario="class_incremental", scenario_kwargs={"classes_per_step": 2, "augment": False},
                    batch_size=16, eval_batch_size=100, epochs_scratch=1, epochs_finetune=1, num_threads=1)
    data = make_images(10, classes=4), make_images(10, seed=1, classes=4)
    (run,) = run_sweep(preset, tmp_path, data=data, log=lambda s: None)
    header, *rows = [line.split(",") for line in (tmp_path / "runs.csv").read_text().splitlines()]
    assert header[-5:] == ["group_acc_1", "group_acc_2", "group_share_1", "group_share_2", "group_share_unseen"]
    step1, step2 = (dict(zip(header, r)) for r in rows)
    # after step 1 the seen classes are group 1's: its accuracy is the step's score
    assert float(step1["group_acc_1"]) == pytest.approx(float(step1["top1"]))
    assert step1["group_acc_2"] == ""  # no group 2 yet
    # after step 2, equal test sizes: the score is the mean of the two groups' accuracies
    assert float(step2["top1"]) == pytest.approx((float(step2["group_acc_1"]) + float(step2["group_acc_2"])) / 2,
                                                 abs=1e-6)
    for row in (step1, step2):
        shares = [float(v) for k, v in row.items() if k.startswith("group_share_") and v != ""]
        assert sum(shares) == pytest.approx(1.0)
    assert run.scores[1]["group_acc_2"] == pytest.approx(float(step2["group_acc_2"]), abs=1e-6)
