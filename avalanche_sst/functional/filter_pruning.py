"""Activation-based filter pruning (Zhao, Chen & Zhao, "Enabling Deep Learning on
Edge Devices through Filter Pruning and Knowledge Transfer", sec. 3, eq. 1-2).

One batch of M images goes through the trained teacher. For every conv i and
image m, eq. 2 gives each filter's zero fraction ``1 - ||a_ij^m||_0 / (h w)``
of its post-ReLU map (eq. 1: ``A = G(F(X))``); a filter is prunable on that
image when the fraction is >= P. ``avgc_i`` is the count of prunable filters
averaged over the batch and the conv keeps ``n_i - avgc_i`` filters, those
with the lowest mean zero fraction.

Decisions where the paper is silent (../shared/METHOD.md): residual
additions force one width per group output, the largest the rule gives
among the summed tensors; depth is reduced to the last block of each group.
The "post-ReLU map" of a tensor is taken where a ReLU reads it: after the
conv's BatchNorm in a post-activation ResNet (for a block's output, after the
residual sum), at the consuming pre-activation BatchNorm in a Wide ResNet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from avalanche_sst.benchmarks import batched_fetch
from avalanche_sst.metrics.validation import validation_data
from avalanche_sst.models.introspection import capture_block_outputs
from avalanche_sst.models.resnet_cifar import LayerWidths, WideResNet
from avalanche_sst.models.student import residual_groups

__all__ = [
    "PrunePlan",
    "check_threshold",
    "kept_filters",
    "kept_width",
    "check_image_batch",
    "measure_zero_fractions",
    "prunable_counts",
    "prune_plan",
    "pruning_batch",
    "zero_fractions",
]


def check_threshold(threshold: float) -> float:
    """P must lie in (0, 1]: a zero fraction >= 0 would make every filter prunable."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(
            f"the filter pruning threshold P must be a number in (0, 1] (the paper uses 0.7-1.0), "
            f"got threshold={threshold!r}"
        )
    return float(threshold)


def zero_fractions(activations: torch.Tensor) -> torch.Tensor:
    """Eq. 2 for every image and filter: [M, C, H, W] post-ReLU maps -> [M, C] zero fractions."""
    if activations.dim() != 4:
        raise ValueError(f"zero_fractions: expected activations of shape [M, C, H, W], got {tuple(activations.shape)}")
    return (activations == 0).float().mean(dim=(2, 3))


def prunable_counts(fractions: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per image, the number of filters whose zero fraction is >= P: [M, C] -> [M]."""
    return (fractions >= check_threshold(threshold)).sum(dim=1)


def kept_width(fractions: torch.Tensor, threshold: float) -> int:
    """``n - avgc``: the filter count minus the batch-averaged prunable count.

    Rounded half up (a half filter is kept), at least 1.
    """
    n = fractions.shape[1]
    avgc = prunable_counts(fractions, threshold).double().mean().item()
    return max(1, min(n, math.floor(n - avgc + 0.5)))


def kept_filters(fractions: torch.Tensor, width: int) -> list[int]:
    """The ``width`` filters with the lowest mean zero fraction over the batch, in index order."""
    order = torch.argsort(fractions.mean(dim=0), stable=True)
    return sorted(order[:width].tolist())


def _measurement_points(model: nn.Module) -> tuple[list[str], list[nn.Module]]:
    """Keys of the measured tensors and, for each, the module whose output a ReLU reads.

    Listed in execution order, each module once, so :func:`capture_block_outputs`
    returns the outputs in the same order.
    """
    groups = residual_groups(model, "filter pruning")
    keys, modules = ["stem"], []
    blocks = [(g, b, block) for g, group in enumerate(groups) for b, block in enumerate(group)]
    if isinstance(model, WideResNet):
        # Pre-activation: a tensor meets its ReLU at the next BatchNorm that reads it.
        consumers = [block.bn1 for _, _, block in blocks[1:]] + [model.bn]
        modules.append(blocks[0][2].bn1)
        for (g, b, block), consumer in zip(blocks, consumers):
            keys += [f"mid{g}.{b}", f"out{g}.{b}"]
            modules += [block.bn2, consumer]
    else:
        modules.append(model.bn1)
        for g, b, block in blocks:
            keys += [f"mid{g}.{b}", f"out{g}.{b}"]
            modules += [block.bn1, block]  # a block's output is already post-ReLU
    return keys, modules


@torch.no_grad()
def measure_zero_fractions(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eq. 1-2 on one batch: ``{tensor key: [M, C] zero fractions}`` in eval mode.

    Keys: ``stem``, ``mid{g}.{b}`` (block b of group g, first conv),
    ``out{g}.{b}`` (its output, the group's residual stream). The modes of
    all submodules are restored afterwards.
    """
    keys, modules = _measurement_points(model)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with capture_block_outputs(model, modules) as outputs:
            model(images)
            maps = list(outputs)
    finally:
        for m, mode in modes.items():
            m.training = mode
    if len(maps) != len(keys):
        raise RuntimeError(f"filter pruning: expected {len(keys)} hooked outputs, got {len(maps)}")
    return {k: zero_fractions(F.relu(a)) for k, a in zip(keys, maps)}


@dataclass
class PrunePlan:
    """The student's widths and which teacher filters each kept layer corresponds to."""

    threshold: float
    widths: LayerWidths
    kept: dict[str, list[int]] = field(default_factory=dict)  # stem, group{g}, mid{g}
    rule_widths: dict[str, int] = field(default_factory=dict)  # n - avgc of every measured tensor

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "widths": self.widths.to_dict(), "kept": dict(self.kept),
                "rule_widths": dict(self.rule_widths)}


