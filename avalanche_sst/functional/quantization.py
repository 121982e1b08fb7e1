"""Weight quantization for Ada-QPacknet (Pietron et al., ECAI 2023, sec. 3.2).

Pure functions on tensors, used by :mod:`avalanche_sst.models.quantized_multitask`
and :class:`avalanche_sst.strategies.AdaQPackNet`:

* Alg. 3 (non-linear quantization): one codebook per layer from a 1-D
  k-means with ``2**bits`` centroids over the layer's weights of one task
  (scikit-learn's ``KMeans``, centroids initialised on a linear grid between
  the smallest and the largest weight, ``n_init=1``, fixed seed), so a task
  holds at most ``2**bits`` distinct values per layer; :func:`kmeans_codebook`.
* the uniform (linear) quantizer the paper offers as an option: ``2**bits``
  evenly spaced levels between the smallest and the largest weight;
  :func:`linear_codebook`.
* codes (``uint8``, each below ``2**bits``) and their decoding:
  :func:`encode`, :func:`decode`.
* the 32-bit budget of a weight position shared among tasks (sec. 3.2, Fig. 2):
  :func:`check_bit_budget`.
* the capacity of one task, eq. 10: :func:`task_capacity_bits`.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MAX_BITS",
    "POSITION_BITS",
    "QUANTIZERS",
    "check_bit_budget",
    "decode",
    "encode",
    "kmeans_codebook",
    "linear_codebook",
    "quantize",
    "task_capacity_bits",
    "validate_bits",
]

POSITION_BITS = 32  # one fp32 weight's worth of storage, split among tasks
MAX_BITS = 8  # codes are uint8
QUANTIZERS = ("kmeans", "linear")


def validate_bits(bits, name: str = "bits") -> int:
    """``bits`` as an int in 1..8 (codes are stored as uint8), else a ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{name} must be an int in 1..{MAX_BITS}, got {bits!r}")
    if not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"{name} must be in 1..{MAX_BITS} (codes are stored as uint8), got {name}={bits}")
    return int(bits)


def _flat_values(values: Tensor) -> Tensor:
    if not isinstance(values, Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    return values.detach().reshape(-1).to(torch.float64).cpu()


def encode(values: Tensor, codebook: Tensor) -> Tensor:
    """The code (index of the nearest codebook entry, ``uint8``) of every value; ties go to the lower code."""
    flat = _flat_values(values)
    book = codebook.detach().reshape(-1).to(torch.float64).cpu()
    if book.numel() == 0:
        if flat.numel():
            raise ValueError("cannot encode values with an empty codebook")
        return torch.zeros(0, dtype=torch.uint8)
    if book.numel() > 2 ** MAX_BITS:
        raise ValueError(f"a codebook has at most {2 ** MAX_BITS} entries (uint8 codes), got {book.numel()}")
    return (flat[:, None] - book[None, :]).abs().argmin(dim=1).to(torch.uint8)


def decode(codes: Tensor, codebook: Tensor) -> Tensor:
    """The values the codes stand for: ``codebook[codes]`` (float32, on the codebook's device)."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8, got {codes.dtype}")
    return codebook.to(torch.float32)[codes.to(codebook.device).long()]


def linear_codebook(values: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Uniform quantizer: ``2**bits`` evenly spaced levels from min to max.

    Returns ``(codebook float32 [k], codes uint8 like values.reshape(-1))``.
    A constant layer gets a single level.
    """
    bits = validate_bits(bits)
    flat = _flat_values(values)
    if flat.numel() == 0:
        return torch.zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.uint8)
    lo, hi = flat.min(), flat.max()
    levels = 1 if hi == lo else 2 ** bits
    book = torch.linspace(float(lo), float(hi), levels, dtype=torch.float64)
    if levels == 1:
        codes = torch.zeros(flat.numel(), dtype=torch.uint8)
    else:
        codes = torch.round((flat - lo) / ((hi - lo) / (levels - 1))).clamp(0, levels - 1).to(torch.uint8)
    return book.to(torch.float32), codes


