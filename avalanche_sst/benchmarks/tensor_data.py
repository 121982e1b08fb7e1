"""Image datasets held as uint8 tensors, and batched augmentation.

The fast data path: samples stay uint8 ``[C, H, W]`` tensors (no per-sample
PIL round trip); the collate function stacks a batch and then applies the
augmentation (random crop with zero padding, horizontal flip) and the
normalisation as a few tensor operations on the whole batch. The per-sample
torchvision pipeline (``ToTensor`` + ``RandomCrop`` + ``RandomHorizontalFlip``
+ ``Normalize``) is kept as the reference path; both feed identical images
when augmentation is off, and the same augmentation distribution when it is
on (tests check both).

A mini-batch is read with one indexed gather of the uint8 tensor
(:meth:`TensorImageDataset.gather`, torch's ``__getitems__``; through
Avalanche's wrappers: :mod:`avalanche_sst.benchmarks.batched_fetch`) into a
:class:`GatheredBatch`, which :class:`BatchCollate` augments as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """A classification dataset of uint8 images ``[N, C, H, W]``."""

    def __init__(self, images: torch.Tensor, targets, classes: Optional[Sequence[str]] = None):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape [N, C, H, W]")
        targets = torch.as_tensor(targets, dtype=torch.long).flatten()
        if len(targets) != len(images):
            raise ValueError(f"images has {len(images)} samples but targets has {len(targets)}")
        self.images = images
        self.targets: list[int] = targets.tolist()
        n_classes = (max(self.targets) + 1) if self.targets else 0
        self.classes = list(classes) if classes is not None else [str(c) for c in range(n_classes)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]

    def __getitems__(self, indices) -> "GatheredBatch":
        """torch's batched fetch: a DataLoader straight over this dataset also reads a batch in one gather."""
        return self.gather(torch.as_tensor(indices, dtype=torch.long))

    def gather(self, indices: torch.Tensor) -> "GatheredBatch":
        """``[self[i] for i in indices]`` as one batch: one indexed read of the image tensor."""
        return GatheredBatch(self.images.index_select(0, indices), [self.target_tensor.index_select(0, indices)])

    @property
    def target_tensor(self) -> torch.Tensor:
        if getattr(self, "_target_tensor", None) is None or len(self._target_tensor) != len(self.targets):
            self._target_tensor = torch.as_tensor(self.targets, dtype=torch.long)
        return self._target_tensor


@dataclass
class GatheredBatch:
    """A mini-batch fetched in one piece: uint8 images ``[N, C, H, W]`` and the
    other fields of the samples as long tensors (target, then e.g. task label).

    :class:`BatchCollate` takes it as it is; any other collate function sees a
    sequence of ``(image, int, ...)`` samples, as a per-sample fetch gives.
    """

    images: torch.Tensor
    columns: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return (self.images[i], *(int(c[i]) for c in self.columns))

    def __iter__(self):
        rows = zip(*(c.tolist() for c in self.columns)) if self.columns else ((),) * len(self)
        return ((image, *row) for image, row in zip(self.images, rows))


def random_crop_flip(
    images: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip of a batch.

    Same distribution as torchvision's ``RandomCrop(size, padding)`` followed
    by ``RandomHorizontalFlip(0.5)`` applied sample by sample: each offset is
    uniform in ``[0, 2 * padding]`` on both axes, each flip has probability
    0.5. Works on any dtype and on the batch's device.
    """
    n, c, h, w = images.shape
    if padding <= 0 and not flip:
        return images
    device = images.device
    gen_device = generator.device if generator is not None else device
    # The draws (dy, dx, then flips) are made in this order, as before, so a
    # seeded generator gives the same crops.
    if padding > 0:
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gen_device).to(device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gen_device).to(device)
    flips = (torch.rand(n, generator=generator, device=gen_device) < 0.5).to(device) if flip else None
    if padding <= 0:
        return torch.where(flips[:, None, None, None], images.flip(-1), images)
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    # One gather over the flattened padded planes: output pixel (i, j) of
    # sample k reads padded pixel (dy_k + i, dx_k + j), or (dy_k + i,
    # dx_k + w - 1 - j) when sample k is flipped (crop, then flip).
    cols = dx[:, None] + torch.arange(w, device=device)[None, :]  # [n, w]
    if flip:
        cols = torch.where(flips[:, None], cols.flip(-1), cols)
    rows = dy[:, None] + torch.arange(h, device=device)[None, :]  # [n, h]
    index = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(n, 1, h * w)
    return padded.reshape(n, c, -1).gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def to_normalized_float(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float, scaled to [0, 1] then normalised per channel."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255.0) - mean_t).div_(std_t)


@dataclass
class BatchCollate:
    """Collate for datasets of ``(uint8 image, target[, task label])`` items.

    Stacks the batch, applies :func:`random_crop_flip` when ``augment`` is set,
    and normalises. Picklable, so it works with DataLoader workers.
    """

    mean: Sequence[float]
    std: Sequence[float]
    augment: bool = False
    padding: int = 4
    flip: bool = True

    def __call__(self, items):
        if isinstance(items, GatheredBatch):  # fetched in one gather (batched_fetch)
            images, labels = items.images, items.columns
        else:
            columns = list(zip(*items))
            images = torch.stack(columns[0])
            labels = [torch.as_tensor(col, dtype=torch.long) for col in columns[1:]]
        if self.augment:
            images = random_crop_flip(images, self.padding, self.flip)
        return [to_normalized_float(images, self.mean, self.std), *labels]


def per_sample_transforms(mean, std, augment: bool, image_size: int, padding: int = 4, flip: bool = True):
    """The reference per-sample torchvision pipeline for uint8 tensors."""
    from torchvision.transforms import v2

    steps = [v2.ToImage()]
    if augment:
        steps.append(v2.RandomCrop(image_size, padding=padding))
        if flip:
            steps.append(v2.RandomHorizontalFlip(0.5))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def color_jitter(
    images: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Per-sample colour jitter of a float batch in [0, 1], as batched tensor ops.

    Each sample gets its own factors, uniform in ``[1 - s, 1 + s]`` (as
    torchvision's ``ColorJitter`` draws them per call): brightness scales the
    pixels, contrast blends with the sample's mean grey level, saturation with
    its greyscale image (colour images only). torchvision's functional ops
    take one factor per call, hence this batched version.
    """
    n = images.shape[0]
    device = images.device
    gen_device = generator.device if generator is not None else device

    def factors(strength):
        u = torch.rand(n, generator=generator, device=gen_device).to(device)
        return (1 - strength + 2 * strength * u).view(n, 1, 1, 1)

    def grey(x):
        if x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114], device=device, dtype=x.dtype).view(1, 3, 1, 1)
            return (x * w).sum(dim=1, keepdim=True)
        return x.mean(dim=1, keepdim=True)

    x = images
    if brightness > 0:
        x = (x * factors(brightness)).clamp_(0, 1)
    if contrast > 0:
        mean = grey(x).mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * factors(contrast) + mean).clamp_(0, 1)
    if saturation > 0 and x.shape[1] == 3:
        g = grey(x)
        x = ((x - g) * factors(saturation) + g).clamp_(0, 1)
    return x
