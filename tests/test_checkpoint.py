"""Checkpoints: atomic writes, weights-only loads, and a clear error for a file that cannot be read."""

from __future__ import annotations

import pytest
import torch

from avalanche_sst.checkpoint import CheckpointReadError, load_checkpoint, save_checkpoint


def test_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    assert load_checkpoint(path) is None
    save_checkpoint(path, {"step": 2, "accuracies": [0.5, 0.75], "model": {"w": torch.arange(3.0)}})
    state = load_checkpoint(path)
    assert state["step"] == 2 and state["accuracies"] == [0.5, 0.75]
    assert torch.equal(state["model"]["w"], torch.tensor([0.0, 1.0, 2.0]))
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("keep", [0, 10, 0.5])
def test_truncated_checkpoint_names_the_file_and_says_delete_it(tmp_path, keep):
    path = tmp_path / "sst" / "seed0" / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "model": {"w": torch.zeros(200)}})
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointReadError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "Delete it" in message and f"rm {path}" in message
    assert info.value.path == path
