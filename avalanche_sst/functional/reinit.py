"""Diverse re-initialization math: eq. (4) of Lee & Kim, IEEE Access 2023.

The re-initialization range ``Target_r + I < R < 1 - I`` read as a pair of
quantiles of the sorted ``|gamma|`` vector (:func:`reinit_range`; per layer:
:func:`layer_reinit_ranges`, an option beyond the paper), the uniform draws of
new factors from it (:func:`draw_reinit_values`), and the diagnostic
:func:`mean_abs_split` (mean ``|gamma|`` of the useless factors and of the rest).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import Tensor

from avalanche_sst.functional.sparsity import (GammaInput, as_tensor_list, flat_abs, real, select_smallest, validate_ratio,
                                               validate_reinit_margin)

__all__ = ["reinit_range", "layer_reinit_ranges", "draw_reinit_values", "mean_abs_split"]


def reinit_range(abs_gammas: Tensor, target_ratio: float, margin: float) -> tuple[float, float]:
    """Eq. (4): the re-initialization range ``Target_r + I < R < 1 - I``.

    ``abs_gammas`` is the 1-D tensor of ``|gamma|`` of all factors (any
    order). They are sorted ascending and the values at the quantiles
    ``q_low = Target_r + I`` and ``q_high = 1 - I`` are returned as
    ``(low, high)``. Quantile definition (same as ``torch.quantile`` /
    ``numpy.quantile`` with ``interpolation='linear'``): for ``n`` sorted
    values ``v_0 <= ... <= v_{n-1}``, position ``p = q * (n - 1)``, value
    ``v_floor(p) + (p - floor(p)) * (v_floor(p)+1 - v_floor(p))``; computed
    in float64. Example: ``v = 0, 0.1, ..., 1.0`` (n = 11), ``Target_r =
    0.3``, ``I = 0.1`` -> positions 4 and 9 -> ``(0.4, 0.9)``.
    """
    target = validate_ratio(target_ratio, "target_ratio")
    m = validate_reinit_margin(target, margin)
    if not isinstance(abs_gammas, Tensor):
        raise ValueError(f"abs_gammas must be a torch.Tensor, got {type(abs_gammas).__name__}")
    if abs_gammas.dim() != 1:
        raise ValueError(f"abs_gammas must be 1-D, got shape {tuple(abs_gammas.shape)}")
    if abs_gammas.numel() == 0:
        raise ValueError("abs_gammas is empty")
    values = abs_gammas.detach().to(device="cpu", dtype=torch.float64)
    if torch.isnan(values).any():
        raise ValueError("abs_gammas contains NaN")
    if (values < 0).any():
        raise ValueError("abs_gammas must be absolute values (>= 0); pass gamma.abs()")
    q = torch.tensor([target + m, 1.0 - m], dtype=torch.float64)
    low, high = torch.quantile(values, q, interpolation="linear").tolist()
    return low, high


def layer_reinit_ranges(
    abs_gammas: Sequence[Tensor], target_ratio: float, margin: float
) -> list[tuple[float, float]]:
    """Eq. (4) applied to each layer alone: one ``(low, high)`` per layer.

    An option beyond the paper (``reinit_range_scope="layer"``): the range of
    a layer's re-initialised factors is the ``Target_r + I`` to ``1 - I``
    quantile span of that layer's own ``|gamma|`` (same quantile definition as
    :func:`reinit_range`), so a low-scale layer (e.g. a shortcut BN) is not
    refilled at the scale of the whole network. Example: layer ``0, 0.1, ...,
    1.0`` and layer ``0, 0.01, ..., 0.04`` at ``Target_r = 0.3, I = 0.1`` ->
    ``[(0.4, 0.9), (0.016, 0.036)]``.
    """
    layers = as_tensor_list(abs_gammas, "abs_gammas")
    if not layers:
        raise ValueError("abs_gammas holds no layer")
    return [reinit_range(g.detach().reshape(-1), target_ratio, margin) for g in layers]


def mean_abs_split(gammas: GammaInput, ratio: float) -> tuple[float, float]:
    """Mean ``|gamma|`` of the ``ratio`` fraction selected by :func:`select_smallest`
    (the "useless" factors at ``ratio = Target_r``) and of the rest.

    A diagnostic (does the penalty shrink only the selected factors, as in the
    paper's Fig. 3?). An empty side gives ``nan``.
    """
    layers = as_tensor_list(gammas)
    masks = select_smallest(layers, ratio)
    flat = flat_abs(layers)
    mask = torch.cat([m.reshape(-1).to(flat.device) for m in masks]) if masks else flat.bool()
    selected, rest = flat[mask].double(), flat[~mask].double()
    return (float(selected.mean()) if selected.numel() else math.nan,
            float(rest.mean()) if rest.numel() else math.nan)


def draw_reinit_values(
    n: int,
    low: float,
    high: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``n`` new scaling factors uniformly from ``[low, high)`` (eq. 4's R).

    Uses only the given ``torch.Generator`` (never the global RNG), so two
    students made with different generators get different draws and a
    seeded generator reproduces them. The tensor is on the generator's device.
    ``low == high`` gives ``n`` copies of ``low``. (Up to float rounding the
    upper end is exclusive.)
    """
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    lo = real(low, "low")
    hi = real(high, "high")
    if lo > hi:
        raise ValueError(f"low must be <= high, got low={lo!r}, high={hi!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator, got {type(generator).__name__}"
        )
    u = torch.rand(int(n), generator=generator, dtype=dtype, device=generator.device)
    return lo + (hi - lo) * u
