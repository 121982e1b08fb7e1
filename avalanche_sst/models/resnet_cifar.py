"""CIFAR-style residual networks.

* ``resnet_cifar``: the 6n+2-layer CIFAR ResNet of He, Zhang, Ren & Sun,
  "Deep Residual Learning for Image Recognition", CVPR 2016 (Sec. 4.2),
  with projection shortcuts (option B: 1x1 conv + BatchNorm) wherever the
  shape changes, so shortcut BatchNorms are filter scaling factors too.
* ``wide_resnet``: the pre-activation Wide ResNet WRN-d-k of Zagoruyko &
  Komodakis, "Wide Residual Networks", BMVC 2016.

Both work on any input resolution (global average pooling), e.g. 28x28
grayscale Fashion-MNIST with ``in_channels=1`` or 32x32 CIFAR.

Both also take per-layer widths (:class:`LayerWidths`) and a blocks-per-group
count, for the pruned students of Zhao, Chen & Zhao ("Enabling Deep Learning
on Edge Devices through Filter Pruning and Knowledge Transfer", sec. 3).
Without them a network is built exactly as before: same modules, same
parameter order, same draws from the initialisation RNG.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "LayerWidths",
    "WideBasicBlock",
    "WideResNet",
    "resnet_cifar",
    "wide_resnet",
]


@dataclass(frozen=True)
class LayerWidths:
    """Output channels of every conv of a 3-group residual network.

    ``stem``: the first conv; ``groups``: the residual stream of each group
    (every block's last conv and its shortcut write into it, so one width per
    group); ``mids``: each block's first conv, in forward order (one entry
    per block, ``3 * blocks_per_group`` in all).
    """

    stem: int
    groups: tuple[int, int, int]
    mids: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(int(w) for w in self.groups))
        object.__setattr__(self, "mids", tuple(int(w) for w in self.mids))
        values = [int(self.stem), *self.groups, *self.mids]
        if len(self.groups) != 3 or not self.mids or len(self.mids) % 3 != 0:
            raise ValueError(
                f"LayerWidths: need 3 group widths and 3*n mid widths (one per block), "
                f"got groups={self.groups}, mids={self.mids}"
            )
        if min(values) < 1:
            raise ValueError(f"LayerWidths: every width must be >= 1, got {self}")

    @property
    def blocks_per_group(self) -> int:
        return len(self.mids) // 3

    def to_dict(self) -> dict:
        """Plain ints and lists (a ``weights_only=True`` checkpoint can hold it)."""
        d = asdict(self)
        return {"stem": int(d["stem"]), "groups": list(d["groups"]), "mids": list(d["mids"])}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerWidths":
        return cls(stem=int(d["stem"]), groups=tuple(d["groups"]), mids=tuple(d["mids"]))

    @classmethod
    def uniform(cls, stem: int, groups, blocks_per_group: int) -> "LayerWidths":
        """Every block's first conv as wide as its group (the unpruned networks)."""
        return cls(stem, tuple(groups), tuple(g for g in groups for _ in range(blocks_per_group)))


