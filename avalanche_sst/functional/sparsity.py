"""Selective sparsity training (SST) math.

Pure functions implementing section III-B/C of Lee & Kim, "Multi-Step Training
Framework Using Sparsity Training for Efficient Utilization of Accumulated New
Data in CNNs", IEEE Access 2023:

* eq. (1): the Network Slimming objective ``L = sum l(f(x, W), y) + lambda *
  sum_{s in tau} |s|``; SST restricts the penalty set ``tau`` to the selected
  factors (:func:`select_smallest`, :func:`l1_subgradient`,
  :func:`soft_threshold_`).
* eq. (2): the SP_r schedule (:func:`sparsity_ratio`,
  :func:`effective_sparsity_ratio`).
* eq. (3): ``E_cut = E_max / 3`` (:func:`cut_epoch`).
* eq. (4), diverse re-initialization, is in :mod:`.reinit`.

The binding choices for points the paper leaves open are those of
``METHOD.md`` and are restated in each docstring: epochs count from 0; the
ranking of scaling factors is global over all layers by ``|gamma|``; the
number of factors a ratio selects is ``floor(ratio * N + 0.5)``; R of eq. (4)
is read as a pair of quantiles of the sorted ``|gamma|`` vector.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_TARGET_RATIO",
    "DEFAULT_CUT_FRACTION",
    "validate_ratio",
    "validate_reinit_margin",
    "cut_epoch",
    "sparsity_ratio",
    "num_selected",
    "select_smallest",
    "count_at_or_below",
    "fraction_at_or_below",
    "early_switch_reached",
    "effective_sparsity_ratio",
    "l1_subgradient",
    "soft_threshold_",
]

#: Paper default for Target_r (section IV, Table 1).
DEFAULT_TARGET_RATIO: float = 0.3
#: Paper default for E_cut / E_max (eq. 3).
DEFAULT_CUT_FRACTION: float = 1.0 / 3.0

GammaInput = Union[Tensor, Sequence[Tensor]]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _is_real(value: object) -> bool:
    """True for real numbers (Python, NumPy); False for bool and others."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def real(value: object, name: str) -> float:
    """Convert ``value`` to a finite float or raise ValueError naming ``name``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    if not _is_real(value):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    out = float(value)  # type: ignore[arg-type]
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {out!r}")
    return out


def as_tensor_list(gammas: GammaInput, name: str = "gammas") -> list[Tensor]:
    """Accept one tensor or a sequence of tensors; return a list of tensors."""
    if isinstance(gammas, Tensor):
        return [gammas]
    if not isinstance(gammas, Sequence) or isinstance(gammas, (str, bytes)):
        raise ValueError(
            f"{name} must be a tensor or a sequence of tensors, got {type(gammas).__name__}"
        )
    out = list(gammas)
    for i, g in enumerate(out):
        if not isinstance(g, Tensor):
            raise ValueError(f"{name}[{i}] must be a torch.Tensor, got {type(g).__name__}")
    return out


def flat_abs(gammas: list[Tensor]) -> Tensor:
    """Concatenate ``|gamma|`` of all layers (detached, on the first device)."""
    if not gammas:
        return torch.empty(0)
    device = gammas[0].device
    return torch.cat([g.detach().reshape(-1).abs().to(device) for g in gammas])


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def validate_ratio(value: object, name: str) -> float:
    """Check a ratio of eq. (2)/(4) (``Target_r``, ``SP_r``): ``0 < value < 1``.

    Returns the value as a float. Raises ValueError naming ``name`` for values
    outside the open interval (0, 1), NaN, infinities, booleans and non-numbers.
    """
    msg = (
        f"{name} must be a number in the open interval (0, 1) "
        f"(paper default {DEFAULT_TARGET_RATIO}), got {value!r}"
    )
    if not _is_real(value):
        raise ValueError(msg)
    out = float(value)  # type: ignore[arg-type]
    if not (0.0 < out < 1.0):  # False for NaN as well
        raise ValueError(msg)
    return out


def validate_reinit_margin(target_ratio: float, margin: float) -> float:
    """Check the margin ``I`` of eq. (4): ``0 <= I < 1`` and ``Target_r + 2I < 1``.

    The second condition makes the range of eq. (4), from the
    ``Target_r + I`` quantile to the ``1 - I`` quantile, non-empty. Returns
    ``margin`` as a float; raises ValueError naming ``margin`` (or
    ``target_ratio``) and showing the bound otherwise.
    """
    target = validate_ratio(target_ratio, "target_ratio")
    bound = (1.0 - target) / 2.0
    msg = (
        f"margin must be a number with 0 <= margin < 1 and target_ratio + 2*margin < 1, "
        f"i.e. margin < (1 - target_ratio)/2 = {bound:g} for target_ratio={target:g} "
        f"(paper uses 0.1 and 0.2), got {margin!r}"
    )
    if not _is_real(margin):
        raise ValueError(msg)
    m = float(margin)  # type: ignore[arg-type]
    if not (0.0 <= m < 1.0) or not (target + 2.0 * m < 1.0):
        raise ValueError(msg)
    return m


# --------------------------------------------------------------------------
# eq. (2), (3): the SP_r schedule
# --------------------------------------------------------------------------
def cut_epoch(max_epochs: float, cut_fraction: float = DEFAULT_CUT_FRACTION) -> float:
    """Eq. (3): ``E_cut = cut_fraction * E_max`` (paper: ``cut_fraction = 1/3``).

    The result may be fractional (e.g. 10 epochs -> 3.33); :func:`sparsity_ratio`
    accepts a fractional ``cut_epoch``. ``max_epochs`` must be >= 1 and
    ``cut_fraction`` in (0, 1].
    """
    e_max = real(max_epochs, "max_epochs")
    if e_max < 1.0:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs!r}")
    frac = real(cut_fraction, "cut_fraction")
    if not (0.0 < frac <= 1.0):
        raise ValueError(
            f"cut_fraction must be in (0, 1] (paper default 1/3), got {cut_fraction!r}"
        )
    return frac * e_max


def sparsity_ratio(epoch: float, target_ratio: float, cut_epoch: float) -> float:
    """Eq. (2): the scheduled SP_r at a 0-based epoch of the SST phase.

    ``SP_r = (Target_r - 1) / E_cut * e + 1`` for ``e < E_cut``, else
    ``Target_r``. It starts at 1 (all factors penalized) at epoch 0 and
    reaches ``Target_r`` at ``E_cut``. ``cut_epoch`` may be fractional;
    ``cut_epoch <= 0`` gives ``Target_r`` at once.
    """
    e = real(epoch, "epoch")
    if e < 0:
        raise ValueError(f"epoch must be >= 0 (0-based), got {epoch!r}")
    target = validate_ratio(target_ratio, "target_ratio")
    cut = real(cut_epoch, "cut_epoch")
    if cut <= 0.0 or e >= cut:
        return target
    return (target - 1.0) / cut * e + 1.0


def num_selected(ratio: float, n: int) -> int:
    """How many of ``n`` scaling factors a ratio (SP_r or Target_r) selects.

    Defined as ``round(ratio * n)`` with halves rounded up, i.e.
    ``floor(ratio * n + 0.5)`` in float arithmetic, clamped to ``[0, n]``.
    Examples: ``(0.4, 5) -> 2``, ``(0.3, 5) -> 2`` (1.5 rounds up),
    ``(0.1, 4) -> 0`` (0.4 rounds down). ``ratio`` may be anywhere in
    ``[0, 1]`` here (SP_r = 1 at epoch 0 selects everything).
    """
    r = real(ratio, "ratio")
    if not (0.0 <= r <= 1.0):
        raise ValueError(f"ratio must be in [0, 1], got {ratio!r}")
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    k = math.floor(r * int(n) + 0.5)
    return int(min(max(k, 0), int(n)))


def select_smallest(gammas: GammaInput, ratio: float) -> list[Tensor]:
    """Select the ``ratio`` fraction of factors with the smallest ``|gamma|``.

    SST's choice of the penalty set of eq. (1) at SP_r of eq. (2). The ranking
    is global: ``|gamma|`` of all layers is concatenated (layer order, then
    flattened position), sorted with a stable sort, and the first
    ``num_selected(ratio, N)`` entries are selected, so ties are broken by
    position (earlier layer / earlier index first). Returns one boolean mask
    per input, shaped like it and on its device. An empty sequence gives ``[]``.
    """
    layers = as_tensor_list(gammas)
    if not layers:
        num_selected(ratio, 0)  # still validates ratio
        return []
    flat = flat_abs(layers)
    if torch.isnan(flat).any():
        raise ValueError("gammas contain NaN; cannot rank scaling factors")
    n = flat.numel()
    k = num_selected(ratio, n)
    order = torch.sort(flat, stable=True).indices
    flat_mask = torch.zeros(n, dtype=torch.bool, device=flat.device)
    flat_mask[order[:k]] = True
    masks: list[Tensor] = []
    start = 0
    for g in layers:
        m = g.numel()
        masks.append(flat_mask[start : start + m].reshape(g.shape).to(g.device))
        start += m
    return masks


def _zero_tol(zero_tol: float) -> float:
    tol = real(zero_tol, "zero_tol")
    if tol < 0:
        raise ValueError(f"zero_tol must be >= 0, got {zero_tol!r}")
    return tol


def count_at_or_below(gammas: GammaInput, zero_tol: float) -> int:
    """Number of scaling factors with ``|gamma| <= zero_tol`` (over all layers).

    The "converged to 0" count of the early switch of eq. (2).
    """
    tol = _zero_tol(zero_tol)
    flat = flat_abs(as_tensor_list(gammas))
    return int((flat <= tol).sum().item())


def fraction_at_or_below(gammas: GammaInput, zero_tol: float) -> float:
    """Fraction of scaling factors with ``|gamma| <= zero_tol`` (over all layers).

    Raises ValueError if ``gammas`` holds no factor (the fraction is undefined).
    """
    layers = as_tensor_list(gammas)
    n = sum(g.numel() for g in layers)
    if n == 0:
        raise ValueError("gammas holds no scaling factors; the fraction is undefined")
    return count_at_or_below(layers, zero_tol) / n


def early_switch_reached(target_ratio: float, gammas: GammaInput, zero_tol: float) -> bool:
    """Early-switch condition of section III-B (after eq. 3).

    True when the number of factors with ``|gamma| <= zero_tol`` already
    reaches ``num_selected(Target_r, N)``: "if filter scaling factors as much
    as the Target_r converge to 0 before the E_cut epoch, SP_r immediately has
    the same value as the Target_r".
    """
    target = validate_ratio(target_ratio, "target_ratio")
    layers = as_tensor_list(gammas)
    n = sum(g.numel() for g in layers)
    return count_at_or_below(layers, zero_tol) >= num_selected(target, n)


def effective_sparsity_ratio(
    epoch: float,
    target_ratio: float,
    cut_epoch: float,
    gammas: GammaInput,
    zero_tol: float,
    already_switched: bool = False,
) -> float:
    """Eq. (2) with the early switch: the SP_r actually used at an epoch start.

    Returns ``Target_r`` if ``already_switched`` is true or if
    :func:`early_switch_reached` holds for the current ``gammas``; otherwise
    the scheduled :func:`sparsity_ratio`. The function keeps no state: once
    it has returned ``Target_r`` because of the switch, the caller keeps
    ``Target_r`` for the rest of the phase (latching), e.g. by storing
    ``early_switch_reached(...)`` in a flag and passing it back as
    ``already_switched`` -- the count may drop again later, the schedule must
    not climb back.
    """
    scheduled = sparsity_ratio(epoch, target_ratio, cut_epoch)
    target = float(target_ratio)
    if already_switched or early_switch_reached(target, gammas, zero_tol):
        return target
    return scheduled


# --------------------------------------------------------------------------
# eq. (1): the penalty on the selected set
# --------------------------------------------------------------------------
def _check_mask(gamma: Tensor, mask: Tensor) -> None:
    if not isinstance(gamma, Tensor):
        raise ValueError(f"gamma must be a torch.Tensor, got {type(gamma).__name__}")
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape != gamma.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match gamma shape {tuple(gamma.shape)}"
        )


def l1_subgradient(gamma: Tensor, mask: Tensor, lam: float) -> Tensor:
    """Subgradient of eq. (1)'s penalty restricted to the selected set.

    Returns ``lam * sign(gamma) * mask`` (``sign(0) = 0``), the Network
    Slimming update that the caller adds to ``gamma.grad`` after backward.
    The result is detached and has ``gamma``'s dtype and device.
    """
    _check_mask(gamma, mask)
    lam_f = real(lam, "lam")
    if lam_f < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    g = gamma.detach()
    return lam_f * torch.sign(g) * mask.to(device=g.device, dtype=g.dtype)


def soft_threshold_(gamma: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """Proximal step for eq. (1)'s penalty on the selected set, in place.

    For masked entries ``gamma <- sign(gamma) * max(|gamma| - threshold, 0)``
    (``threshold`` is typically ``lr * lambda``); unmasked entries are left
    as they are. An optional alternative to :func:`l1_subgradient`, never the
    default. Works on parameters that require grad (runs under ``no_grad``).
    Returns ``gamma``.
    """
    _check_mask(gamma, mask)
    thr = real(threshold, "threshold")
    if thr < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    with torch.no_grad():
        shrunk = torch.sign(gamma) * torch.clamp(gamma.abs() - thr, min=0.0)
        gamma.copy_(torch.where(mask.to(gamma.device), shrunk, gamma))
    return gamma
