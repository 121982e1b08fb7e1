"""Tests of the shared per-weight ownership machinery (avalanche_sst.functional.ownership)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from avalanche_sst.functional.ownership import (
    FREE,
    OWNER_BUFFER,
    attach_buffer,
    attach_owner_ids,
    count_weights,
    eval_mode,
    frozen_update,
    functional_forward,
    layers_with_buffer,
    magnitude_keep_mask,
    masked_weights,
    owned_layers,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4), nn.Linear(4, 2),
    )


def test_owned_layers_exclude_heads_and_reject_a_bare_string():
    net = _net()
    assert [n for n, _ in owned_layers(net)] == ["0", "5", "6"]
    assert [n for n, _ in owned_layers(net, exclude=("6",))] == ["0", "5"]
    with pytest.raises(TypeError, match="exclude"):
        owned_layers(net, exclude="6")


def test_owner_ids_are_buffers_that_round_trip_with_weights_only():
    net = _net()
    layers = attach_owner_ids(net, exclude=("6",))
    assert len(layers) == 2 and not hasattr(net[6], OWNER_BUFFER)
    assert net[0].owner_id.dtype == torch.uint8 and net[0].owner_id.shape == net[0].weight.shape
    assert bool((net[0].owner_id == FREE).all())
    net[0].owner_id[0, 0, 0, 0] = 3
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    other = _net()
    attach_owner_ids(other, exclude=("6",))
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert int(other[0].owner_id[0, 0, 0, 0]) == 3
    assert [n for n, _ in layers_with_buffer(other, OWNER_BUFFER)] == ["0", "5"]
    # attaching again keeps existing ids
    attach_owner_ids(other, exclude=("6",))
    assert int(other[0].owner_id[0, 0, 0, 0]) == 3


def test_attach_buffer_generic_factory_and_name_clash():
    net = _net()
    attach_buffer(net, "bits_used", lambda m: torch.zeros_like(m.weight, dtype=torch.uint8))
    assert net[6].bits_used.shape == (2, 4)
    with pytest.raises(ValueError, match="non-buffer"):
        attach_buffer(net, "weight", lambda m: torch.zeros(1))
    assert count_weights(owned_layers(net)) == 27 + 12 + 8


def test_magnitude_keep_mask_hand_count():
    w = torch.tensor([[0.5, -3.0, 0.1], [2.0, -0.2, 1.0]])
    free = torch.tensor([[True, True, True], [False, True, True]])  # 2.0 is owned: never kept
    # 5 free, ratio 0.6 -> release 3, keep the 2 largest free |w|: -3.0 and 1.0
    keep = magnitude_keep_mask(w, free, 0.6)
    assert keep.tolist() == [[False, True, False], [False, False, True]]
    # ratio 0 keeps every free weight
    assert torch.equal(magnitude_keep_mask(w, free, 0.0), free)
    # ties broken by position: keep the first of two equal magnitudes
    keep = magnitude_keep_mask(torch.tensor([1.0, -1.0]), torch.tensor([True, True]), 0.5)
    assert keep.tolist() == [True, False]
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="ratio"):
            magnitude_keep_mask(w, free, bad)
    with pytest.raises(ValueError, match="bool"):
        magnitude_keep_mask(w, free.float(), 0.5)


def test_frozen_update_keeps_owned_weights_bit_identical_under_sgd_momentum_wd():
    net = _net()
    layers = attach_owner_ids(net)
    torch.manual_seed(1)
    for _, m in layers:
        m.owner_id.copy_(torch.where(torch.rand_like(m.weight) < 0.5, 0, FREE).to(torch.uint8))
    # released positions (zeroed) are some of the free ones
    released = {n: (m.owner_id == FREE) & (torch.rand_like(m.weight) < 0.3) for n, m in layers}
    for n, m in layers:
        m.weight.data[released[n]] = 0.0
    before = {n: m.weight.detach().clone() for n, m in layers}
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    frozen = lambda n, m: m.owner_id != FREE  # noqa: E731
    zeroed = lambda n, m: released[n]  # noqa: E731
    x = torch.randn(4, 1, 6, 6)
    # a first step without the guard gives the momentum buffer a value at owned positions
    net(x).pow(2).sum().backward()
    opt.step()
    for n, m in layers:
        m.weight.data = torch.where(frozen(n, m), before[n], m.weight.data)
        m.weight.data[released[n]] = 0.0
    for _ in range(4):
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        with frozen_update(layers, frozen, zeroed):
            opt.step()
    for n, m in layers:
        own = frozen(n, m)
        assert torch.equal(m.weight[own], before[n][own]), n  # bit-identical
        assert bool((m.weight[released[n]] == 0).all())
        trainable = ~own & ~released[n]
        assert not torch.equal(m.weight[trainable], before[n][trainable])  # the rest did train


def test_gradient_masking_alone_drifts_under_weight_decay():
    """Negative control: why frozen_update restores the weights."""
    net = _net()
    layers = attach_owner_ids(net)
    for _, m in layers:
        m.owner_id.fill_(0)
    before = [m.weight.detach().clone() for _, m in layers]
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    net(torch.randn(4, 1, 6, 6)).sum().backward()
    for _, m in layers:
        m.weight.grad.zero_()
    opt.step()
    assert not torch.equal(layers[0][1].weight, before[0])


def test_functional_forward_evaluates_a_masked_subnetwork_without_touching_the_module():
    net = _net().eval()
    layers = owned_layers(net)
    x = torch.randn(3, 1, 5, 5)
    keep = lambda n, m: m.weight.abs() > 0.2  # noqa: E731
    subs = masked_weights(layers, keep)
    assert set(subs) == {"0.weight", "5.weight", "6.weight"}
    reference = _net().eval()
    with torch.no_grad():
        for (n, m), (_, r) in zip(layers, owned_layers(reference)):
            r.weight.mul_(keep(n, m))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    out = functional_forward(net, subs, x)
    assert torch.allclose(out, reference(x), atol=1e-6)
    assert not torch.allclose(out, net(x), atol=1e-4)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    with pytest.raises(ValueError, match="not parameters or buffers"):
        functional_forward(net, {"nope.weight": torch.zeros(1)}, x)


def test_eval_mode_restores_each_flag():
    net = _net().train()
    net[1].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and not net[1].training and net[0].training
