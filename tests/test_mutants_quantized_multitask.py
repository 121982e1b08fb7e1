"""Tests that kill the mutation survivors of models/quantized_multitask (docs/testing.md): the
head it picks or is given, its messages, an unquantized task's forward, mixed-task batches,
frozen committed tasks, float64 tasks, codebooks smaller than 2**b in the capacity, the linear
quantizer passed on, what a task stores of a nested net, and ``to_empty(recurse=False)``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from avalanche_sst.functional.quantization import linear_codebook
from avalanche_sst.models.quantized_multitask import QuantizedMultiTaskModel

torch.set_num_threads(1)


def _tiny_net() -> nn.Module:
    """Conv(1->4, 3x3) + BatchNorm(4) + Linear(144->16) + head Linear(16->2)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 36, 16), nn.ReLU(), nn.Linear(16, 2))


def _half_masks(model, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(m.weight.shape, generator=g) < 0.5 for _, m in model.quantized_layers()]


def _x(n: int = 6, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)


def test_the_head_picked_or_given_and_the_messages():
    three = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert QuantizedMultiTaskModel(three).head_name == "5"  # the last Linear, not the second
    given = QuantizedMultiTaskModel(_tiny_net(), head="4")
    assert given.head_name == "4" and [n for n, _ in given.quantized_layers()] == ["0", "6"]
    with pytest.raises(ValueError, match=r"^Sequential has no nn.Linear head; pass head='<module name>'$"):
        QuantizedMultiTaskModel(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match=r"^head='nope' is not a module of Sequential$"):
        QuantizedMultiTaskModel(_tiny_net(), head="nope")


def test_a_fresh_model_trains_no_task_and_takes_unseen_tasks_from_its_argument():
    model = QuantizedMultiTaskModel(_tiny_net(), unseen_tasks="zeros")
    assert model.active_task is None
    with pytest.raises(RuntimeError, match=r"^no task is being trained; call begin_task first$"):
        model.live_masks
    assert torch.equal(model(_x(), 0), torch.zeros(6, 2))  # never trained: zero logits, as asked
    # no position can take a task of more bits than the 32 a position holds, used or not
    assert all(m.all() for m in model.available_masks(32))
    model.begin_task(0, _half_masks(model))
    model.commit_task(32, None)  # 32 bits used at half the positions: 32 + 240 must not wrap around
    assert not any(m.any() for m in model.available_masks(240))


def test_an_unquantized_task_runs_its_masked_float_weights():
    torch.manual_seed(0)
    model = QuantizedMultiTaskModel(_tiny_net())
    masks = _half_masks(model)
    model.begin_task(0, masks)
    expected_net = copy.deepcopy(model.net).eval()
    with torch.no_grad():
        for (name, m), mask in zip(model.quantized_layers(), masks):
            dict(expected_net.named_modules())[name].weight.mul_(mask)
    model.commit_task(32, None)
    out = model(_x(), 0)
    assert torch.allclose(out, expected_net(_x()), atol=1e-6, rtol=0)
    assert not out.requires_grad  # a committed task is frozen: no gradient reaches it


def test_a_mixed_batch_runs_each_sample_through_its_own_task():
    torch.manual_seed(0)
    model = QuantizedMultiTaskModel(_tiny_net())
    for task in (0, 1):
        model.reinit_live()
        model.begin_task(task, _half_masks(model, seed=task) if task == 0 else
                         [~m for m in _half_masks(model, seed=0)])
        model.commit_task(32, None)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    out = model(_x(), labels)
    for task in (0, 1):
        assert torch.equal(out[labels == task], model(_x()[labels == task], task))
    assert not torch.allclose(model(_x(), 0), model(_x(), 1))  # the tasks differ


def test_a_float64_task_keeps_its_float64_values():
    torch.manual_seed(0)
    model = QuantizedMultiTaskModel(_tiny_net().double())
    masks = _half_masks(model)
    model.begin_task(0, masks)
    live = [m.weight.detach().clone() for _, m in model.quantized_layers()]
    model.commit_task(32, None)
    subs = model.task_substitutions(0)
    for (name, _), mask, w in zip(model.quantized_layers(), masks, live):
        assert subs[f"{name}.weight"].dtype == torch.float64
        assert torch.equal(subs[f"{name}.weight"], w * mask)  # not rounded through float32


def test_capacity_counts_the_codebooks_as_stored_not_2_to_the_b():
    """Codebooks of 3 and 1 entries at b = 2 (eq. 10's |K_i|, not |L| * 2**b): 20 + 10 kept
    positions -> codes 30 * 2, masks 30, codebooks (3 + 1) * (32 + 2), 70 fp32 values."""
    torch.manual_seed(0)
    model = QuantizedMultiTaskModel(_tiny_net())
    (_, conv), (_, hidden) = model.quantized_layers()
    masks = [torch.zeros(conv.weight.shape, dtype=torch.bool), torch.zeros(hidden.weight.shape, dtype=torch.bool)]
    masks[0].view(-1)[:20] = True
    masks[1].view(-1)[:10] = True
    model.begin_task(0, masks)
    model.commit_task(2, [(torch.tensor([-0.1, 0.0, 0.1]), torch.zeros(20, dtype=torch.uint8)),
                          (torch.tensor([0.3]), torch.zeros(10, dtype=torch.uint8))])
    assert model.task_capacity_bits(0) == 30 * 2 + 30 + 4 * 34 + 70 * 32 == 2466


def test_the_linear_quantizer_is_passed_on():
    torch.manual_seed(0)
    model = QuantizedMultiTaskModel(_tiny_net())
    masks = _half_masks(model)
    model.begin_task(0, masks)
    for (_, m), mask, (book, codes) in zip(model.quantized_layers(), masks, model.quantize_live(2, "linear")):
        ref_book, ref_codes = linear_codebook(m.weight.detach()[mask], 2)
        assert torch.equal(book, ref_book) and torch.equal(codes, ref_codes)


class _Nested(nn.Module):
    """A net with nested modules and a parameter of its own (a learnt output scale)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(72, 2))
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.body(x) * self.scale


def test_a_task_of_a_nested_net_stores_every_fp32_tensor_and_no_bit_budget():
    torch.manual_seed(0)
    model = QuantizedMultiTaskModel(_Nested())
    assert [n for n, _ in model.quantized_layers()] == ["body.0"]
    model.begin_task(0, _half_masks(model))
    model.commit_task(32, None)
    stored = sorted(n for n, _ in model.tasks["0"].named_buffers() if n.startswith("fp32"))
    assert stored == sorted("fp32__" + k.replace(".", "__") for k in (
        "body.0.bias", "body.1.weight", "body.1.bias", "body.1.running_mean", "body.1.running_var",
        "body.1.num_batches_tracked", "body.4.weight", "body.4.bias", "scale"))


def test_to_empty_without_recursion_leaves_the_network_alone():
    """The model has no tensors of its own: ``to_empty(recurse=False)`` must not re-allocate the net's."""
    model = QuantizedMultiTaskModel(_tiny_net())
    before = [p.data_ptr() for p in model.net.parameters()]
    model.to_empty(device="cpu", recurse=False)
    assert [p.data_ptr() for p in model.net.parameters()] == before
