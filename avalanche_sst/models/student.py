"""Students of the edge method: a teacher's architecture, one block per group, pruned widths.

Zhao, Chen & Zhao, "Enabling Deep Learning on Edge Devices through Filter
Pruning and Knowledge Transfer" (sec. 3): the student keeps every group of
the teacher but only its last block, and each conv keeps the number of
filters the activation rule (eq. 1-2, :mod:`avalanche_sst.functional.filter_pruning`)
gives. The student is trained from scratch, so it is built fresh here.

Also the cost report of Table 1: parameters and FLOPs (counted by
``torch.utils.flop_counter.FlopCounterMode``) against the teacher.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .resnet_cifar import CifarResNet, LayerWidths, WideResNet, resnet_cifar, wide_resnet

__all__ = [
    "build_student",
    "group_last_convs",
    "model_cost",
    "residual_groups",
    "student_report",
    "teacher_widths",
]


def residual_groups(model: nn.Module, who: str = "the edge method") -> list[list[nn.Module]]:
    """The model's residual groups (``layer1..layer3``), each a list of its blocks in forward order."""
    if not isinstance(model, (CifarResNet, WideResNet)):
        raise ValueError(
            f"{who} needs a teacher made of residual groups of blocks (resnet_cifar or wide_resnet); "
            f"got {model.__class__.__name__}. Build it with avalanche_sst.models.resnet_cifar(...) "
            f"or wide_resnet(...)"
        )
    return [list(model.layer1), list(model.layer2), list(model.layer3)]


def group_last_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The last conv of each group: the second conv of its last block (the paper's trainable layers)."""
    return [group[-1].conv2 for group in residual_groups(model)]


def teacher_widths(model: nn.Module) -> LayerWidths:
    """The per-layer widths a ``resnet_cifar``/``wide_resnet`` was built with."""
    residual_groups(model)
    return model.widths


def build_student(
    teacher: nn.Module, widths: LayerWidths, num_classes: Optional[int] = None
) -> nn.Module:
    """A freshly initialised student: the teacher's class, one block per group, ``widths``.

    ``widths`` must have one mid width per group (``mids`` of length 3) and
    no conv wider than the teacher's matching conv (the last block's first
    conv for the mids). ``num_classes`` defaults to the teacher's.
    """
    groups = residual_groups(teacher, "build_student")
    if widths.blocks_per_group != 1:
        raise ValueError(
            f"build_student: the student keeps one block per group, so widths.mids needs 3 entries; "
            f"got {len(widths.mids)}"
        )
    full = teacher.widths
    limits = {"stem": (widths.stem, full.stem)}
    for g, group in enumerate(groups):
        limits[f"group{g + 1}"] = (widths.groups[g], full.groups[g])
        limits[f"group{g + 1} mid"] = (widths.mids[g], group[-1].conv1.out_channels)
    wider = {k: v for k, v in limits.items() if v[0] > v[1]}
    if wider:
        raise ValueError(
            f"build_student: the student may not be wider than its teacher; (student, teacher) widths: "
            f"{wider}. Take the widths from avalanche_sst.functional.filter_pruning.prune_plan(teacher, ...)"
        )
    in_channels = teacher.conv1.in_channels
    classes = teacher.fc.out_features if num_classes is None else num_classes
    if isinstance(teacher, WideResNet):
        return wide_resnet(widths=widths, num_classes=classes, in_channels=in_channels,
                           dropout=teacher.dropout_p)
    return resnet_cifar(widths=widths, num_classes=classes, in_channels=in_channels)


def model_cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Parameters and FLOPs of one forward pass of a single input of shape ``input_shape`` (C, H, W)."""
    was_training = model.training
    weight = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=weight.device, dtype=weight.dtype)
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return {"params": sum(p.numel() for p in model.parameters()), "flops": int(counter.get_total_flops())}


def student_report(teacher: nn.Module, student: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Table 1's columns: parameters and FLOPs of both, compression ratio (teacher/student params)."""
    t, s = model_cost(teacher, input_shape), model_cost(student, input_shape)
    return {
        "teacher_params": t["params"],
        "student_params": s["params"],
        "teacher_flops": t["flops"],
        "student_flops": s["flops"],
        "compression_ratio": t["params"] / s["params"],
        "flops_ratio": t["flops"] / max(s["flops"], 1),
    }
