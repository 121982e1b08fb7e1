"""Tests that kill the mutation survivors of metrics/scores (docs/testing.md): the same-class
and unseen-class scores, no forgetting before a second step, the missing/ambiguous metric
message, and a setting added by one register_setting call."""

from __future__ import annotations

import pytest

from avalanche_sst.metrics.scores import (
    SETTING_SCORES,
    STREAM_ACC,
    STREAM_FORGETTING,
    TRAINED_ACC,
    SettingScores,
    StepInfo,
    metric,
    register_setting,
    step_scores,
)

FIRST = StepInfo(step=0, history=[], test_sizes=[10, 10])


def test_same_class_and_unseen_class_read_the_stream_accuracy():
    results = {f"{STREAM_ACC}/eval_phase/test_stream/Task000": 0.8,
               "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000": 0.1}
    assert step_scores("same_class", results, FIRST) == {"top1": 0.8}
    assert step_scores("unseen_class", results, FIRST) == {"top1_unseen": 0.8}


def test_nothing_is_forgotten_before_a_second_step():
    """Avalanche emits no StreamForgetting after the first step: the score is 0, not missing."""
    results = {f"{TRAINED_ACC}/eval_phase/test_stream/Task000": 0.6}
    assert step_scores("class_incremental", results, FIRST) == {
        "top1_seen": 0.6, "avg_incremental": 0.6, "forgetting": 0.0}
    results[f"{STREAM_FORGETTING}/eval_phase/test_stream/Task000"] = 0.2
    assert step_scores("class_incremental", results, FIRST)["forgetting"] == 0.2


def test_a_missing_or_ambiguous_metric_names_what_it_found():
    with pytest.raises(KeyError) as missing:
        metric({}, STREAM_ACC)
    assert missing.value.args[0] == ("expected one metric named 'Top1_Acc_Stream', found none; was the stream "
                                     "evaluated with avalanche_sst.metrics.make_evaluator?")
    two = {f"{STREAM_ACC}/eval_phase/test_stream/Task000": 0.5, f"{STREAM_ACC}/eval_phase/valid_stream": 0.4}
    with pytest.raises(KeyError) as ambiguous:
        metric(two, STREAM_ACC)
    assert ambiguous.value.args[0].startswith(
        f"expected one metric named 'Top1_Acc_Stream', found {list(two)!r}; was the stream")


def test_a_new_setting_is_one_register_setting_call():
    toy = SettingScores("toy_setting", "twice", "Twice the stream accuracy", ("twice",),
                        lambda results, info: {"twice": 2 * metric(results, STREAM_ACC)})
    try:
        assert register_setting(toy) is toy
        assert SETTING_SCORES["toy_setting"] is toy
        assert step_scores("toy_setting", {f"{STREAM_ACC}/eval_phase/test_stream": 0.25}, FIRST) == {"twice": 0.5}
    finally:
        SETTING_SCORES.pop("toy_setting", None)
