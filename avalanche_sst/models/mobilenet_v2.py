"""MobileNetV2 of Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2:
Inverted Residuals and Linear Bottlenecks", CVPR 2018, built on
``torchvision.models.MobileNetV2``.

For 32x32 inputs (CIFAR) ``small_input=True`` sets the stem stride to 1,
as CIFAR adaptations of the network do; ``in_channels`` adapts the stem
conv (e.g. 1 for grayscale).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import MobileNetV2

__all__ = ["mobilenet_v2"]


def mobilenet_v2(
    num_classes: int = 100,
    in_channels: int = 3,
    width_mult: float = 1.0,
    small_input: bool = True,
) -> MobileNetV2:
    """MobileNetV2 (randomly initialised) with ``num_classes`` outputs."""
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    old = model.features[0][0]
    stem = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=3,
        stride=1 if small_input else 2,
        padding=1,
        bias=False,
    )
    nn.init.kaiming_normal_(stem.weight, mode="fan_out")
    model.features[0][0] = stem
    return model
