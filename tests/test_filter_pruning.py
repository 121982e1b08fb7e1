"""Activation-based filter pruning (Zhao, Chen & Zhao, sec. 3, eq. 1-2), per-layer
widths of the CIFAR ResNets and the students built from them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avalanche_sst.functional.filter_pruning import (
    check_threshold,
    kept_filters,
    kept_width,
    measure_zero_fractions,
    prunable_counts,
    prune_plan,
    zero_fractions,
)
from avalanche_sst.models import resnet_cifar, wide_resnet
from avalanche_sst.models.resnet_cifar import LayerWidths
from avalanche_sst.models.student import build_student, model_cost, residual_groups, student_report

torch.set_num_threads(1)


def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the pure functions


def test_zero_fractions_by_hand() -> None:
    a = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 0.0]]]])  # [1, 2, 2, 2]
    assert torch.equal(zero_fractions(a), torch.tensor([[0.75, 0.25]]))
    with pytest.raises(ValueError, match="M, C, H, W"):
        zero_fractions(torch.zeros(2, 3))


def test_counts_width_and_kept_by_hand() -> None:
    f = torch.tensor([[1.0, 0.5, 0.9], [1.0, 1.0, 0.2]])
    assert prunable_counts(f, 0.9).tolist() == [2, 2]
    assert prunable_counts(f, 1.0).tolist() == [1, 2]
    assert kept_width(f, 0.9) == 1  # 3 - 2
    assert kept_width(f, 1.0) == 2  # 3 - 1.5, half a filter kept
    assert kept_width(torch.ones(4, 3), 1.0) == 1  # never below one filter
    # mean zero fractions 1.0, 0.75, 0.55: the two lowest are filters 1 and 2
    assert kept_filters(f, 2) == [1, 2]
    assert kept_filters(f, 1) == [2]


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, 2, "0.9", None, True])
def test_threshold_outside_0_1_is_an_error(bad) -> None:
    with pytest.raises(ValueError, match=r"threshold P must be a number in \(0, 1\]"):
        check_threshold(bad)
    with pytest.raises(ValueError, match="threshold"):
        prune_plan(resnet_cifar(8, width=4, in_channels=1), _images(2), bad)


def test_threshold_accepts_the_papers_range() -> None:
    assert [check_threshold(p) for p in (1, 1.0, 0.7, 1e-3)] == [1.0, 1.0, 0.7, 1e-3]


# ---------------------------------------------------------------- forced dead filters


def _force(bn: nn.BatchNorm2d, conv: nn.Conv2d, dead: list[int]) -> None:
    """Dead filters output 0 after ReLU on every image, the others never do (eval-mode BN)."""
    with torch.no_grad():
        conv.weight[dead] = 0
        bn.bias.fill_(50.0)
        bn.bias[dead] = -50.0


def test_layer_with_k_dead_filters_keeps_n_minus_k_at_P_1() -> None:
    torch.manual_seed(0)
    model = resnet_cifar(8, width=4, in_channels=1, num_classes=3)
    block2, block3 = model.layer2[0], model.layer3[0]
    _force(block2.bn1, block2.conv1, [0, 3, 6])  # a first conv: 8 filters, 3 dead
    # the group-3 stream: main path and projection shortcut both dead on 4 of 16 channels
    _force(block3.bn2, block3.conv2, [1, 2, 9, 15])
    _force(block3.shortcut[1], block3.shortcut[0], [1, 2, 9, 15])
    plan = prune_plan(model, _images(), threshold=1.0)
    assert plan.widths.mids[1] == 8 - 3
    assert plan.kept["mid2"] == [1, 2, 4, 5, 7]
    assert plan.widths.groups[2] == 16 - 4
    assert plan.kept["group3"] == [i for i in range(16) if i not in (1, 2, 9, 15)]
    # the forced layers' zero fractions are exactly 1 on dead filters, 0 elsewhere
    fr = measure_zero_fractions(model, _images())["mid1.0"]
    assert torch.equal(fr[:, [0, 3, 6]], torch.ones(16, 3)) and fr[:, [1, 2, 4, 5, 7]].sum() == 0


def test_wide_resnet_dead_filters_measured_at_the_preactivation() -> None:
    torch.manual_seed(0)
    model = wide_resnet(10, 1, in_channels=1, num_classes=3)
    block = model.layer2[0]
    _force(block.bn2, block.conv1, [0, 5])  # 32 filters, 2 dead
    plan = prune_plan(model, _images(), threshold=1.0)
    assert plan.widths.mids[1] == 32 - 2
    assert 0 not in plan.kept["mid2"] and 5 not in plan.kept["mid2"]


def test_modes_restored_and_no_hooks_left() -> None:
    model = resnet_cifar(8, width=4, in_channels=1).train()
    running = model.bn1.running_mean.clone()
    prune_plan(model, _images(), 0.9)
    assert all(m.training for m in model.modules())
    assert torch.equal(model.bn1.running_mean, running)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------- plans and students


@pytest.mark.parametrize("teacher_fn", [
    lambda: resnet_cifar(20, width=4, in_channels=1, num_classes=5),
    lambda: wide_resnet(16, 2, in_channels=1, num_classes=5),
], ids=["resnet20-w4", "wrn16-2"])
def test_parameters_fall_monotonically_as_P_falls(teacher_fn) -> None:
    torch.manual_seed(0)
    teacher = teacher_fn()
    params = []
    for p in (1.0, 0.9, 0.8, 0.7, 0.5):
        student = build_student(teacher, prune_plan(teacher, _images(), p).widths)
        params.append(sum(t.numel() for t in student.parameters()))
    assert params == sorted(params, reverse=True)
    assert params[-1] < params[0]
    assert params[0] < sum(t.numel() for t in teacher.parameters())


def test_one_width_per_group_is_the_largest_of_the_summed_tensors() -> None:
    torch.manual_seed(1)
    teacher = resnet_cifar(20, width=4, in_channels=1)  # 3 blocks per group
    plan = prune_plan(teacher, _images(), 0.7)
    for g in range(3):
        summed = [plan.rule_widths[f"out{g}.{b}"] for b in range(3)]
        if g == 0:  # layer1.0 has an identity shortcut: the stem output is summed too
            summed.append(plan.rule_widths["stem"])
        assert plan.widths.groups[g] == max(summed)
        # the student keeps the last block: its first conv's own rule width
        assert plan.widths.mids[g] == plan.rule_widths[f"mid{g}.2"]
    assert plan.widths.stem == plan.widths.groups[0]


def test_student_is_one_block_per_group_with_the_planned_widths() -> None:
    torch.manual_seed(0)
    teacher = resnet_cifar(14, width=4, in_channels=1, num_classes=5)
    widths = LayerWidths(stem=3, groups=(3, 6, 12), mids=(2, 5, 9))
    student = build_student(teacher, widths)
    assert [len(g) for g in residual_groups(student)] == [1, 1, 1]
    assert student.conv1.out_channels == 3 and student.fc.in_features == 12 and student.fc.out_features == 5
    assert [b.conv1.out_channels for b in student.blocks] == [2, 5, 9]
    assert [b.conv2.out_channels for b in student.blocks] == [3, 6, 12]
    assert student(_images(2)).shape == (2, 5)
    assert build_student(teacher, widths, num_classes=7).fc.out_features == 7


def test_student_wider_than_teacher_is_an_error() -> None:
    teacher = resnet_cifar(8, width=4, in_channels=1)
    with pytest.raises(ValueError, match="not be wider than its teacher.*group3"):
        build_student(teacher, LayerWidths(4, (4, 8, 17), (4, 8, 16)))
    with pytest.raises(ValueError, match="one block per group"):
        build_student(teacher, LayerWidths.uniform(4, (4, 8, 16), 2))


def test_teacher_without_groups_is_an_error() -> None:
    flat = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match="residual groups.*Sequential"):
        prune_plan(flat, _images(2), 0.9)
    with pytest.raises(ValueError, match="residual groups"):
        build_student(flat, LayerWidths(1, (1, 1, 1), (1, 1, 1)))


def test_cost_report_counts_parameters_and_flops() -> None:
    torch.manual_seed(0)
    teacher = resnet_cifar(14, width=4, in_channels=1)
    student = build_student(teacher, prune_plan(teacher, _images(), 0.8).widths)
    report = student_report(teacher, student, (1, 8, 8))
    assert report["teacher_params"] == sum(p.numel() for p in teacher.parameters())
    assert report["student_params"] == sum(p.numel() for p in student.parameters())
    assert report["compression_ratio"] == report["teacher_params"] / report["student_params"] > 1
    assert report["teacher_flops"] > report["student_flops"] > 0
    # FlopCounterMode counts 2 * MACs: a lone 3x3 conv 1->2 channels on 4x4 (padding 1): 2*2*9*16
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False))
    assert model_cost(conv, (1, 4, 4)) == {"params": 18, "flops": 2 * 2 * 9 * 16}


# ---------------------------------------------------------------- per-layer widths stay backward compatible


def test_default_widths_build_the_same_network_bit_for_bit() -> None:
    torch.manual_seed(5)
    a = resnet_cifar(8, width=4, in_channels=1)
    torch.manual_seed(5)
    b = resnet_cifar(widths=LayerWidths.uniform(4, (4, 8, 16), 1), in_channels=1)
    torch.manual_seed(5)
    c = resnet_cifar(blocks_per_group=1, width=4, in_channels=1)
    for other in (b, c):
        sa, so = a.state_dict(), other.state_dict()
        assert list(sa) == list(so) and all(torch.equal(sa[k], so[k]) for k in sa)
    assert a.depth == b.depth == c.depth == 8
    assert resnet_cifar(width=1).depth == 20 and wide_resnet(widen_factor=1).depth == 28


def test_wrn_teachers_build_and_their_students() -> None:
    wrn16 = wide_resnet(16, 2, num_classes=10, in_channels=3)
    assert wrn16.widths == LayerWidths(16, (32, 64, 128), (32, 32, 64, 64, 128, 128))
    wrn28 = wide_resnet(28, 10, num_classes=10)
    assert wrn28.widths.groups == (160, 320, 640) and len(wrn28.widths.mids) == 12
    student = build_student(wrn28, LayerWidths(16, (120, 200, 300), (100, 150, 250)))
    assert student.depth == 10 and student.fc.in_features == 300
    with torch.no_grad():
        assert student.eval()(torch.zeros(1, 3, 8, 8)).shape == (1, 10)


def test_inconsistent_depth_and_blocks_per_group() -> None:
    with pytest.raises(ValueError, match="disagree"):
        resnet_cifar(20, blocks_per_group=1)
    with pytest.raises(ValueError, match="disagree"):
        wide_resnet(16, 2, widths=LayerWidths(16, (32, 64, 128), (32, 64, 128)))
    with pytest.raises(ValueError, match="LayerWidths"):
        LayerWidths(4, (4, 8), (4, 8, 16))
    with pytest.raises(ValueError, match=">= 1"):
        LayerWidths(0, (4, 8, 16), (4, 8, 16))


def test_layer_widths_round_trip() -> None:
    w = LayerWidths(3, (3, 6, 12), (2, 5, 9))
    d = w.to_dict()
    assert d == {"stem": 3, "groups": [3, 6, 12], "mids": [2, 5, 9]}
    assert LayerWidths.from_dict(d) == w


# ---------------------------------------------------------------- mutation-testing kills


def _plant(bn: nn.BatchNorm2d, dead: list[int]) -> None:
    """An eval-mode BatchNorm whose output is -1 on the ``dead`` channels and +1 on the others,
    whatever it reads: after the ReLU, zero fraction 1 on the dead channels, 0 elsewhere."""
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.fill_(1.0)
        bn.bias[dead] = -1.0


def test_wide_resnet_block_output_is_measured_after_the_next_batchnorm_at_P_0_7() -> None:
    """A WRN block's output meets its ReLU at the BatchNorm that reads it (the final ``bn`` for
    the last group), not as the raw residual sum; 5 of 64 channels dead there -> width 59."""
    torch.manual_seed(0)
    model = wide_resnet(10, 1, in_channels=1, num_classes=3)  # one block per group, widths 16/32/64
    dead = [3, 10, 20, 41, 63]
    _plant(model.bn, dead)
    _plant(model.layer2[0].bn2, [0, 5, 7])  # the mid tensor of group 2: 32 filters, 3 dead
    plan = prune_plan(model, _images(), threshold=0.7)
    assert plan.rule_widths["out2.0"] == 64 - 5 and plan.widths.groups[2] == 59
    assert plan.kept["group3"] == [i for i in range(64) if i not in dead]
    assert plan.widths.mids[1] == 32 - 3 and plan.kept["mid2"] == [i for i in range(32) if i not in (0, 5, 7)]


def test_resnet_dead_filter_counts_at_P_0_7_through_the_network() -> None:
    """Post-activation ResNet, P = 0.7: a block output is relu(bn2 + shortcut BN); planting -1/+1
    in both makes the sum -2/+2, so exactly the planted channels are dead on every image."""
    torch.manual_seed(0)
    model = resnet_cifar(8, width=4, in_channels=1, num_classes=3)  # groups 4/8/16, one block each
    block = model.layer3[0]
    _plant(block.bn2, [2, 9, 11])
    _plant(block.shortcut[1], [2, 9, 11])
    _plant(model.layer2[0].bn1, [1, 6])
    plan = prune_plan(model, _images(), threshold=0.7)
    assert plan.widths.groups[2] == 16 - 3 and plan.kept["group3"] == [i for i in range(16) if i not in (2, 9, 11)]
    assert plan.widths.mids[1] == 8 - 2 and plan.kept["mid2"] == [0, 2, 3, 4, 5, 7]
    fractions = measure_zero_fractions(model, _images())
    assert prunable_counts(fractions["out2.0"], 0.7).tolist() == [3] * 16


def test_kept_filters_break_ties_by_index() -> None:
    """32 filters, every third always zero (fraction 1), the rest never: the 10 kept are the first
    10 live ones in index order (an unstable sort would pick other tied filters)."""
    fractions = torch.zeros(4, 32)
    fractions[:, ::3] = 1.0
    live = [i for i in range(32) if i % 3]
    assert kept_filters(fractions, 10) == live[:10]


def test_a_teacher_without_groups_names_filter_pruning() -> None:
    with pytest.raises(ValueError, match="^filter pruning needs a teacher made of residual groups"):
        measure_zero_fractions(nn.Sequential(nn.Conv2d(1, 2, 3)), _images(2))


def test_prune_plan_to_dict_keys() -> None:
    plan = prune_plan(resnet_cifar(8, width=4, in_channels=1), _images(), 0.9)
    d = plan.to_dict()
    assert set(d) == {"threshold", "widths", "kept", "rule_widths"}
    assert d["threshold"] == 0.9 and d["kept"] == plan.kept and d["rule_widths"] == plan.rule_widths
    assert LayerWidths.from_dict(d["widths"]) == plan.widths
    assert prune_plan(resnet_cifar(8, width=4, in_channels=1), _images(2)).threshold == 1.0  # the default P


def test_wide_resnet_stem_joins_group_1_when_the_first_block_keeps_the_width() -> None:
    """WRN-10-1: 16 stem channels feed group 1 (16 wide) through an identity shortcut, so the stem
    takes group 1's width and filters even where its own rule (6 dead channels -> 10) says fewer."""
    torch.manual_seed(0)
    model = wide_resnet(10, 1, in_channels=1, num_classes=3)
    assert model.layer1[0].equal_in_out
    _plant(model.layer1[0].bn1, [0, 1, 2, 3, 4, 5])  # the stem's output meets its ReLU here
    plan = prune_plan(model, _images(), threshold=0.7)
    assert plan.rule_widths["stem"] == 10
    assert plan.widths.stem == plan.widths.groups[0] and plan.kept["stem"] == plan.kept["group1"]