def kmeans_codebook(values: Tensor, bits: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Alg. 3 for one layer: 1-D k-means with ``2**bits`` centroids.

    scikit-learn's ``KMeans`` (Lloyd), centroids initialised on a linear
    grid from the smallest to the largest value, one initialisation,
    ``random_state=seed``. With fewer distinct values than ``2**bits`` every
    distinct value is its own centroid (exact). The codebook is sorted
    ascending; codes index it.

    Returns ``(codebook float32 [k <= 2**bits], codes uint8 like values.reshape(-1))``.
    """
    from sklearn.cluster import KMeans  # deferred: scikit-learn is only needed when quantizing

    bits = validate_bits(bits)
    flat = _flat_values(values)
    if flat.numel() == 0:
        return torch.zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.uint8)
    distinct = torch.unique(flat)
    if distinct.numel() <= 2 ** bits:
        book = distinct  # sorted; the exact answer, and KMeans would warn about duplicate points
        return book.to(torch.float32), encode(flat, book)
    k = 2 ** bits
    init = np.linspace(float(flat.min()), float(flat.max()), k).reshape(-1, 1)
    km = KMeans(n_clusters=k, init=init, n_init=1, random_state=int(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # "fewer distinct clusters" on ties
        km.fit(flat.numpy().reshape(-1, 1))
    centers = torch.from_numpy(km.cluster_centers_.reshape(-1))
    order = torch.argsort(centers)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k)
    labels = torch.from_numpy(km.labels_.astype(np.int64))
    return centers[order].to(torch.float32), rank[labels].to(torch.uint8)


def quantize(values: Tensor, bits: int, method: str = "kmeans", seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(codebook, codes)`` of ``values`` with the ``method`` quantizer ("kmeans" or "linear")."""
    if method == "kmeans":
        return kmeans_codebook(values, bits, seed=seed)
    if method == "linear":
        return linear_codebook(values, bits)
    raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {method!r}")


def check_bit_budget(used_bits: Tensor, mask: Tensor, bits: int, limit: int = POSITION_BITS) -> None:
    """Raise unless every position in ``mask`` can take ``bits`` more bits: ``used + bits <= limit``."""
    if mask.shape != used_bits.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and used_bits {tuple(used_bits.shape)} differ in shape")
    over = (used_bits.to(torch.int64) + int(bits) > int(limit)) & mask.to(torch.bool)
    if bool(over.any()):
        raise ValueError(f"{int(over.sum())} positions would exceed the {limit}-bit budget with {bits} more "
                         f"bits (max used {int(used_bits[mask.to(torch.bool)].max())}); draw the task's mask "
                         f"only over positions with used_bits + bits <= {limit}")


def task_capacity_bits(
    kept_per_layer: Sequence[int],
    bits: int,
    fp32_values: int = 0,
    codebook_sizes: Sequence[int] | None = None,
) -> int:
    """Eq. 10: the bits one task occupies.

    ``sum_i kept_i * b`` (the codes) ``+ sum_i |K_i| * (32 + b)`` (the
    codebooks; the paper writes ``|L| * 2**b``, used when ``codebook_sizes``
    is None) ``+ sum_i kept_i`` (the mask, one bit per kept position)
    ``+ 32 * fp32_values`` (BatchNorm parameters and statistics, biases and
    head kept per task in fp32; METHOD.md). ``bits = 32`` means unquantized
    (the pruning-only ablation): the values themselves, no codebook.
    """
    kept = [int(k) for k in kept_per_layer]
    if any(k < 0 for k in kept):
        raise ValueError(f"kept_per_layer must be non-negative counts, got {kept}")
    if bits != POSITION_BITS:
        bits = validate_bits(bits)
    total = sum(kept)
    cap = total * bits + total + POSITION_BITS * int(fp32_values)
    if bits != POSITION_BITS:
        sizes = [2 ** bits] * len(kept) if codebook_sizes is None else [int(s) for s in codebook_sizes]
        cap += sum(sizes) * (POSITION_BITS + bits)
    return cap
