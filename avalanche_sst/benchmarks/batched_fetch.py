"""One indexed gather per mini-batch through Avalanche's dataset wrappers.

A DataLoader fetches a batch with ``dataset.__getitems__(indices)`` when the
dataset has it (torch's batched-fetch protocol), else with one
``dataset[i]`` per sample. Avalanche's loaders wrap the experience's
datasets in a ``torch.utils.data.ConcatDataset``, which has no
``__getitems__``, and every ``AvalancheDataset[i]`` walks its tree of
``FlatData`` in Python: on a small model that per-sample chain costs as
much as the model itself. :class:`BatchedConcatDataset` adds
``__getitems__``: it maps the batch's indices through the tree with array
operations down to the leaf datasets, and asks each leaf for its samples
with one ``gather`` (our uint8 datasets index their image tensor once).
The result is a :class:`~avalanche_sst.benchmarks.tensor_data.GatheredBatch`
that :class:`~avalanche_sst.benchmarks.tensor_data.BatchCollate` turns into
the same mini-batch the per-sample path gives (same samples, same order,
same augmentation draws).

Anything the batched walk cannot reproduce exactly (a transform group that
is not empty, a leaf without ``gather``, an attribute it cannot read) falls
back to torch's per-sample fetch, so other datasets behave as before.
:func:`enable_batched_fetch` makes Avalanche's loaders build this
ConcatDataset; ``avalanche_sst.benchmarks`` calls it on import.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset

from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.benchmarks.utils.ffcv_support.ffcv_components import has_ffcv_support as _avalanche_has_ffcv_support
from avalanche.benchmarks.utils.flat_data import ConstantSequence, FlatData, LazyIndices, LazyRange

from .tensor_data import GatheredBatch

_CACHE = "_sst_batched_cache"


def _cached(owner, key_object, build):
    """``build()``, cached on ``owner`` for as long as ``owner`` still holds ``key_object``.

    Avalanche's shallow clones copy ``__dict__`` (the cache with it) but may
    replace the field the cache was built from: the identity check catches that.
    """
    cached = owner.__dict__.get(_CACHE)
    if cached is not None and cached[0] is key_object:
        return cached[1]
    value = build()
    owner.__dict__[_CACHE] = (key_object, value)
    return value


def _index_array(indices) -> Optional[np.ndarray]:
    """FlatData's subset indices as an int64 array (what ``indices[i]`` returns, for every i)."""
    if isinstance(indices, LazyRange):
        # LazyRange[i] is start + offset + i (and asserts i >= start): exact only from 0.
        return np.arange(len(indices), dtype=np.int64) + indices._offset if indices._start == 0 else None
    if isinstance(indices, LazyIndices):
        indices._to_eager()
        return np.asarray(indices._eager_list, dtype=np.int64)
    return np.asarray(indices, dtype=np.int64)


def _identity_transforms(flat, group: str) -> bool:
    for name in ("_frozen_transform_groups", "_transform_groups"):
        groups = getattr(flat, name, None)
        if groups is not None and groups.transform_groups.get(group) is not None:
            return False
    return True


def _can_gather(dataset) -> bool:
    return callable(getattr(dataset, "gather", None))


def _leaf_requests(flat: FlatData, idx: np.ndarray, group: str, out: list, is_leaf=_can_gather) -> bool:
    """Append ``(leaf dataset, leaf indices, batch positions)`` for ``flat[idx]``; False if not batchable.

    ``idx`` stacks the batch positions on the indices (``out`` rows keep
    them) so the samples of several leaves go back in the order the sampler
    drew them. A leaf must pass ``is_leaf``.
    """
    if not _identity_transforms(flat, group):
        return False
    positions, local = idx[0], idx[1]
    if flat._indices is not None:
        index_array = _cached(flat, flat._indices, lambda: _index_array(flat._indices))
        if index_array is None:
            return False
        local = index_array[local]
    datasets = flat._datasets
    if len(datasets) == 1:
        parts = [(0, positions, local)]
    else:
        which = np.searchsorted(np.asarray(flat._cumulative_sizes), local, side="right")
        starts = np.concatenate([[0], flat._cumulative_sizes[:-1]])
        parts = [(int(d), positions[which == d], local[which == d] - starts[d]) for d in np.unique(which)]
    for d, pos, loc in parts:
        dataset = datasets[d]
        if isinstance(dataset, FlatData):
            if not _leaf_requests(dataset, np.stack([pos, loc]), group, out, is_leaf):
                return False
        elif is_leaf(dataset):
            out.append((dataset, loc, pos))
        else:
            return False
    return True


def _attribute_values(attribute, idx: np.ndarray) -> Optional[torch.Tensor]:
    """``[attribute[i] for i in idx]`` as a long tensor.

    Task labels are constant sequences (concatenated and subsampled): read
    from the tree at once. Other attributes: the whole column, built once per
    attribute object (Avalanche makes new ones per experience).
    """
    data = attribute.data
    if isinstance(data, ConstantSequence):
        return torch.full((len(idx),), int(data._constant_value), dtype=torch.long)
    requests: list = []
    if isinstance(data, FlatData) and _leaf_requests(
            data, np.stack([np.arange(len(idx)), idx]), "", requests, lambda d: isinstance(d, ConstantSequence)):
        values = torch.empty(len(idx), dtype=torch.long)
        for leaf, _, positions in requests:
            values[torch.from_numpy(positions)] = int(leaf._constant_value)
        return values
    column = _attribute_column(attribute)
    return None if column is None else column[torch.from_numpy(idx)]


