"""Crash-safe checkpoints of plain state dicts, loaded with ``weights_only=True``.

Avalanche's dill-based ``save_checkpoint`` pickles whole strategies (and
cannot pickle every optimizer here); we store only tensors, numbers, strings,
lists and dicts, so loading never executes pickled code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Optional

import torch


class CheckpointReadError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupted, not a checkpoint)."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        self.path = path
        super().__init__(
            f"cannot read the checkpoint {path} ({type(cause).__name__}: {cause}). "
            f"Delete it to redo that run from its start: rm {path}"
        )


def save_checkpoint(path: os.PathLike | str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a crash mid-write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")  # two processes may write one cache file
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: os.PathLike | str, map_location: Optional[str | torch.device] = "cpu") -> Optional[dict]:
    """The saved state, or ``None`` if there is no checkpoint yet.

    Raises :class:`CheckpointReadError`, naming the file, when it exists but cannot be read
    (e.g. truncated by a full disk or a copy cut short; our own writes are atomic).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # what torch.load raises on bad bytes
        raise CheckpointReadError(path, exc) from exc
