"""Inference cost per image: the FLOPs of one forward pass of the evaluated model on one input.

Counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2
FLOPs; convolutions and matrix products only, as in the edge paper's Table 1,
:func:`avalanche_sst.models.student.model_cost`), in eval mode, on a zero input
of the scored stream's image shape with task label 0 (a multi-head model runs
its first head). What a method decodes once per task switch (Ada-QPacknet's
codebooks) is not per image and not counted.
"""

from __future__ import annotations

import torch
from avalanche.models.utils import avalanche_forward
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["inference_flops", "stream_input_shape"]


def stream_input_shape(stream) -> tuple[int, ...]:
    """(C, H, W) of the first sample of the first experience of ``stream``."""
    return tuple(stream[0].dataset[0][0].shape)


def inference_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of ``model`` on one input of ``input_shape``; the model's train/eval flag is restored."""
    was_training = model.training
    weight = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=weight.device, dtype=weight.dtype)
    task = torch.zeros(1, dtype=torch.long, device=weight.device)
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            avalanche_forward(model, x, task)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
