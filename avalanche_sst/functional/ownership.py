"""Per-weight ownership of a network's Conv2d/Linear weights, shared by the
mask-based continual-learning methods of this package:

* M2KD (Zhou et al., BMVC 2019, sec. 3.3, eq. 5-8): one owner id per weight
  (``uint8``; :data:`FREE` = 255 = not owned yet); snapshot k is the network
  whose weights are the current ones masked to ``id <= k``.
* Ada-QPacknet (seed 003): per-task ownership masks over positions that
  several tasks may share through a 32-bit budget; task t's sub-network is
  evaluated from stored state (codes decoded through a codebook).

The module knows nothing about either method; it offers the pieces both need.

Stable API (other modules import these names; do not change signatures)
-----------------------------------------------------------------------
``FREE``                                         uint8 id of a weight nobody owns (255).
``OWNER_BUFFER``                                 default buffer name for owner ids ("owner_id").
``owned_layers(model, exclude=())``              -> list[(qualified_name, module)]: every Conv2d and
                                                 Linear of ``model`` in module order, except those
                                                 named in ``exclude`` or lying under an excluded
                                                 prefix (e.g. ``exclude=("fc", "aux_head")`` for heads).
``attach_buffer(model, name, factory, exclude=())``  registers a persistent buffer ``name`` =
                                                 ``factory(module)`` on every owned layer that lacks
                                                 it; returns the layers. ``state_dict`` carries the
                                                 buffers and ``torch.load(weights_only=True)`` loads them.
``attach_owner_ids(model, exclude=(), name=OWNER_BUFFER)``  attach_buffer with a uint8 tensor shaped
                                                 like the weight, filled with FREE.
``layers_with_buffer(model, name)``              -> list[(qualified_name, module)] holding buffer ``name``
                                                 (finds the layers again after a reload; no exclude needed).
``magnitude_keep_mask(weight, free, ratio)``     -> bool mask: among the ``free`` positions, the
                                                 largest-|w| ones kept so that ``round(ratio * n_free)``
                                                 (Python's round: half to even) of the free ones are
                                                 released (ratio in [0, 1)); ties broken by position.
``frozen_update(layers, frozen, zeroed=None)``   context manager around ``optimizer.step()``:
                                                 on entry masks the gradient at frozen and zeroed
                                                 positions and remembers the weights; on exit writes
                                                 the frozen positions back bit-for-bit (so neither
                                                 weight decay nor momentum nor Adam moments move
                                                 them) and re-zeroes the zeroed ones.
                                                 ``frozen(name, module)`` / ``zeroed(name, module)`` ->
                                                 bool tensor shaped like the weight, or None.
``mask_frozen_grads(layers, frozen, zeroed=None)``  the gradient part of frozen_update alone.
``masked_weights(layers, keep)``                 -> {"<layer>.weight": weight * keep(name, module)}:
                                                 parameter substitutions for a sub-network.
``functional_forward(model, substitutions, *args, **kwargs)``  runs ``model`` through
                                                 ``torch.func.functional_call`` with the given
                                                 parameters/buffers substituted (the module itself,
                                                 its weights and its buffers are not modified).
``count_weights(layers)``                        -> total number of weight entries of the layers.
``eval_mode(model)``                             context manager: model.eval() inside, previous
                                                 train/eval flags of every submodule restored after
                                                 (snapshots run in eval mode inside a training step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "FREE",
    "OWNER_BUFFER",
    "attach_buffer",
    "attach_owner_ids",
    "count_weights",
    "eval_mode",
    "frozen_update",
    "functional_forward",
    "layers_with_buffer",
    "magnitude_keep_mask",
    "mask_frozen_grads",
    "masked_weights",
    "owned_layers",
]

FREE = 255
OWNER_BUFFER = "owner_id"

Layer = tuple[str, nn.Module]
MaskFn = Callable[[str, nn.Module], Optional[Tensor]]


def _excluded(name: str, exclude: Sequence[str]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


def owned_layers(model: nn.Module, exclude: Sequence[str] = ()) -> list[Layer]:
    """Every Conv2d and Linear of ``model`` (module order), minus ``exclude`` prefixes."""
    if isinstance(exclude, str):
        raise TypeError(f"exclude must be a sequence of module names, got the string {exclude!r}; "
                        f"write exclude=({exclude!r},)")
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not _excluded(name, exclude)
    ]


def attach_buffer(
    model: nn.Module,
    name: str,
    factory: Callable[[nn.Module], Tensor],
    exclude: Sequence[str] = (),
) -> list[Layer]:
    """Register buffer ``name`` (persistent) on every owned layer that has none yet."""
    layers = owned_layers(model, exclude)
    if not layers:
        raise ValueError(f"{model.__class__.__name__} has no Conv2d/Linear layer outside "
                         f"exclude={tuple(exclude)!r} to attach {name!r} to")
    for _, m in layers:
        if not hasattr(m, name):
            m.register_buffer(name, factory(m), persistent=True)
        elif name not in m._buffers:
            raise ValueError(f"{m.__class__.__name__} already has a non-buffer attribute {name!r}; "
                             f"choose another buffer name")
    return layers


def attach_owner_ids(
    model: nn.Module, exclude: Sequence[str] = (), name: str = OWNER_BUFFER
) -> list[Layer]:
    """Attach a uint8 owner-id buffer (all :data:`FREE`) shaped like each weight."""
    return attach_buffer(
        model,
        name,
        lambda m: torch.full_like(m.weight, FREE, dtype=torch.uint8, requires_grad=False),
        exclude,
    )


def layers_with_buffer(model: nn.Module, name: str) -> list[Layer]:
    """The layers of ``model`` (module order) that hold buffer ``name``."""
    return [(n, m) for n, m in model.named_modules() if name in m._buffers]


def count_weights(layers: Iterable[Layer]) -> int:
    return sum(m.weight.numel() for _, m in layers)


def magnitude_keep_mask(weight: Tensor, free: Tensor, ratio: float) -> Tensor:
    """Positions of ``free`` to keep: the largest-|w| ones, releasing ``round(ratio * n_free)``.

    Ties are broken by position (stable sort), so the result is deterministic.
    Positions outside ``free`` are never kept (they belong to someone else).
    """
    if not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"ratio must be in [0, 1) (0 keeps every free weight), got ratio={ratio!r}")
    if free.shape != weight.shape or free.dtype != torch.bool:
        raise ValueError(f"free must be a bool tensor shaped like the weight {tuple(weight.shape)}, "
                         f"got {free.dtype} {tuple(free.shape)}")
    flat_free = free.reshape(-1)
    idx = flat_free.nonzero().squeeze(1)
    n_release = int(round(float(ratio) * idx.numel()))
    keep = torch.zeros_like(flat_free)
    if idx.numel() - n_release > 0:
        mags = weight.detach().reshape(-1)[idx].abs()
        order = torch.sort(mags, descending=True, stable=True).indices
        keep[idx[order[: idx.numel() - n_release]]] = True
    return keep.reshape(weight.shape)


def _masks(layers: Iterable[Layer], fn: Optional[MaskFn]) -> Iterator[tuple[nn.Module, Tensor]]:
    if fn is None:
        return
    for name, m in layers:
        mask = fn(name, m)
        if mask is not None:
            yield m, mask


def mask_frozen_grads(layers: Sequence[Layer], frozen: MaskFn, zeroed: Optional[MaskFn] = None) -> None:
    """Zero the weight gradient at frozen and zeroed positions (optimizer moments stay clean)."""
    for fn in (frozen, zeroed):
        for m, mask in _masks(layers, fn):
            if m.weight.grad is not None:
                m.weight.grad.masked_fill_(mask, 0.0)


@contextmanager
def frozen_update(layers: Sequence[Layer], frozen: MaskFn, zeroed: Optional[MaskFn] = None):
    """Wrap ``optimizer.step()`` so that frozen weights come out bit-identical.

    Masking the gradient alone is not enough: weight decay and momentum
    (or Adam's moments) still move a weight whose gradient is zero. The
    weights are therefore remembered on entry and the frozen positions are
    written back on exit; the zeroed positions (released weights that must
    stay pruned while the kept ones are fine-tuned) are set to 0.
    """
    layers = list(layers)
    mask_frozen_grads(layers, frozen, zeroed)
    saved = [(m, mask, m.weight.detach().clone()) for m, mask in _masks(layers, frozen)]
    yield
    with torch.no_grad():
        for m, mask, before in saved:
            m.weight.copy_(torch.where(mask, before, m.weight))
        for m, mask in _masks(layers, zeroed):
            m.weight.masked_fill_(mask, 0.0)


def masked_weights(layers: Iterable[Layer], keep: MaskFn) -> dict[str, Tensor]:
    """``{"<layer>.weight": weight * keep}`` for every layer whose ``keep`` is not None."""
    out = {}
    for name, m in layers:
        mask = keep(name, m)
        if mask is not None:
            out[f"{name}.weight" if name else "weight"] = m.weight * mask.to(m.weight.dtype)
    return out


def functional_forward(model: nn.Module, substitutions: dict[str, Tensor], *args, **kwargs):
    """``model(*args, **kwargs)`` with ``substitutions`` standing in for its parameters/buffers.

    Names are those of ``model.state_dict()``. Unknown names raise a
    ValueError (a silently ignored substitution would evaluate the wrong
    network). The model's own tensors are untouched, including BatchNorm
    running statistics (a substituted buffer absorbs any in-place update).
    """
    known = set(dict(model.named_parameters())) | set(dict(model.named_buffers()))
    unknown = sorted(set(substitutions) - known)
    if unknown:
        raise ValueError(f"functional_forward: {unknown[:5]} are not parameters or buffers of "
                         f"{model.__class__.__name__}; use names from model.state_dict()")
    return functional_call(model, substitutions, args, kwargs, strict=False)


@contextmanager
def eval_mode(model: nn.Module):
    """``model.eval()`` for the block; every submodule's own flag is restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
