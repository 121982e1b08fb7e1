"""Argument checks shared by the loss functions: each error names the argument and the fix."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------
def check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_logits(x: object, name: str) -> Tensor:
    t = check_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [batch, classes], got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must have a non-empty batch and class dimension, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def check_same_shape(a: Tensor, name_a: str, b: Tensor, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"shape mismatch: {name_a} has shape {tuple(a.shape)} but {name_b} has shape "
            f"{tuple(b.shape)}"
        )


def check_logit_pair(a: object, name_a: str, b: object, name_b: str) -> tuple[Tensor, Tensor]:
    ta = check_logits(a, name_a)
    tb = check_logits(b, name_b)
    check_same_shape(ta, name_a, tb, name_b)
    return ta, tb


def check_targets(targets: object, logits: Tensor, name_logits: str) -> Tensor:
    t = check_tensor(targets, "targets")
    if t.dim() != 1 or t.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be 1-D with one class index per row of {name_logits} "
            f"(batch {logits.shape[0]}), got shape {tuple(t.shape)}"
        )
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"targets must be an integer class-index tensor, got dtype {t.dtype}")
    return t.long()


def positive(value: object, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def non_negative(value: object, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v
