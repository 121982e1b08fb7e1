"""functional/edge_transfer: the survivors of its mutation run — J1 over a teacher whose logits are
only its classes, no classes, the student's last output; J3 as a batch mean; the default l3 = 1; a
teacher group of blocks of two widths; and the whole error messages."""

from __future__ import annotations

import math
import re

import pytest
import torch

from avalanche_sst.functional.edge_transfer import (BlockPair, edge_kt_loss, logit_distance, normalised_map,
                                                    one_hot_bce, pair_blocks)


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def test_j1_reads_a_teacher_whose_logits_are_only_its_classes_whole():
    # the teacher outputs its 2 classes (ids 3, 4); the student reads them at 3 and 4: |(1-4, 2-6)| = 5
    teacher = torch.tensor([[1.0, 2.0]])
    student = torch.tensor([[0.0, 0.0, 0.0, 4.0, 6.0]])
    assert logit_distance(teacher, student, [3, 4]).item() == pytest.approx(5.0)


def test_j1_over_no_class_is_zero():
    assert logit_distance(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0, 5.0]]), []).item() == 0.0


def test_j1_refuses_a_class_at_the_students_width():
    with pytest.raises(ValueError, match=exactly("J1 reads the teacher's classes [0, 3] but the student has "
                                                 "only 3 outputs")):
        logit_distance(torch.zeros(1, 4), torch.zeros(1, 3), [0, 3])


def test_j1_indexes_on_the_logits_device_whatever_the_default_device():
    teacher, student = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[4.0, 6.0, 9.0]])
    with torch.device("meta"):  # class ids made on the default device would land on meta
        out = logit_distance(teacher, student, [0, 1])
    assert out.device.type == "cpu" and out.item() == pytest.approx(5.0)


def test_j3_is_the_batch_mean_of_the_per_sample_sums():
    # rows p = (0.5, 0.5) and (0.75, 0.25), both labelled 0: per-sample sums 2 ln 2 and -2 ln 0.75
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=torch.float64)
    got = one_hot_bce(logits, torch.tensor([0, 0]))
    assert got.item() == pytest.approx(math.log(8.0 / 3.0), rel=1e-12)


def test_the_default_weights_add_the_three_terms():
    teacher_maps = [[torch.tensor([[[[1.0]], [[0.0]]]])]]
    student_maps = [[torch.tensor([[[[1.0]], [[1.0]]]])]]
    total, terms, _ = edge_kt_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), teacher_maps, student_maps,
                                   labels=torch.tensor([1]))
    assert terms["J3"].item() > 0
    assert total.item() == pytest.approx((terms["J1"] + terms["J_b"] + terms["J3"]).item(), rel=1e-7)


def test_normalised_map_message():
    with pytest.raises(ValueError, match=exactly("normalised_map: expected a [B, C, H, W] feature map, "
                                                 "got shape (2, 3)")):
        normalised_map(torch.zeros(2, 3))


def test_pair_blocks_refuses_a_group_empty_on_either_side():
    block = torch.ones(1, 2, 1, 1)
    for teacher, student in (([[]], [[block]]), ([[block]], [[]])):
        with pytest.raises(ValueError, match=exactly("group 0 has no blocks in the teacher or the student")):
            pair_blocks(teacher, student)


def test_pair_blocks_pads_the_narrower_teacher_blocks_to_the_groups_width():
    torch.manual_seed(0)
    narrow = torch.randn(2, 2, 3, 3)
    wide = torch.randn(2, 3, 3, 3)
    student = torch.cat([narrow, torch.zeros(2, 1, 3, 3)], dim=1)  # the narrow block, zero-padded
    pairs, matched = pair_blocks([[narrow, wide]], [[student]])
    assert [p[:3] for p in pairs] == [(0, 0, 0)] and pairs[0].cosine == pytest.approx(1.0)
    assert isinstance(pairs[0], BlockPair)
    assert torch.allclose(matched[0][0], matched[0][1])
