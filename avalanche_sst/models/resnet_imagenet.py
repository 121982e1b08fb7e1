"""ImageNet ResNets (He, Zhang, Ren & Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016): torchvision's ResNet-34/50/101, randomly
initialised, with configurable ``num_classes`` and ``in_channels``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision import models
from torchvision.models import ResNet

__all__ = ["resnet34", "resnet50", "resnet101"]


def _build(factory: Callable[..., ResNet], num_classes: int, in_channels: int) -> ResNet:
    model = factory(weights=None, num_classes=num_classes)
    if in_channels != model.conv1.in_channels:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def resnet34(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-34 (BasicBlocks [3, 4, 6, 3])."""
    return _build(models.resnet34, num_classes, in_channels)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-50 (Bottlenecks [3, 4, 6, 3])."""
    return _build(models.resnet50, num_classes, in_channels)


def resnet101(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-101 (Bottlenecks [3, 4, 23, 3])."""
    return _build(models.resnet101, num_classes, in_channels)
