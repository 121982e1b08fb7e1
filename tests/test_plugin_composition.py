"""Our methods composed with Avalanche's own plugins and strategies: they say when they do
nothing, and the errors they raise name the fix."""

from __future__ import annotations

import pytest
import torch
from avalanche.training.plugins import EarlyStoppingPlugin

from avalanche_sst.benchmarks.scenarios import task_incremental
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet
from conftest import make_images
from test_ada_qpacknet import tiny_net


# --- Ada-QPacknet + EarlyStoppingPlugin ----------------------------------------------------


def _ada_with_early_stopping(**kw):
    torch.manual_seed(0)
    bm = task_incremental(make_images(12, seed=0, classes=4), make_images(4, seed=1, classes=4),
                          classes_per_step=2, seed=0, validation_fraction=0.25, augment=False)
    strategy = AdaQPackNet(model=tiny_net(), valid_stream=bm.valid_stream, population=2, search_epochs=1,
                           full_epochs=1, train_mb_size=16, eval_mb_size=64, eval_every=1,
                           plugins=[EarlyStoppingPlugin(patience=1, val_stream_name="valid_stream")], **kw)
    return bm, strategy


def test_ada_qpacknet_early_stopping_error_names_unseen_tasks_zeros_and_the_fix_works():
    bm, strategy = _ada_with_early_stopping()
    # Avalanche's periodic evaluation runs before the task is trained.
    with pytest.raises(ValueError, match='task label 0 was never trained.*unseen_tasks="zeros"'):
        strategy.train(bm.train_stream[0], eval_streams=[bm.valid_stream])
    bm, strategy = _ada_with_early_stopping(unseen_tasks="zeros")
    strategy.train(bm.train_stream[0], eval_streams=[bm.valid_stream])
    assert strategy.model.trained_tasks == [0]
