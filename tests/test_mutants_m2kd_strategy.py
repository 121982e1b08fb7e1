"""Tests that kill mutation survivors of strategies/m2kd (docs/testing.md): the paper's defaults and
every argument reaching M2KD's plugin, its model and Avalanche's iCaRL plugin, an M2KDModel used as
given, the setting check, the criterion message, and the iCaRL training heads without an auxiliary head.

No training here: each test builds a strategy on a tiny ResNet and reads what it was given."""

from __future__ import annotations

import pytest
import torch

from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised.icarl import _ICaRLPlugin

from avalanche_sst.models import build_model
from avalanche_sst.plugins.m2kd import M2KDModel
from avalanche_sst.strategies.m2kd import M2KD, ICaRLExperienceInfo, ICaRLM2KD

torch.set_num_threads(1)

#: The paper's settings (sec. 4.1): r = 0.75, alpha = 0.5, lambda = 1, 15 fine-tuning epochs, the
#: auxiliary head on stage 2, weight decay 1e-5 at step 1 and 0 after; owned weights frozen exactly.
PAPER = {"prune_ratio": 0.75, "alpha": 0.5, "lam": 1.0, "finetune_epochs": 15, "weight_decay_first": 1e-5,
         "weight_decay_after": 0.0, "teachers": "all", "exact_freeze": True}
#: Every one of them changed, with the auxiliary head on stage 1.
GIVEN = {"prune_ratio": 0.5, "alpha": 0.25, "lam": 2.5, "finetune_epochs": 3, "weight_decay_first": 0.125,
         "weight_decay_after": 0.0625, "teachers": "last", "exact_freeze": False}


def _model():
    torch.manual_seed(0)
    return build_model("resnet8-w2", num_classes=2, in_channels=1)


def _common():
    return dict(train_mb_size=4, train_epochs=20, eval_mb_size=8, evaluator=EvaluationPlugin(loggers=[]))


def _m2kd(**kw) -> M2KD:
    model = kw.pop("model", None) or _model()
    return M2KD(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **_common(), **kw)


def _icarl(**kw) -> ICaRLM2KD:
    model = _model()
    return ICaRLM2KD(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **_common(), **kw)


def _plugin_values(plugin) -> dict:
    return {name: getattr(plugin, name) for name in PAPER}


def _assert_same_values(got: dict, expected: dict):
    # `is` for the flag, so that None (falsy) does not pass for False
    assert got == expected and got["exact_freeze"] is expected["exact_freeze"]


def _icarl_plugin(strategy) -> _ICaRLPlugin:
    (plugin,) = [p for p in strategy.plugins if isinstance(p, _ICaRLPlugin)]
    return plugin


@pytest.mark.parametrize("build", [_m2kd, _icarl], ids=["m2kd", "icarl_m2kd"])
def test_defaults_are_the_papers(build):
    s = build()
    _assert_same_values(_plugin_values(s.m2kd), PAPER)
    assert s.m2kd.network.aux_stage == 2


@pytest.mark.parametrize("build", [_m2kd, _icarl], ids=["m2kd", "icarl_m2kd"])
def test_every_argument_reaches_the_plugin_and_the_model(build):
    s = build(aux_stage=1, **GIVEN)
    _assert_same_values(_plugin_values(s.m2kd), GIVEN)
    assert s.m2kd.network.aux_stage == 1


def test_icarl_defaults_and_arguments_reach_avalanches_icarl_plugin():
    plugin = _icarl_plugin(_icarl())
    assert (plugin.memory_size, plugin.buffer_transform, plugin.fixed_memory) == (2000, None, True)
    transform = torch.nn.Identity()
    plugin = _icarl_plugin(_icarl(memory_size=12, buffer_transform=transform, fixed_memory=False))
    assert plugin.memory_size == 12 and plugin.buffer_transform is transform and plugin.fixed_memory is False


def test_icarl_classes_per_exp_reach_the_experience_info():
    s = _icarl(classes_per_exp=[[3, 2], [1, 0, 5]])
    (info,) = [p for p in s.plugins if isinstance(p, ICaRLExperienceInfo)]
    assert info.n_classes_per_exp == [2, 3] and info.classes_order == [2, 3, 0, 1, 5]


def test_icarl_without_the_auxiliary_head_trains_the_growing_head_only():
    s = _icarl(lam=0.0)
    assert not hasattr(s.m2kd.network, "aux_head")
    assert s.model.train_classifier.aux_head is None
    assert s.model.train_classifier.head is s.m2kd.network.head


def test_a_given_m2kd_model_is_used_as_it_is():
    network = M2KDModel(_model(), aux_stage=1)
    s = _m2kd(model=network)
    assert s.model is network and s.m2kd.network is network and network.aux_stage == 1


@pytest.mark.parametrize("build", [_m2kd, _icarl], ids=["m2kd", "icarl_m2kd"])
def test_a_setting_other_than_class_incremental_is_refused(build):
    with pytest.raises(ValueError, match=r"^M2KD runs in the class-incremental setting, got a 'task_incremental' "):
        build(setting="task_incremental")
    assert build(setting="class_incremental").m2kd.network is not None


def test_a_criterion_is_refused_with_the_exact_message():
    with pytest.raises(ValueError, match=r"^M2KD's criterion is its plugin \(eq\. 2-4\); do not pass criterion=$"):
        _m2kd(criterion=torch.nn.CrossEntropyLoss())