def _blocks_per_group(who: str, depth, blocks_per_group, widths, default_depth: int, offset: int, minimum: int):
    """n from ``depth`` (6n+offset), ``blocks_per_group`` or ``widths``; they must agree."""
    candidates = {}
    if depth is not None:
        if not isinstance(depth, int) or depth < minimum or (depth - offset) % 6 != 0:
            examples = "8, 14, 20, 32, 44, 56, 110" if offset == 2 else "10, 16, 22, 28, 40"
            raise ValueError(
                f"{who}: depth must be 6n+{offset} with n >= 1 (e.g. {examples}), got depth={depth!r}"
            )
        candidates["depth"] = (depth - offset) // 6
    if blocks_per_group is not None:
        if not isinstance(blocks_per_group, int) or blocks_per_group < 1:
            raise ValueError(f"{who}: blocks_per_group must be an int >= 1, got {blocks_per_group!r}")
        candidates["blocks_per_group"] = blocks_per_group
    if widths is not None:
        candidates["widths"] = widths.blocks_per_group
    if len(set(candidates.values())) > 1:
        raise ValueError(
            f"{who}: depth, blocks_per_group and len(widths.mids)//3 disagree on the blocks per group: "
            f"{candidates}; give only one of them"
        )
    return next(iter(candidates.values()), (default_depth - offset) // 6)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, mid_planes: Optional[int] = None
    ) -> None:
        super().__init__()
        mid = planes if mid_planes is None else mid_planes
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # Registered after bn2 so module order equals forward execution order.
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: stem, 3 stages of n BasicBlocks, GAP, Linear."""

    def __init__(
        self,
        depth: Optional[int] = None,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        *,
        widths: Optional[LayerWidths] = None,
        blocks_per_group: Optional[int] = None,
    ) -> None:
        super().__init__()
        n = _blocks_per_group("resnet_cifar", depth, blocks_per_group, widths, 20, 2, 8)
        if width < 1:
            raise ValueError(f"resnet_cifar: width must be >= 1, got width={width!r}")
        if widths is None:
            widths = LayerWidths.uniform(width, (width, 2 * width, 4 * width), n)
        self.depth = 6 * n + 2
        self.widths = widths
        g1, g2, g3 = widths.groups
        self.conv1 = nn.Conv2d(in_channels, widths.stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths.stem)
        self.layer1 = self._make_stage(widths.stem, g1, widths.mids[:n], stride=1)
        self.layer2 = self._make_stage(g1, g2, widths.mids[n : 2 * n], stride=2)
        self.layer3 = self._make_stage(g2, g3, widths.mids[2 * n :], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(g3, num_classes)
        _init_weights(self)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, mids, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride, mids[0])]
        blocks += [BasicBlock(planes, planes, 1, mid) for mid in mids[1:]]
        return nn.Sequential(*blocks)

    @property
    def blocks(self) -> list[nn.Module]:
        """The residual blocks in forward order."""
        return [*self.layer1, *self.layer2, *self.layer3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(self.avgpool(out), 1))


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus shortcut."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        dropout: float = 0.0,
        mid_planes: Optional[int] = None,
    ) -> None:
        super().__init__()
        mid = planes if mid_planes is None else mid_planes
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(mid, planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = stride == 1 and in_planes == planes
        self.shortcut: nn.Module = (
            nn.Identity()
            if self.equal_in_out
            else nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        # As in the reference implementation, a projection shortcut sees the
        # pre-activated input; an identity shortcut sees the raw input.
        sc = x if self.equal_in_out else self.shortcut(o)
        out = self.conv1(o)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + sc


class WideResNet(nn.Module):
    """WRN-d-k: stem conv, 3 groups of (d-4)/6 pre-activation blocks, BN-ReLU, GAP, Linear."""

    def __init__(
        self,
        depth: Optional[int] = None,
        widen_factor: int = 10,
        num_classes: int = 100,
        in_channels: int = 3,
        dropout: float = 0.0,
        *,
        widths: Optional[LayerWidths] = None,
        blocks_per_group: Optional[int] = None,
    ) -> None:
        super().__init__()
        n = _blocks_per_group("wide_resnet", depth, blocks_per_group, widths, 28, 4, 10)
        if widen_factor < 1:
            raise ValueError(f"wide_resnet: widen_factor must be >= 1, got {widen_factor!r}")
        if widths is None:
            k = widen_factor
            widths = LayerWidths.uniform(16, (16 * k, 32 * k, 64 * k), n)
        self.depth = 6 * n + 4
        self.widen_factor = widen_factor
        self.widths = widths
        self.dropout_p = dropout
        g1, g2, g3 = widths.groups
        self.conv1 = nn.Conv2d(in_channels, widths.stem, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_group(widths.stem, g1, widths.mids[:n], 1, dropout)
        self.layer2 = self._make_group(g1, g2, widths.mids[n : 2 * n], 2, dropout)
        self.layer3 = self._make_group(g2, g3, widths.mids[2 * n :], 2, dropout)
        self.bn = nn.BatchNorm2d(g3)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(g3, num_classes)
        _init_weights(self)

    @staticmethod
    def _make_group(in_planes: int, planes: int, mids, stride: int, dropout: float) -> nn.Sequential:
        blocks = [WideBasicBlock(in_planes, planes, stride, dropout, mids[0])]
        blocks += [WideBasicBlock(planes, planes, 1, dropout, mid) for mid in mids[1:]]
        return nn.Sequential(*blocks)

    @property
    def blocks(self) -> list[nn.Module]:
        """The residual blocks in forward order."""
        return [*self.layer1, *self.layer2, *self.layer3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def resnet_cifar(
    depth: Optional[int] = None,
    num_classes: int = 10,
    in_channels: int = 3,
    width: int = 16,
    *,
    widths: Optional[LayerWidths] = None,
    blocks_per_group: Optional[int] = None,
) -> CifarResNet:
    """CIFAR ResNet-``depth`` (6n+2: ResNet-8/20/32/110, default 20) with stage widths w, 2w, 4w.

    ``widths`` (a :class:`LayerWidths`) sets every conv's width instead of
    ``width``; ``blocks_per_group`` (n) may replace ``depth`` (6n+2).
    """
    return CifarResNet(depth=depth, num_classes=num_classes, in_channels=in_channels, width=width,
                       widths=widths, blocks_per_group=blocks_per_group)


def wide_resnet(
    depth: Optional[int] = None,
    widen_factor: int = 10,
    num_classes: int = 100,
    in_channels: int = 3,
    dropout: float = 0.0,
    *,
    widths: Optional[LayerWidths] = None,
    blocks_per_group: Optional[int] = None,
) -> WideResNet:
    """Wide ResNet WRN-``depth``-``widen_factor`` (default WRN-28-10).

    ``widths`` (a :class:`LayerWidths`) sets every conv's width instead of
    ``widen_factor``; ``blocks_per_group`` (n) may replace ``depth`` (6n+4).
    """
    return WideResNet(
        depth=depth,
        widen_factor=widen_factor,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        widths=widths,
        blocks_per_group=blocks_per_group,
    )
