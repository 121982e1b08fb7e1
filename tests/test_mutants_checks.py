"""functional/checks: every error names the argument and says what is wrong (the whole message is
checked, so a renamed argument or a dropped message fails), and each condition is probed on the
input that tells ``and`` from ``or`` and ``>`` from ``>=``."""

from __future__ import annotations

import re

import pytest
import torch

from avalanche_sst.functional.checks import (check_logit_pair, check_logits, check_same_shape, check_targets,
                                             check_tensor, non_negative, positive)


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def test_check_tensor_names_the_argument_and_the_type_it_got():
    t = torch.zeros(2)
    assert check_tensor(t, "student_logits") is t
    with pytest.raises(ValueError, match=exactly("student_logits must be a torch.Tensor, got list")):
        check_tensor([1.0], "student_logits")


def test_check_logits_messages():
    with pytest.raises(ValueError, match=exactly("student_logits must be a torch.Tensor, got float")):
        check_logits(1.0, "student_logits")
    with pytest.raises(ValueError, match=exactly("student_logits must be 2-D [batch, classes], got shape (3,)")):
        check_logits(torch.zeros(3), "student_logits")
    with pytest.raises(ValueError, match=exactly("student_logits must be a floating-point tensor, "
                                                 "got dtype torch.int64")):
        check_logits(torch.zeros(2, 3, dtype=torch.long), "student_logits")


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_check_logits_refuses_an_empty_batch_or_class_dimension(shape):
    # (0, 3): "or" -> "and" or shape[0] -> shape[1] would accept it; (3, 0) guards the class side
    with pytest.raises(ValueError, match=exactly(f"teacher_logits must have a non-empty batch and class "
                                                 f"dimension, got {shape}")):
        check_logits(torch.zeros(shape), "teacher_logits")


def test_check_logits_accepts_one_class_and_one_row():
    one_class = torch.zeros(4, 1)  # a single output unit is a valid (if degenerate) logit matrix
    assert check_logits(one_class, "x") is one_class
    one_row = torch.zeros(1, 5)
    assert check_logits(one_row, "x") is one_row


def test_check_same_shape_message_names_both_arguments_and_shapes():
    check_same_shape(torch.zeros(2, 3), "a", torch.ones(2, 3), "b")  # no error
    with pytest.raises(ValueError, match=exactly("shape mismatch: student has shape (2, 3) but teacher has "
                                                 "shape (2, 4)")):
        check_same_shape(torch.zeros(2, 3), "student", torch.zeros(2, 4), "teacher")


def test_check_logit_pair_names_the_argument_at_fault():
    good = torch.zeros(2, 3)
    a, b = check_logit_pair(good, "student", good + 1, "teacher")
    assert a is good and torch.equal(b, good + 1)
    with pytest.raises(ValueError, match=exactly("student must be 2-D [batch, classes], got shape (3,)")):
        check_logit_pair(torch.zeros(3), "student", good, "teacher")
    with pytest.raises(ValueError, match=exactly("teacher must be 2-D [batch, classes], got shape (3,)")):
        check_logit_pair(good, "student", torch.zeros(3), "teacher")
    with pytest.raises(ValueError, match=exactly("shape mismatch: student has shape (2, 3) but teacher has "
                                                 "shape (2, 5)")):
        check_logit_pair(good, "student", torch.zeros(2, 5), "teacher")


def test_check_targets_returns_long_class_indices():
    out = check_targets(torch.tensor([2, 0, 1], dtype=torch.uint8), torch.zeros(3, 4), "logits")
    assert out.dtype == torch.int64 and out.tolist() == [2, 0, 1]


def test_check_targets_messages():
    logits = torch.zeros(4, 3)  # batch 4, 3 classes: a message taking the class count would say 3
    with pytest.raises(ValueError, match=exactly("targets must be a torch.Tensor, got list")):
        check_targets([0, 1, 2, 0], logits, "logits")
    with pytest.raises(ValueError, match=exactly("targets must be 1-D with one class index per row of student "
                                                 "(batch 4), got shape (3,)")):
        check_targets(torch.zeros(3, dtype=torch.long), logits, "student")
    # 2-D targets with the right first dimension: only the "or" of the two conditions refuses them
    with pytest.raises(ValueError, match=exactly("targets must be 1-D with one class index per row of student "
                                                 "(batch 4), got shape (4, 1)")):
        check_targets(torch.zeros(4, 1, dtype=torch.long), logits, "student")
    with pytest.raises(ValueError, match=exactly("targets must be an integer class-index tensor, "
                                                 "got dtype torch.float32")):
        check_targets(torch.zeros(4), logits, "student")


@pytest.mark.parametrize("check, bound", [(positive, "> 0"), (non_negative, ">= 0")])
def test_numbers_refuse_non_numbers_and_booleans_by_name(check, bound):
    for value in ("0.5", None, True, False):
        with pytest.raises(ValueError, match=exactly(f"temperature must be a real number, got {value!r}")):
            check(value, "temperature")
    for value in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=exactly(f"temperature must be a finite number {bound}, "
                                                     f"got {value!r}")):
            check(value, "temperature")


def test_zero_is_non_negative_but_not_positive():
    assert non_negative(0, "weight") == 0.0 and isinstance(non_negative(0, "weight"), float)
    assert positive(2, "temperature") == 2.0 and non_negative(2.5, "weight") == 2.5
    assert positive(0.5, "temperature") == 0.5  # between 0 and 1: a bound of 1 would refuse it
    with pytest.raises(ValueError, match=exactly("temperature must be a finite number > 0, got 0")):
        positive(0, "temperature")
