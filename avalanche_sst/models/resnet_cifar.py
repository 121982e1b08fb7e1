"""CIFAR-style residual networks.

* ``resnet_cifar``: the 6n+2-layer CIFAR ResNet of He, Zhang, Ren & Sun,
  "Deep Residual Learning for Image Recognition", CVPR 2016 (Sec. 4.2),
  with projection shortcuts (option B: 1x1 conv + BatchNorm) wherever the
  shape changes, so shortcut BatchNorms are filter scaling factors too.
* ``wide_resnet``: the pre-activation Wide ResNet WRN-d-k of Zagoruyko &
  Komodakis, "Wide Residual Networks", BMVC 2016.

Both work on any input resolution (global average pooling), e.g. 28x28
grayscale Fashion-MNIST with ``in_channels=1`` or 32x32 CIFAR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "WideBasicBlock",
    "WideResNet",
    "resnet_cifar",
    "wide_resnet",
]


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

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
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
        self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(
                f"resnet_cifar: depth must be 6n+2 with n >= 1 "
                f"(e.g. 8, 14, 20, 32, 44, 56, 110), got depth={depth!r}"
            )
        if width < 1:
            raise ValueError(f"resnet_cifar: width must be >= 1, got width={width!r}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_stage(width, width, n, stride=1)
        self.layer2 = self._make_stage(width, 2 * width, n, stride=2)
        self.layer3 = self._make_stage(2 * width, 4 * width, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        _init_weights(self)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
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

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
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
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 100,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"wide_resnet: depth must be 6n+4 with n >= 1 "
                f"(e.g. 10, 16, 22, 28, 40), got depth={depth!r}"
            )
        if widen_factor < 1:
            raise ValueError(f"wide_resnet: widen_factor must be >= 1, got {widen_factor!r}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth = depth
        self.widen_factor = widen_factor
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_group(widths[0], widths[1], n, 1, dropout)
        self.layer2 = self._make_group(widths[1], widths[2], n, 2, dropout)
        self.layer3 = self._make_group(widths[2], widths[3], n, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        _init_weights(self)

    @staticmethod
    def _make_group(
        in_planes: int, planes: int, n: int, stride: int, dropout: float
    ) -> nn.Sequential:
        blocks = [WideBasicBlock(in_planes, planes, stride, dropout)]
        blocks += [WideBasicBlock(planes, planes, 1, dropout) for _ in range(n - 1)]
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
    depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16
) -> CifarResNet:
    """CIFAR ResNet-``depth`` (6n+2: ResNet-8/20/32/110) with stage widths w, 2w, 4w."""
    return CifarResNet(depth=depth, num_classes=num_classes, in_channels=in_channels, width=width)


def wide_resnet(
    depth: int = 28,
    widen_factor: int = 10,
    num_classes: int = 100,
    in_channels: int = 3,
    dropout: float = 0.0,
) -> WideResNet:
    """Wide ResNet WRN-``depth``-``widen_factor`` (default WRN-28-10)."""
    return WideResNet(
        depth=depth,
        widen_factor=widen_factor,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
    )
