"""Accuracy and loss metrics that accumulate on the device.

Avalanche's ``Accuracy`` and ``LossMetric`` turn every mini-batch's count and
loss into a Python float (``float(tensor)``): one host read per iteration
and metric, which on a GPU stalls the queue of kernels every iteration. The
metrics here keep the running sums as tensors on the batch's device and read
them once, when the value is emitted (end of epoch, experience or stream).

The arithmetic is Avalanche's, in float64 and in the same order (batch
accuracy ``correct / n`` times ``n``, loss mean times ``n``, summed, divided
by the summed weights), so the emitted values equal Avalanche's. The plugin
metrics are Avalanche's own classes (names, reset and emit points
unchanged) with these inner metrics swapped in: :func:`device_metrics`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional

import torch
from avalanche.evaluation.metrics import Accuracy, TaskAwareAccuracy
from avalanche.evaluation.metrics.accuracy import AccuracyPluginMetric
from avalanche.evaluation.metrics.forgetting_bwt import GenericExperienceForgetting, GenericStreamForgetting
from avalanche.evaluation.metrics.loss import LossMetric, LossPluginMetric


class DeviceMean:
    """Avalanche's weighted ``Mean`` with the sum kept as a float64 tensor (read in :meth:`result`)."""

    def __init__(self):
        self.summed: Optional[torch.Tensor] = None
        self.weight = 0.0

    def update(self, value: torch.Tensor, weight: float) -> None:
        weighted = value.detach().to(torch.float64) * float(weight)
        self.summed = weighted if self.summed is None else self.summed + weighted
        self.weight += float(weight)

    def result(self) -> float:
        if self.weight == 0.0 or self.summed is None:
            return 0.0
        return self.summed.item() / self.weight

    def reset(self) -> None:
        self.summed, self.weight = None, 0.0


class DeviceAccuracy(Accuracy):
    """``Accuracy`` without a host read per update."""

    def __init__(self):
        self._mean_accuracy = DeviceMean()

    @torch.no_grad()
    def update(self, predicted_y, true_y) -> None:
        true_y = torch.as_tensor(true_y)
        predicted_y = torch.as_tensor(predicted_y)
        if len(true_y) != len(predicted_y):
            raise ValueError("Size mismatch for true_y and predicted_y tensors")
        if predicted_y.dim() > 1:  # logits -> labels, as Avalanche (torch.max, not argmax: same ties)
            predicted_y = torch.max(predicted_y, 1)[1]
        if true_y.dim() > 1:
            true_y = torch.max(true_y, 1)[1]
        total = len(true_y)
        correct = torch.sum(torch.eq(predicted_y, true_y)).to(torch.float64)
        self._mean_accuracy.update(correct / total, total)


class DeviceTaskAwareAccuracy(TaskAwareAccuracy):
    """``TaskAwareAccuracy`` made of :class:`DeviceAccuracy` (what forgetting metrics use)."""

    def __init__(self):
        self._mean_accuracy = defaultdict(DeviceAccuracy)

    def reset(self, task_label=None) -> None:
        if task_label is None:
            self._mean_accuracy = defaultdict(DeviceAccuracy)
        else:
            self._mean_accuracy[task_label].reset()


class DeviceLoss(LossMetric):
    """``LossMetric`` without a host read per update."""

    def __init__(self):
        self._mean_loss = DeviceMean()

    @torch.no_grad()
    def update(self, loss: torch.Tensor, patterns: int) -> None:
        self._mean_loss.update(torch.mean(loss), weight=patterns)


def device_metrics(metrics: list) -> list:
    """Avalanche plugin metrics with their accuracy, loss and forgetting accumulators moved to the device.

    Takes the lists ``accuracy_metrics``, ``loss_metrics`` and
    ``forgetting_metrics`` return and swaps the inner metric of every
    non-per-task one in place; others are left as they are.
    """
    for m in metrics:
        if isinstance(m, AccuracyPluginMetric) and type(m._metric) is Accuracy:
            m._metric = DeviceAccuracy()
        elif isinstance(m, LossPluginMetric) and type(m._metric) is LossMetric:
            m._metric = m._loss = DeviceLoss()
        elif isinstance(m, (GenericExperienceForgetting, GenericStreamForgetting)) \
                and type(m._current_metric) is TaskAwareAccuracy:
            m._current_metric = DeviceTaskAwareAccuracy()
    return metrics
