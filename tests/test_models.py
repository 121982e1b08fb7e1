"""Tests for avalanche_sst.models: builders, scaling factors, blocks, hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual

from avalanche_sst.models import (
    CifarResNet,
    ScalingFactor,
    WideResNet,
    build_model,
    capture_block_outputs,
    classifier,
    feature_blocks,
    mobilenet_v2,
    require_blocks,
    require_scaling_factors,
    resnet34,
    resnet50,
    resnet101,
    resnet_cifar,
    scaling_factors,
    wide_resnet,
)

torch.set_num_threads(1)

INPUTS = [(1, 28), (3, 32)]


def _x(c: int, s: int) -> torch.Tensor:
    return torch.randn(2, c, s, s)


# ---------------------------------------------------------------- builders


@pytest.mark.parametrize("c,s", INPUTS)
@pytest.mark.parametrize(
    "builder",
    [
        lambda c: resnet_cifar(8, num_classes=7, in_channels=c),
        lambda c: resnet_cifar(20, num_classes=7, in_channels=c, width=4),
        lambda c: wide_resnet(10, 2, num_classes=7, in_channels=c),
        lambda c: mobilenet_v2(num_classes=7, in_channels=c, width_mult=0.25),
        lambda c: mobilenet_v2(num_classes=7, in_channels=c, width_mult=0.25, small_input=False),
        lambda c: resnet34(num_classes=7, in_channels=c),
        lambda c: resnet50(num_classes=7, in_channels=c),
    ],
    ids=["resnet8", "resnet20-w4", "wrn10-2", "mbv2", "mbv2-large", "resnet34", "resnet50"],
)
def test_output_shapes(builder, c: int, s: int) -> None:
    model = builder(c).eval()
    with torch.no_grad():
        out = model(_x(c, s))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("c,s", INPUTS)
def test_full_size_wrn28_10_and_resnet101_forward(c: int, s: int) -> None:
    for model in (wide_resnet(num_classes=5, in_channels=c), resnet101(5, in_channels=c)):
        with torch.no_grad():
            assert model.eval()(_x(c, s)[:1]).shape == (1, 5)


def test_resnet_cifar_structure() -> None:
    model = resnet_cifar(32, width=8)
    assert model.conv1.out_channels == 8
    assert [b.conv2.out_channels for b in model.blocks] == [8] * 5 + [16] * 5 + [32] * 5
    assert [b.conv1.stride[0] for b in model.blocks] == [1] * 5 + [2] + [1] * 4 + [2] + [1] * 4
    assert model.fc.in_features == 32
    # Option-B shortcuts: only the first block of stages 2 and 3 projects.
    projecting = [i for i, b in enumerate(model.blocks) if isinstance(b.shortcut, nn.Sequential)]
    assert projecting == [5, 10]


def test_wrn28_10_structure() -> None:
    model = wide_resnet()
    assert len(model.blocks) == 12
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [160, 320, 640]
    assert model.fc.out_features == 100


def test_mobilenet_stem() -> None:
    small = mobilenet_v2(in_channels=1, width_mult=0.25)
    large = mobilenet_v2(in_channels=1, width_mult=0.25, small_input=False)
    assert small.features[0][0].stride == (1, 1) and small.features[0][0].in_channels == 1
    assert large.features[0][0].stride == (2, 2)


@pytest.mark.parametrize("depth", [0, 7, 19, 21, 34])
def test_invalid_depth(depth: int) -> None:
    with pytest.raises(ValueError, match=r"depth.*6n\+2.*20"):
        resnet_cifar(depth)


def test_invalid_wrn_depth() -> None:
    with pytest.raises(ValueError, match="depth"):
        wide_resnet(27, 1)


# ---------------------------------------------------------------- build_model


@pytest.mark.parametrize(
    "name,cls,depth",
    [("resnet8", CifarResNet, 8), ("resnet20", CifarResNet, 20), ("ResNet32", CifarResNet, 32),
     ("resnet110", CifarResNet, 110)],
)
def test_build_model_cifar(name: str, cls: type, depth: int) -> None:
    model = build_model(name, num_classes=3, in_channels=1)
    assert isinstance(model, cls) and model.depth == depth
    assert model.conv1.in_channels == 1 and model.fc.out_features == 3
    assert len(model.blocks) == 3 * (depth - 2) // 6


def test_build_model_width_and_others() -> None:
    m = build_model("resnet20-w8", 10, 3)
    assert isinstance(m, CifarResNet) and m.depth == 20 and m.conv1.out_channels == 8
    wrn = build_model("wrn10-2", 4, 1)
    assert isinstance(wrn, WideResNet) and wrn.layer1[0].conv1.out_channels == 32
    mb = build_model("mobilenetv2", 4, 1)
    assert mb.features[0][0].in_channels == 1 and classifier(mb).out_features == 4
    r50 = build_model("resnet50", 4, 1)
    assert len(feature_blocks(r50)) == 16 and r50.conv1.in_channels == 1
    assert r50.fc.out_features == 4


def test_build_model_wrn28_10() -> None:
    m = build_model("wrn28-10", 100, 3)
    assert isinstance(m, WideResNet) and m.depth == 28 and m.widen_factor == 10


@pytest.mark.parametrize("name", ["vgg16", "resnet", "wrn28", "resnet21"])
def test_build_model_invalid(name: str) -> None:
    with pytest.raises(ValueError) as exc:
        build_model(name, 10, 3)
    if name != "resnet21":
        assert "resnet20" in str(exc.value) and "wrn28-10" in str(exc.value)
    else:
        assert "depth" in str(exc.value)


# ---------------------------------------------------------------- scaling factors


def _assert_pairs_consistent(factors: list[ScalingFactor], model: nn.Module) -> None:
    order = [n for n, _ in model.named_modules()]
    names = [f.name for f in factors]
    assert names == sorted(names, key=order.index)
    for f in factors:
        assert isinstance(f.bn, nn.BatchNorm2d) and isinstance(f.conv, nn.Conv2d)
        assert dict(model.named_modules())[f.name] is f.bn
        assert f.conv.out_channels == f.bn.num_features


def test_scaling_factors_resnet20() -> None:
    model = resnet_cifar(20)
    factors = scaling_factors(model)
    # stem bn1 + 9 blocks x (bn1, bn2) + projection-shortcut BNs of layer2.0, layer3.0
    assert len(factors) == 1 + 9 * 2 + 2 == 21
    assert factors[0].name == "bn1" and factors[0].conv is model.conv1
    assert [f.name for f in factors[1:4]] == ["layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1"]
    assert "layer2.0.shortcut.1" in [f.name for f in factors]
    sc = next(f for f in factors if f.name == "layer2.0.shortcut.1")
    assert sc.conv is model.layer2[0].shortcut[0]
    b = model.layer3[2]
    assert ScalingFactor("layer3.2.bn2", b.bn2, b.conv2) in factors
    _assert_pairs_consistent(factors, model)


def test_scaling_factors_resnet8() -> None:
    model = resnet_cifar(8, in_channels=1)
    factors = scaling_factors(model)
    assert len(factors) == 1 + 3 * 2 + 2 == 9
    _assert_pairs_consistent(factors, model)


def test_scaling_factors_torchvision_resnets() -> None:
    r50 = resnet50()
    f50 = scaling_factors(r50)
    # stem 1 + 16 bottlenecks x 3 + downsample BN in the first block of each layer
    assert len(f50) == 1 + 16 * 3 + 4 == 53
    assert f50[0].name == "bn1" and f50[-1].name == "layer4.2.bn3"
    assert "layer1.0.downsample.1" in [f.name for f in f50]
    _assert_pairs_consistent(f50, r50)
    # stem 1 + 16 basic blocks x 2 + downsample in layer2..4 (layer1 keeps 64 channels)
    assert len(scaling_factors(resnet34(in_channels=1))) == 1 + 16 * 2 + 3 == 36


def test_scaling_factors_resnet101_count() -> None:
    assert len(scaling_factors(resnet101())) == 1 + 33 * 3 + 4 == 104


def test_scaling_factors_mobilenet_v2() -> None:
    model = mobilenet_v2(width_mult=0.25)
    factors = scaling_factors(model)
    # stem 1 + first block (dw, project) 2 + 16 blocks x (expand, dw, project) 3 + last conv 1
    assert len(factors) == 1 + 2 + 16 * 3 + 1 == 52
    assert factors[0].name == "features.0.1"
    _assert_pairs_consistent(factors, model)


def test_scaling_factors_wide_resnet_preactivation() -> None:
    model = wide_resnet(16, 2)  # 2 blocks per group
    names = [f.name for f in scaling_factors(model)]
    # bn2 follows conv1 in each block; layer1.0.bn1 directly follows the stem conv.
    # Every other bn1 and the final bn follow a residual sum: not scaling factors.
    assert names == ["layer1.0.bn1"] + [f"layer{g}.{i}.bn2" for g in (1, 2, 3) for i in (0, 1)]
    assert "layer2.0.bn1" not in names and "bn" not in names


def test_scaling_factors_wrn28_10_count() -> None:
    assert len(scaling_factors(wide_resnet())) == 12 + 1


def test_preactivation_bn_excluded() -> None:
    model = nn.Sequential(
        nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.BatchNorm2d(4), nn.Conv2d(4, 5, 3),
    )
    factors = scaling_factors(model)
    assert [(f.name, f.conv) for f in factors] == [("2", model[1])]


def test_bn_after_inplace_op_excluded() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.BatchNorm2d(4))
    assert scaling_factors(model) == []


def test_no_bn_model() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    assert scaling_factors(model) == []
    with pytest.raises(ValueError, match="BatchNorm2d") as exc:
        require_scaling_factors(model, "SST")
    assert str(exc.value).startswith("SST needs") and "Sequential has none" in str(exc.value)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        require_scaling_factors(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "SST")


def test_require_scaling_factors_returns_factors() -> None:
    model = resnet_cifar(8)
    assert require_scaling_factors(model, "x") == scaling_factors(model)


def test_custom_example_input() -> None:
    model = resnet_cifar(8, in_channels=2)
    assert len(scaling_factors(model, torch.zeros(1, 2, 9, 9))) == 9


@pytest.mark.parametrize("train", [True, False])
def test_mode_restored(train: bool) -> None:
    model = resnet_cifar(8).train(train)
    model.layer2.train(not train)  # mixed modes must survive too
    before = {n: m.training for n, m in model.named_modules()}
    running = model.bn1.running_mean.clone()
    scaling_factors(model)
    assert {n: m.training for n, m in model.named_modules()} == before
    assert torch.equal(model.bn1.running_mean, running)


def test_no_hooks_left() -> None:
    model = resnet_cifar(8)
    scaling_factors(model)
    with capture_block_outputs(model):
        pass
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


# ---------------------------------------------------------------- blocks & classifier


def test_feature_blocks() -> None:
    model = resnet_cifar(20)
    blocks = feature_blocks(model)
    assert len(blocks) == 9 and blocks[0] is model.layer1[0] and blocks[-1] is model.layer3[2]
    assert len(feature_blocks(resnet50())) == 16
    assert len(feature_blocks(resnet34())) == 16
    assert len(feature_blocks(wide_resnet(16, 1))) == 6
    mb = feature_blocks(mobilenet_v2(width_mult=0.25))
    assert len(mb) == 17 and all(isinstance(b, InvertedResidual) for b in mb)


def test_feature_blocks_custom_and_missing() -> None:
    class WithBlocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)])

    assert len(feature_blocks(WithBlocks())) == 2
    plain = nn.Sequential(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match=r"Sequential.*blocks"):
        feature_blocks(plain)
    with pytest.raises(ValueError, match=r"^AOD needs"):
        require_blocks(plain, "AOD")


def test_require_blocks() -> None:
    model = resnet_cifar(8)
    assert require_blocks(model, "AOD") == model.blocks

    class Empty(nn.Module):
        blocks: list = []

    with pytest.raises(ValueError, match=r"AOD needs.*Empty has none"):
        require_blocks(Empty(), "AOD")


def test_classifier() -> None:
    r = resnet_cifar(8, num_classes=6)
    assert classifier(r) is r.fc
    r50 = resnet50(num_classes=6)
    assert classifier(r50) is r50.fc
    mb = mobilenet_v2(num_classes=6, width_mult=0.25)
    assert classifier(mb) is mb.classifier[1] and isinstance(classifier(mb), nn.Linear)
    wrn = wide_resnet(10, 1, num_classes=6)
    assert classifier(wrn) is wrn.fc

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = nn.Linear(3, 2)

    c = Custom()
    assert classifier(c) is c.classifier
    with pytest.raises(ValueError, match=r"Sequential.*classifier"):
        classifier(nn.Sequential(nn.Linear(2, 2)))


# ---------------------------------------------------------------- capture_block_outputs


def test_capture_block_outputs_resnet() -> None:
    model = resnet_cifar(8, in_channels=1, width=4).train()
    with capture_block_outputs(model) as outs:
        model(_x(1, 28))
        assert [tuple(o.shape) for o in outs] == [(2, 4, 28, 28), (2, 8, 14, 14), (2, 16, 7, 7)]
        assert all(o.requires_grad and o.grad_fn is not None for o in outs)
        # the graph is kept: a loss on block outputs reaches the stem
        sum(o.pow(2).mean() for o in outs).backward()
        assert model.conv1.weight.grad is not None
        model(_x(1, 28))
        assert len(outs) == 3  # cleared at each forward start
    model(_x(1, 28))
    assert len(outs) == 3  # hooks removed after the context


def test_capture_block_outputs_torchvision_and_explicit_blocks() -> None:
    model = mobilenet_v2(num_classes=3, width_mult=0.25)
    with capture_block_outputs(model) as outs:
        model(_x(3, 32))
    assert len(outs) == 17 and outs[-1].shape[-1] == 2
    r = resnet_cifar(8)
    with capture_block_outputs(r, blocks=[r.layer3[0]]) as outs:
        r(_x(3, 32))
    assert len(outs) == 1 and outs[0].shape == (2, 64, 8, 8)


def test_shared_bn_listed_once_with_first_conv() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.b(self.bn(self.a(x))))

    model = Shared()
    assert scaling_factors(model) == [ScalingFactor("bn", model.bn, model.a)]
