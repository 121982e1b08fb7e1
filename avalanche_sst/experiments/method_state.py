"""Helpers for the state a sweep method keeps outside its model: finding a
plugin of a strategy, and turning Avalanche's ``ParamData`` dicts into plain
tensors for a ``weights_only`` checkpoint and back."""

from __future__ import annotations

from avalanche.training.utils import ParamData


def plugin_of(strategy, kind, required: bool = True):
    """The strategy's first plugin of type ``kind`` (``None`` if absent and not ``required``)."""
    found = next((p for p in strategy.plugins if isinstance(p, kind)), None)
    if found is None and required:
        raise LookupError(f"the strategy has no {kind.__name__} among its plugins")
    return found


def params_to_tensors(params: dict) -> dict:
    """``{name: ParamData}`` -> ``{name: tensor}`` (detached CPU copies)."""
    return {k: p.data.detach().cpu().clone() for k, p in (params or {}).items()}


def tensors_to_params(tensors: dict, device) -> dict:
    """``{name: tensor}`` -> ``{name: ParamData}`` on ``device``, as Avalanche's plugins hold them.

    ``device`` has no default: checkpoints load on the CPU, and a plugin whose state
    lives on the model's device (EWC) mixes devices on a GPU if it is restored there.
    """
    return {k: ParamData(k, t.shape, init_tensor=t.to(device), device=device) for k, t in tensors.items()}
