"""Model zoo and model introspection for multi-step sparsity training.

Architectures: CIFAR ResNet (He et al., CVPR 2016), Wide ResNet (Zagoruyko &
Komodakis, BMVC 2016), MobileNetV2 (Sandler et al., CVPR 2018) and
torchvision's ImageNet ResNets; a BatchNorm-free MLP and small CNN (for
Avalanche's PackNet).
"""

from __future__ import annotations

import re
from typing import Optional

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
from .resnet_cifar import CifarResNet, LayerWidths, WideResNet, resnet_cifar, wide_resnet
from .stages import residual_stages, stage, stage_out_channels
from .student import build_student, model_cost, residual_groups, student_report
from .resnet_imagenet import resnet34, resnet50, resnet101
from . import small as _small  # build_model's `multi_head` flag shadows the function
from .small import MLP, SmallCNN, mlp, multi_head, small_cnn

__all__ = [
    "LayerWidths",
    "build_student",
    "model_cost",
    "residual_groups",
    "residual_stages",
    "stage",
    "stage_out_channels",
    "student_report",
    "CifarResNet",
    "MLP",
    "SmallCNN",
    "ScalingFactor",
    "WideResNet",
    "build_model",
    "capture_block_outputs",
    "classifier",
    "feature_blocks",
    "mlp",
    "mobilenet_v2",
    "multi_head",
    "require_blocks",
    "require_scaling_factors",
    "resnet101",
    "resnet34",
    "resnet50",
    "resnet_cifar",
    "scaling_factors",
    "small_cnn",
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
    "mlp",
    "mlp-<h1>[-<h2>...]",
    "cnn",
    "cnn-<w1>[-<w2>...]",
)

_IMAGENET = {"resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101}



def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: Optional[int] = None,
    multi_head: bool = False,
) -> nn.Module:
    """Build a model by name.

    Names (case-insensitive): ``resnet8``/``resnet20``/``resnet32``/``resnet110``
    or any CIFAR ``resnet<6n+2>``, optionally ``-w<width>`` (e.g. ``resnet20-w8``);
    ``wrn<depth>-<k>`` (e.g. ``wrn28-10``); ``mobilenetv2``; ImageNet
    ``resnet34``/``resnet50``/``resnet101`` (torchvision; ``resnet50`` is this
    one, not the 6n+2 CIFAR net). BatchNorm-free models (for Avalanche's
    PackNet): ``mlp`` (one hidden layer of 256) or ``mlp-<h1>[-<h2>...]``
    (e.g. ``mlp-400-400``; ``image_size`` required: the input is flattened),
    ``cnn`` (widths 32-64-128) or ``cnn-<w1>[-<w2>...]`` (e.g. ``cnn-8-16``).

    ``multi_head=True`` replaces the final Linear by Avalanche's
    ``MultiHeadClassifier`` (one head per task label) for task-incremental runs.
    """
    model = _build_single_head(name, num_classes, in_channels, image_size)
    return _small.multi_head(model) if multi_head else model


def _build_single_head(name: str, num_classes: int, in_channels: int, image_size: Optional[int]) -> nn.Module:
    key = name.strip().lower().replace("_", "")
    m = re.fullmatch(r"mlp((?:-\d+)*)", key)
    if m:
        if image_size is None:
            raise ValueError(f"model {name!r} flattens its input: pass image_size=<height of the square images>")
        hidden = [int(h) for h in m.group(1).split("-")[1:]] or [256]
        return mlp(in_channels * image_size * image_size, hidden, num_classes)
    m = re.fullmatch(r"cnn((?:-\d+)*)", key)
    if m:
        widths = [int(w) for w in m.group(1).split("-")[1:]] or [32, 64, 128]
        return small_cnn(in_channels, widths, num_classes)
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
