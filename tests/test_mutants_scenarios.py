"""Tests that kill mutation survivors of benchmarks/scenarios (docs/testing.md), and the link from
every stream to its benchmark that lets a plugin read the setting of the experience it is given."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from avalanche_sst.benchmarks import same_class_accumulating, scenarios
from avalanche_sst.plugins.m2kd import M2KDModel, M2KDPlugin

from conftest import make_images


@pytest.fixture(scope="module")
def data():
    """(train, test): 4 classes x 6 train / 2 test images of 1x8x8."""
    return make_images(6, seed=0), make_images(2, seed=1)


BUILDERS = {
    "class_incremental": lambda tr, te: scenarios.class_incremental(tr, te, validation_fraction=0.5, augment=False),
    "task_incremental": lambda tr, te: scenarios.task_incremental(tr, te, validation_fraction=0.5, augment=False),
    "new_class": lambda tr, te: scenarios.new_class(tr, te, base_classes=2, validation_fraction=0.5, augment=False),
    "unseen_class": lambda tr, te: scenarios.unseen_class(tr, te, validation_fraction=0.5, augment=False),
    "permuted": lambda tr, te: scenarios.permuted(tr, te, 2, validation_fraction=0.5),
    "same_class": lambda tr, te: same_class_accumulating(tr, te, ratios=(1, 1), validation_fraction=0.5,
                                                         augment=False),
}
SETTING = {"permuted": "task_incremental"}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_stream_knows_its_benchmark_and_setting(data, name):
    benchmark = BUILDERS[name](*data)
    assert benchmark.setting == SETTING.get(name, name)
    assert "valid" in benchmark.streams
    for stream in benchmark.streams.values():
        assert stream.benchmark is benchmark
        for experience in stream:
            assert experience.origin_stream.benchmark.setting == benchmark.setting


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.layer1 = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2, 4)

    def forward(self, x):
        return self.fc(self.pool(self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))))


def test_m2kd_refuses_an_experience_of_a_benchmark_of_another_setting(data):
    """The new-class benchmark's first experience has task label 0 and labels 0, 1 from nothing seen:
    only its setting tells M2KD it is not class-incremental, read through the experience's stream."""
    plugin = M2KDPlugin(network=M2KDModel(_Backbone()))
    ours = scenarios.class_incremental(*data, augment=False).train_stream[0]
    assert plugin._check_experience(SimpleNamespace(experience=ours)) == 2
    other = BUILDERS["new_class"](*data).train_stream[0]
    message = "'new_class', task labels [0] and classes [0, 1] while 0 units are already seen"
    with pytest.raises(ValueError, match=r"^M2KD runs in the class-incremental setting \(disjoint class groups, "
                                         r"task label 0\); experience 0 has setting " + re.escape(message)):
        plugin._check_experience(SimpleNamespace(experience=other))
