"""Model zoo and model introspection for multi-step sparsity training.

Architectures: CIFAR ResNet (He et al., CVPR 2016), Wide ResNet (Zagoruyko &
Komodakis, BMVC 2016), MobileNetV2 (Sandler et al., CVPR 2018) and
torchvision's ImageNet ResNets.
"""

from __future__ import annotations

import re

from torch import nn

from .introspection import (
    ScalingFactor,
    capture_block_outputs,
    classifier,
    feature_blocks,
    require_blocks,
    require_scaling_factors,
    scaling_factors,
)
from .mobilenet_v2 import mobilenet_v2
from .resnet_cifar import CifarResNet, WideResNet, resnet_cifar, wide_resnet
from .resnet_imagenet import resnet34, resnet50, resnet101

__all__ = [
    "CifarResNet",
    "ScalingFactor",
    "WideResNet",
    "build_model",
    "capture_block_outputs",
    "classifier",
    "feature_blocks",
    "mobilenet_v2",
    "require_blocks",
    "require_scaling_factors",
    "resnet101",
    "resnet34",
    "resnet50",
    "resnet_cifar",
    "scaling_factors",
    "wide_resnet",
]

MODEL_NAMES = (
    "resnet8",
    "resnet20",
    "resnet32",
    "resnet110",
    "resnet<6n+2>[-w<width>]",
    "wrn28-10",
    "wrn<depth>-<k>",
    "mobilenetv2",
    "resnet34",
    "resnet50",
    "resnet101",
)

_IMAGENET = {"resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101}



def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build a model by name.

    Names (case-insensitive): ``resnet8``/``resnet20``/``resnet32``/``resnet110``
    or any CIFAR ``resnet<6n+2>``, optionally ``-w<width>`` (e.g. ``resnet20-w8``);
    ``wrn<depth>-<k>`` (e.g. ``wrn28-10``); ``mobilenetv2``; ImageNet
    ``resnet34``/``resnet50``/``resnet101`` (torchvision; ``resnet50`` is this
    one, not the 6n+2 CIFAR net).
    """
    key = name.strip().lower().replace("_", "")
    if key in _IMAGENET:
        return _IMAGENET[key](num_classes=num_classes, in_channels=in_channels)
    if key in ("mobilenetv2", "mobilenet-v2"):
        return mobilenet_v2(num_classes=num_classes, in_channels=in_channels)
    m = re.fullmatch(r"resnet-?(\d+)(?:-w(\d+))?", key)
    if m:
        depth = int(m.group(1))
        width = int(m.group(2)) if m.group(2) else 16
        return resnet_cifar(depth, num_classes=num_classes, in_channels=in_channels, width=width)
    m = re.fullmatch(r"wrn-?(\d+)-(\d+)", key)
    if m:
        return wide_resnet(
            int(m.group(1)), int(m.group(2)), num_classes=num_classes, in_channels=in_channels
        )
    raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(MODEL_NAMES)}")
