"""Top-1 accuracy of a model on a dataset, for model selection inside a step.

AOD picks the better student and MSL decides teacher updates on the current
part's validation slice; those choices are not Avalanche metrics (they never
reach the test set), so they use this small loop with the dataset's own
collate function (the fast batched path where the benchmark provides it).
"""

from __future__ import annotations

import dataclasses

import torch
from avalanche_sst.benchmarks import batched_fetch
from avalanche_sst.benchmarks.tensor_data import BatchCollate


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset, device: torch.device | str = "cpu", batch_size: int = 1000) -> float:
    """Fraction of correct top-1 predictions; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    data = dataset.eval() if hasattr(dataset, "eval") else dataset
    loader = batched_fetch.batched_loader(data, batch_size)
    correct = None  # counted on the model's device: one host sync at the end, not one per batch
    total = 0
    try:
        for batch in loader:
            x, y = batch[0].to(device), batch[1].to(device)
            hits = (model(x).argmax(dim=1) == y).sum()
            correct = hits if correct is None else correct + hits
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("the validation dataset is empty; use a validation_fraction > 0")
    return int(correct) / total


class _NoAugment(torch.utils.data.Dataset):
    """``base`` with a batched-augmentation collate switched off."""

    def __init__(self, base, collate_fn):
        self.base = base
        self.collate_fn = collate_fn

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]

    def __getitems__(self, indices):
        fetch = getattr(batched_fetch.batched(self.base), "__getitems__", None)
        return fetch(indices) if fetch is not None else [self.base[i] for i in indices]


def validation_slice(experience, valid_stream=None, given=None):
    """The experience's held-out slice: ``valid_stream[k].dataset``, else ``given``, else None."""
    if valid_stream is not None:
        return valid_stream[experience.current_experience].dataset
    return given


def validation_data(experience, valid_stream=None, given=None):
    """The data a step's model selection is made on.

    The validation slice (:func:`validation_slice`) when there is one;
    otherwise the experience's own training data, with the batched
    augmentation switched off.
    """
    held_out = validation_slice(experience, valid_stream, given)
    if held_out is not None:
        return held_out
    data = experience.dataset.eval()
    collate = getattr(data, "collate_fn", None)
    if isinstance(collate, BatchCollate) and collate.augment:
        return _NoAugment(data, dataclasses.replace(collate, augment=False))
    return data
