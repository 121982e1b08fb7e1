"""Uniform access to the parts of a network that multi-step sparsity
training needs (Lee & Kim, 2023):

* the filter scaling factors -- BatchNorm2d layers directly after a Conv2d,
  whose weights gamma scale the conv's output channels (the network-slimming
  view of Liu et al., "Learning Efficient Convolutional Networks through
  Network Slimming", ICCV 2017);
* the residual blocks (feature stages), whose outputs feed attention
  distillation (Zagoruyko & Komodakis, "Paying More Attention to Attention",
  ICLR 2017);
* the final classifier.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import nn
from torchvision.models import MobileNetV2, ResNet
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock as TVBasicBlock
from torchvision.models.resnet import Bottleneck as TVBottleneck

__all__ = [
    "ScalingFactor",
    "capture_block_outputs",
    "classifier",
    "feature_blocks",
    "require_blocks",
    "require_scaling_factors",
    "scaling_factors",
]


class ScalingFactor(NamedTuple):
    """A BatchNorm2d (qualified module name ``name``) scaling the outputs of ``conv``."""

    name: str
    bn: nn.BatchNorm2d
    conv: nn.Conv2d


def feature_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's residual blocks / feature stages in forward order.

    torchvision ResNet: the BasicBlock/Bottleneck modules of layer1..layer4;
    torchvision MobileNetV2: the InvertedResidual modules of ``features``;
    any model with a ``blocks`` attribute (list, ModuleList, Sequential),
    which includes ``CifarResNet`` and ``WideResNet``.
    """
    if isinstance(model, ResNet):
        return [
            m
            for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
            for m in layer
            if isinstance(m, (TVBasicBlock, TVBottleneck))
        ]
    if isinstance(model, MobileNetV2):
        return [m for m in model.features if isinstance(m, InvertedResidual)]
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (list, tuple, nn.ModuleList, nn.Sequential)):
        return list(blocks)
    raise ValueError(
        f"cannot find the residual blocks of {model.__class__.__name__}: give it a "
        f"`blocks` attribute (a list or nn.ModuleList of its blocks in forward order)"
    )


def require_blocks(model: nn.Module, who: str) -> list[nn.Module]:
    """``feature_blocks(model)``, raising a ValueError naming ``who`` if there are none."""
    try:
        blocks = feature_blocks(model)
    except ValueError as e:
        raise ValueError(f"{who} needs a model with residual blocks; {e}") from None
    if not blocks:
        raise ValueError(
            f"{who} needs a model with residual blocks; {model.__class__.__name__} has none. "
            f"Use e.g. avalanche_sst.models.resnet_cifar(...)"
        )
    return blocks


def _last_linear(module: nn.Module) -> nn.Linear | None:
    last = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def classifier(model: nn.Module) -> nn.Module:
    """The final Linear layer of the model.

    ``fc`` for ResNets (ours and torchvision's); for a ``classifier``
    attribute (MobileNetV2's Sequential(Dropout, Linear), Avalanche's
    incremental heads, ...) the last Linear inside it, or the attribute
    itself if it contains no Linear.
    """
    for attr in ("fc", "classifier"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module):
            return _last_linear(head) or head
    raise ValueError(
        f"cannot find the classifier of {model.__class__.__name__}: give it a "
        f"`classifier` (or `fc`) attribute holding its final Linear layer"
    )


def _default_input(model: nn.Module) -> torch.Tensor | None:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        return None
    w = first_conv.weight
    return torch.zeros(2, first_conv.in_channels, 32, 32, device=w.device, dtype=w.dtype)


def scaling_factors(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> list[ScalingFactor]:
    """Every BatchNorm2d whose input is exactly a Conv2d's output, in forward order.

    Found by tracing one forward pass of ``example_input`` (default: zeros of
    shape [2, C, 32, 32], C the first Conv2d's in_channels) in eval mode
    without gradients; the train/eval mode of every submodule is restored.
    A BN after a non-conv op (pre-activation BN, BN after a residual sum) or
    after an in-place op on the conv output is not a scaling factor.
    Returns [] if there are none.
    """
    if example_input is None:
        example_input = _default_input(model)
        if example_input is None:
            return []

    names = {m: n for n, m in model.named_modules()}
    # id(output) -> (output, its version counter, conv). Holding the tensor
    # keeps its id from being reused during the pass; the version counter
    # rejects a BN whose input was modified in place after the conv.
    conv_outputs: dict[int, tuple[torch.Tensor, int, nn.Conv2d]] = {}
    found: dict[nn.BatchNorm2d, nn.Conv2d] = {}

    def on_conv(conv: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            conv_outputs[id(output)] = (output, output._version, conv)

    def on_bn(bn: nn.Module, args: tuple[Any, ...]) -> None:
        if bn in found or not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        rec = conv_outputs.get(id(x))
        if rec is not None and rec[0] is x and rec[1] == x._version:
            found[bn] = rec[2]

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(on_bn))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
        conv_outputs.clear()

    return [ScalingFactor(names[bn], bn, conv) for bn, conv in found.items()]


def require_scaling_factors(
    model: nn.Module, who: str, example_input: torch.Tensor | None = None
) -> list[ScalingFactor]:
    """``scaling_factors(model)``, raising a ValueError naming ``who`` if there are none."""
    factors = scaling_factors(model, example_input)
    if not factors:
        raise ValueError(
            f"{who} needs a model with BatchNorm2d layers directly after Conv2d layers "
            f"(their weights are the filter scaling factors); "
            f"{model.__class__.__name__} has none. "
            f"Use e.g. avalanche_sst.models.resnet_cifar(...)"
        )
    return factors


@contextmanager
def capture_block_outputs(
    model: nn.Module, blocks: Sequence[nn.Module] | None = None
) -> Iterator[list[torch.Tensor]]:
    """Record the outputs of ``blocks`` (default ``feature_blocks(model)``).

    Yields a list that, after each forward of ``model``, holds the blocks'
    output tensors in execution order; it is emptied when a forward starts.
    Tensors are not detached, so losses on them backpropagate.
    """
    if blocks is None:
        blocks = feature_blocks(model)
    outputs: list[torch.Tensor] = []

    def on_start(_module: nn.Module, _args: Any) -> None:
        outputs.clear()

    def on_block(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        outputs.append(output)

    handles = [model.register_forward_pre_hook(on_start)]
    handles += [b.register_forward_hook(on_block) for b in blocks]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
