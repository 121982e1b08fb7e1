"""Tests that kill the mutation survivors of plugins/edge_kt (docs/testing.md): the split of the
captured maps into groups, the messages, the frozen teacher, and what the last-convs-only rule
does to stale gradients and to the optimizer's momentum of the layers that keep learning."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from avalanche_sst.models import resnet_cifar
from avalanche_sst.plugins.edge_kt import EdgeKTPlugin, LastConvsOnlyPlugin, _split, edge_trainable_parameters

torch.set_num_threads(1)


def test_split_cuts_the_flat_maps_into_consecutive_groups():
    assert _split(list("abcde"), [2, 1, 2]) == [["a", "b"], ["c"], ["d", "e"]]
    assert _split(list("abcdef"), [2, 2, 2]) == [["a", "b"], ["c", "d"], ["e", "f"]]


def test_messages_and_initial_state():
    teacher = resnet_cifar(8, width=2)
    for name, bad in (("l1", -1), ("l3", "x")):
        with pytest.raises(ValueError, match=rf"^EdgeKTPlugin: {name} must be a number >= 0, got {bad!r}$"):
            EdgeKTPlugin(teacher, **{name: bad})
    plugin = EdgeKTPlugin(teacher)
    assert plugin.last_terms == {} and plugin.last_pairs == [] and plugin.train_only_last_convs is True
    assert EdgeKTPlugin(teacher, train_only_last_convs=False).train_only_last_convs is False
    flat = SimpleNamespace(model=nn.Sequential(nn.Conv2d(1, 2, 3)), device=torch.device("cpu"))
    with pytest.raises(ValueError, match=r"^EdgeKTPlugin \(the student\) needs a teacher made of residual groups"):
        plugin.before_training_exp(flat)


def test_the_teacher_is_frozen_in_eval_mode():
    teacher = resnet_cifar(8, width=2, in_channels=1).train()
    plugin = EdgeKTPlugin(teacher, train_only_last_convs=False)
    fake = SimpleNamespace(model=resnet_cifar(8, width=2, in_channels=1), device=torch.device("cpu"))
    plugin.before_training_exp(fake)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    plugin.after_training_exp(fake)


def test_last_convs_only_drops_stale_gradients_and_momentum_of_frozen_layers_only():
    """A previous step left gradients and momentum on every parameter: the frozen ones lose both,
    the learning ones (last conv of each group, classifier) keep their momentum."""
    torch.manual_seed(0)
    student = resnet_cifar(8, width=2, in_channels=1, num_classes=3)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    for p in student.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # momentum buffers for every parameter
    momentum = {p: optimizer.state[p]["momentum_buffer"].clone() for p in student.parameters()}
    trainable = {id(p) for p in edge_trainable_parameters(student)}
    LastConvsOnlyPlugin().before_training_exp(SimpleNamespace(model=student, optimizer=optimizer))
    for p in student.parameters():
        if id(p) in trainable:
            assert torch.equal(optimizer.state[p]["momentum_buffer"], momentum[p])
        else:
            assert p.grad is None and p not in optimizer.state
    assert len(trainable) == 5 and len(optimizer.state) == 5
