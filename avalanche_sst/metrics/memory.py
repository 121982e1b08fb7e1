"""Memory beyond the model: the bytes a method keeps besides the network it evaluates.

Measured after each training step, in bytes of the tensors as they are held:

* every tensor of the method's saved state (``Method.state_dict``: what a run
  needs besides ``strategy.model`` to continue): LwF's and iCaRL's previous
  model, EWC's saved parameters and Fisher importances per experience, RWalk's
  scores, SI's snapshots, M2KD's snapshot masks with their saved BatchNorm and
  heads, iCaRL's exemplars and class means, the SST framework's prepared
  model, HPO's/DML's/LwM's kept models;
* exemplars Avalanche keeps as a dataset (Replay's buffer, Cumulative's data
  so far): the number of samples times one input's bytes as the dataset
  yields it (uint8 images for this package's tensor datasets), plus an int64
  label each;
* per-task state stored inside the model: PackNet's task indices and masks
  (the buffers of Avalanche's ``PackNetModule``), Ada-QPacknet's task slots
  (masks, codes, codebooks, per-task fp32 tensors) and per-weight used-bit
  budget, M2KD's per-weight owner ids when it prunes (its Table 2 count,
  :func:`~avalanche_sst.plugins.m2kd.m2kd_memory_bytes`).

The live network the method trains and evaluates is the model, not memory
beyond it (Ada-QPacknet's zeroed fp32 weights included).

A tensor reachable twice (a view, or the same storage in two places) counts
once. Python scalars and lists (step counters, class lists) are not counted.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import nn

__all__ = ["tensor_bytes", "dataset_bytes", "model_state_bytes", "memory_beyond_model"]

LABEL_BYTES = 8  # one int64 target per kept sample


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, nn.Module):
        yield from obj.state_dict(keep_vars=True).values()
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            yield from _tensors(value)


def tensor_bytes(obj: Any, seen: Optional[set] = None) -> int:
    """Bytes of every distinct tensor in ``obj`` (nested dicts/lists/tuples, modules' state).

    Tensors sharing storage count once: each storage's bytes, not each view's.
    ``seen`` (storage ids) is shared between calls to count across several objects.
    """
    seen = set() if seen is None else seen
    total = 0
    for t in _tensors(obj):
        storage = t.untyped_storage()
        key = (storage.data_ptr(), t.device.type) if storage.data_ptr() else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += storage.nbytes() if storage.data_ptr() else t.numel() * t.element_size()
    return total


def dataset_bytes(dataset) -> int:
    """``len(dataset)`` samples of one input's bytes plus an int64 label each (0 when empty or None)."""
    if dataset is None or len(dataset) == 0:
        return 0
    x = dataset[0][0]
    per_sample = (x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0) + LABEL_BYTES
    return len(dataset) * per_sample


def model_state_bytes(model: nn.Module, owner_ids: bool = False, seen: Optional[set] = None) -> int:
    """Bytes of per-task state kept inside ``model``: PackNet's buffers, Ada-QPacknet's task slots and
    used-bit budget, and (``owner_ids``: M2KD with pruning) the uint8 owner id of every weight."""
    from avalanche.models.packnet import PackNetModule

    from avalanche_sst.functional.ownership import OWNER_BUFFER
    from avalanche_sst.models.quantized_multitask import USED_BITS, _TaskSlot

    names = {USED_BITS, OWNER_BUFFER} if owner_ids else {USED_BITS}
    seen = set() if seen is None else seen
    total = 0
    for module in model.modules():
        if isinstance(module, _TaskSlot):
            total += tensor_bytes(list(module.buffers()), seen)
        elif isinstance(module, PackNetModule):
            total += tensor_bytes(list(module.buffers(recurse=False)), seen)
        total += tensor_bytes([b for n, b in module.named_buffers(recurse=False) if n in names], seen)
    return total


def _kept_datasets(strategy) -> list:
    from avalanche.training import Cumulative
    from avalanche.training.plugins import ReplayPlugin

    kept = [p.storage_policy.buffer for p in getattr(strategy, "plugins", []) if isinstance(p, ReplayPlugin)]
    if isinstance(strategy, Cumulative):
        kept.append(strategy.dataset)
    return kept


def memory_beyond_model(method, strategy) -> int:
    """What ``method``'s ``strategy`` keeps besides its evaluated network, in bytes (see the module)."""
    seen: set = set()
    # the evaluated network's own tensors are not memory beyond it, even where a saved state aliases them
    tensor_bytes(list(strategy.model.state_dict(keep_vars=True).values()), seen)
    m2kd = getattr(strategy, "m2kd", None)  # its owner ids are what lets one model hold every snapshot
    pruning = m2kd is not None and getattr(m2kd, "prune_ratio", 0) > 0
    total = model_state_bytes(strategy.model, owner_ids=pruning)  # inside the model, so not left out by ``seen``
    state = method.state_dict(strategy) if method.state_dict is not None else {}
    total += tensor_bytes(state, seen)
    total += sum(dataset_bytes(d) for d in _kept_datasets(strategy))
    return total