def _stem_joins_group1(model: nn.Module) -> bool:
    first = model.layer1[0]
    return first.equal_in_out if isinstance(model, WideResNet) else isinstance(first.shortcut, nn.Identity)


#: |pixel| above this in a float batch means raw 0-255 values: normalised images
#: stay within a few units (Fashion-MNIST: -0.81..2.02, CIFAR: about -2..2.8).
RAW_PIXEL_BOUND = 20.0
#: M of sec. 3 when prune_plan is given a dataset or an experience.
DEFAULT_PRUNE_IMAGES = 128

_HOW = ("pass the experience or dataset itself, prune_plan(teacher, benchmark.train_stream[0]), which "
        "collates M images with the dataset's own collate_fn (normalisation, augmentation off), or a batch "
        "made by that collate_fn: DataLoader(ds, batch_size=128, collate_fn=ds.collate_fn)")


def check_image_batch(images: torch.Tensor) -> torch.Tensor:
    """A float ``[M, C, H, W]`` batch of normalised images, or a ValueError saying how to get one.

    A plain ``DataLoader(exp.dataset)`` skips the benchmark's collate_fn and
    yields uint8 pixels; ``.float()`` on those runs but plans other widths.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"prune_plan: images must be a float batch [M, C, H, W], a dataset or an "
                         f"experience, got {shape}; {_HOW}")
    if not images.is_floating_point():
        raise ValueError(f"prune_plan: images is a {images.dtype} batch of raw pixels, but the teacher "
                         f"was trained on normalised float images; {_HOW}")
    peak = float(images.detach().abs().max()) if images.numel() else 0.0
    if peak > RAW_PIXEL_BOUND:
        raise ValueError(f"prune_plan: images reach |x| = {peak:g}, raw 0-255 pixels cast to float "
                         f"(normalised images stay below {RAW_PIXEL_BOUND:g}); the zero fractions and "
                         f"widths would be those of other inputs than the teacher sees; {_HOW}")
    return images


def pruning_batch(data, num_images: int = DEFAULT_PRUNE_IMAGES, seed: int = 0) -> torch.Tensor:
    """The M images of sec. 3 from an experience or dataset, as the teacher sees them in evaluation.

    A seeded random choice of ``num_images`` items, collated by the dataset's
    own collate_fn (normalisation) with its batched augmentation off; the same
    batch :class:`~avalanche_sst.strategies.edge.EdgeStrategy` prunes with.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive int (M, the batch of sec. 3), got {num_images!r}")
    experience = data if hasattr(data, "current_experience") else SimpleNamespace(dataset=data)
    if not hasattr(experience.dataset, "eval"):  # a plain torch dataset: its own collate, if any
        chosen = experience.dataset
    else:
        chosen = validation_data(experience)
    if len(chosen) == 0:
        raise ValueError("prune_plan: the dataset is empty")
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(chosen), generator=generator)[:num_images].tolist()
    loader = DataLoader(Subset(batched_fetch.batched(chosen), picked), batch_size=len(picked),
                        collate_fn=getattr(chosen, "collate_fn", None))
    return next(iter(loader))[0]


def prune_plan(teacher: nn.Module, images, threshold: float = 1.0, num_images: int = DEFAULT_PRUNE_IMAGES,
               seed: int = 0) -> PrunePlan:
    """Sec. 3 on one batch: widths of the one-block-per-group student and the kept filters.

    ``images``: a normalised float batch ``[M, C, H, W]`` (checked by
    :func:`check_image_batch`), or an Avalanche experience or dataset, of
    which :func:`pruning_batch` takes ``num_images`` images (chosen with
    ``seed``) through the dataset's own collate_fn.
    A group's width is the largest rule width among the tensors summed into
    its residual stream (every block's output, and the stem's when the first
    block has an identity shortcut); its kept filters have the lowest zero
    fraction averaged over those tensors. Each group's mid width comes from
    its last block, the one the student keeps.
    """
    check_threshold(threshold)
    if not isinstance(images, torch.Tensor):
        images = pruning_batch(images, num_images, seed)
    images = check_image_batch(images)
    device = next(teacher.parameters()).device
    fractions = measure_zero_fractions(teacher, images.to(device))
    rule = {k: kept_width(f, threshold) for k, f in fractions.items()}
    groups = residual_groups(teacher, "filter pruning")
    kept: dict[str, list[int]] = {}
    group_widths, mids = [], []
    for g, group in enumerate(groups):
        summed = [f"out{g}.{b}" for b in range(len(group))]
        if g == 0 and _stem_joins_group1(teacher):
            summed.insert(0, "stem")
        width = max(rule[k] for k in summed)
        group_widths.append(width)
        kept[f"group{g + 1}"] = kept_filters(torch.cat([fractions[k] for k in summed]), width)
        last_mid = f"mid{g}.{len(group) - 1}"
        mids.append(rule[last_mid])
        kept[f"mid{g + 1}"] = kept_filters(fractions[last_mid], rule[last_mid])
    if _stem_joins_group1(teacher):
        stem = group_widths[0]
        kept["stem"] = kept["group1"]
    else:
        stem = rule["stem"]
        kept["stem"] = kept_filters(fractions["stem"], stem)
    widths = LayerWidths(stem=stem, groups=tuple(group_widths), mids=tuple(mids))
    return PrunePlan(float(threshold), widths, kept, rule)