def _attribute_column(attribute) -> Optional[torch.Tensor]:
    """An Avalanche data attribute's values as one long tensor (built once per attribute)."""

    def build():
        try:
            return torch.as_tensor(list(attribute.data), dtype=torch.long)
        except (TypeError, ValueError):
            return None

    return _cached(attribute, attribute.data, build)


def gather_avalanche(dataset: AvalancheDataset, indices) -> Optional[GatheredBatch]:
    """``[dataset[i] for i in indices]`` as one :class:`GatheredBatch`, or None where that is not exact."""
    flat = dataset._flat_data
    group = flat._transform_groups.current_group if hasattr(flat, "_transform_groups") else "train"
    idx = np.asarray(indices, dtype=np.int64)
    requests: list = []
    if not _leaf_requests(flat, np.stack([np.arange(len(idx)), idx]), group, requests):
        return None
    gathered = []
    for leaf, local, positions in requests:
        batch = leaf.gather(torch.from_numpy(local))
        if batch is None:
            return None
        gathered.append((batch, torch.from_numpy(positions)))
    batch = _assemble(gathered, len(idx))
    if batch is None:
        return None
    for attribute in dataset._data_attributes.values():
        if attribute.use_in_getitem:
            values = _attribute_values(attribute, idx)
            if values is None:
                return None
            batch.columns.append(values)
    return batch


def _assemble(parts: list, n: int) -> Optional[GatheredBatch]:
    """Put the leaves' samples back at their batch positions."""
    if len(parts) == 1:  # one part holds every position, in order
        return parts[0][0]
    first = parts[0][0]
    if any(len(b.columns) != len(first.columns) or b.images.shape[1:] != first.images.shape[1:] for b, _ in parts):
        return None
    images = first.images.new_empty((n, *first.images.shape[1:]))
    columns = [c.new_empty(n) for c in first.columns]
    for batch, positions in parts:
        images[positions] = batch.images
        for column, values in zip(columns, batch.columns):
            column[positions] = values
    return GatheredBatch(images, columns)


class BatchedConcatDataset(ConcatDataset):
    """``torch.utils.data.ConcatDataset`` with a batched ``__getitems__`` (see the module docstring)."""

    def __getitems__(self, indices: list):
        if len(self.datasets) == 1 and isinstance(self.datasets[0], AvalancheDataset):
            return gather_avalanche(self.datasets[0], indices) or [self[i] for i in indices]
        offsets = np.asarray([0, *self.cumulative_sizes])
        idx = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(offsets[1:], idx, side="right")
        parts = []
        for d in np.unique(which):
            dataset = self.datasets[d]
            mask = which == d
            batch = gather_avalanche(dataset, idx[mask] - offsets[d]) if isinstance(dataset, AvalancheDataset) else None
            if batch is None:
                return [self[i] for i in indices]
            parts.append((batch, torch.from_numpy(np.nonzero(mask)[0])))
        return _assemble(parts, len(idx)) or [self[i] for i in indices]


def batched(dataset):
    """``dataset`` with a batched ``__getitems__``: an ``AvalancheDataset`` is wrapped in a
    one-dataset :class:`BatchedConcatDataset` (same items, same length); anything else is returned as is."""
    return BatchedConcatDataset([dataset]) if isinstance(dataset, AvalancheDataset) else dataset


def batched_loader(dataset, batch_size: int, shuffle: bool = False, **kwargs) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` with its own ``collate_fn`` that fetches each mini-batch in one gather.

    The sampler sees a dataset of the same length, so under a seed it draws the
    same indices (and the collate the same augmentation) as
    ``DataLoader(dataset, batch_size, shuffle, collate_fn=dataset.collate_fn)``.
    """
    return DataLoader(batched(dataset), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=getattr(dataset, "collate_fn", None), **kwargs)


def _leaves(dataset, out: list) -> bool:
    """Collect the leaf datasets under Avalanche wrappers; False at a wrapper this walk does not know."""
    if isinstance(dataset, AvalancheDataset):
        return _leaves(dataset._flat_data, out)
    if isinstance(dataset, FlatData):
        return all(_leaves(d, out) for d in dataset._datasets)
    if isinstance(dataset, (ConcatDataset, Subset)):
        return False
    out.append(dataset)
    return True


def has_ffcv_support(datasets) -> bool:
    """Avalanche's ``has_ffcv_support``, without its walk over every sample when no leaf has FFCV info.

    Avalanche's check (run at the start of every epoch) visits every sample
    to find the single leaf dataset, then asks whether it has ``ffcv_info``:
    on Fashion-MNIST that is about 1 ms per training iteration of 128. The
    answer is False whenever no leaf dataset has ``ffcv_info``, which the
    list of leaves tells at once; otherwise Avalanche's own check decides.
    """
    leaves: list = []
    if all(_leaves(d, leaves) for d in datasets) and not any(hasattr(leaf, "ffcv_info") for leaf in leaves):
        return False
    return _avalanche_has_ffcv_support(datasets)


def enable_batched_fetch() -> None:
    """Make Avalanche's data loaders fetch a mini-batch in one gather, and skip a needless per-epoch scan.

    Avalanche builds the training and evaluation loaders of every strategy
    (``TaskBalancedDataLoader``, ``ReplayDataLoader``, ``SingleDatasetDataLoader``)
    with ``ConcatDataset(datasets)`` from its ``data_loader`` module, and
    calls that module's ``has_ffcv_support`` once per epoch: these two names
    are replaced by :class:`BatchedConcatDataset` and :func:`has_ffcv_support`,
    which give the same results. Idempotent.
    """
    from avalanche.benchmarks.utils import data_loader

    data_loader.ConcatDataset = BatchedConcatDataset
    data_loader.has_ffcv_support = has_ffcv_support
