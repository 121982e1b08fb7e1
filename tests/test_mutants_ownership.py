"""functional/ownership: the survivors of its mutation run — gradients masked by hand, ties of
5000 equal magnitudes kept by position, masked weights keyed by the layer's name and in the
weight's dtype, and the whole error messages."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from avalanche_sst.functional.ownership import (attach_buffer, functional_forward, magnitude_keep_mask,
                                                mask_frozen_grads, masked_weights, owned_layers)


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def test_attach_buffer_message_names_the_model_the_exclusions_and_the_buffer():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=exactly("Sequential has no Conv2d/Linear layer outside exclude=('0',) "
                                                 "to attach 'mask' to")):
        attach_buffer(model, "mask", lambda m: torch.zeros(1), exclude=["0"])


def test_functional_forward_lists_the_first_five_unknown_names():
    model = nn.Linear(2, 2)
    subs = {name: torch.zeros(1) for name in "abcdef"}
    with pytest.raises(ValueError, match=exactly("functional_forward: ['a', 'b', 'c', 'd', 'e'] are not "
                                                 "parameters or buffers of Linear; use names from "
                                                 "model.state_dict()")):
        functional_forward(model, subs, torch.zeros(1, 2))


def test_magnitude_keep_mask_breaks_5000_ties_by_position():
    # torch's unstable CPU sort does not keep index order at this size
    weight = torch.ones(50, 100)
    keep = magnitude_keep_mask(weight, torch.ones(50, 100, dtype=torch.bool), 0.5)
    assert torch.equal(keep.reshape(-1).nonzero().squeeze(1), torch.arange(2500))


def test_mask_frozen_grads_zeroes_the_frozen_and_zeroed_gradient_only():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    layers = owned_layers(model)
    model[0].weight.grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # model[1] has no gradient: it must be skipped, not fail
    frozen = lambda name, m: torch.tensor([[True, False], [False, False]])  # noqa: E731
    zeroed = lambda name, m: torch.tensor([[False, False], [False, True]])  # noqa: E731
    mask_frozen_grads(layers, frozen, zeroed)
    assert model[0].weight.grad.tolist() == [[0.0, 2.0], [3.0, 0.0]]
    assert model[1].weight.grad is None


def test_masked_weights_keys_and_dtype():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    keep_second = lambda name, m: torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64) \
        if name == "1" else None  # noqa: E731
    out = masked_weights(owned_layers(model), keep_second)
    assert list(out) == ["1.weight"]
    assert out["1.weight"].dtype == torch.float32 and out["1.weight"].tolist() == [[1.0, 0.0], [0.0, 4.0]]
    bare = nn.Linear(2, 1, bias=False)  # the model is the layer: its weight is "weight"
    out = masked_weights(owned_layers(bare), lambda name, m: torch.ones_like(m.weight, dtype=torch.bool))
    assert list(out) == ["weight"]
