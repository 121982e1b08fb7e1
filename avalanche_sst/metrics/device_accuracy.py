"""Accuracy and loss metrics that accumulate on the device.

Avalanche's ``Accuracy`` and ``LossMetric`` turn every mini-batch's count and
loss into a Python float (``float(tensor)``): one host read per iteration
and metric, which on a GPU stalls the queue of kernels every iteration. The
metrics here keep each mini-batch's count and loss as a tensor on the batch's
device, in a list, and read the list once, when the value is emitted (end of
epoch, experience or stream).

The arithmetic is then Avalanche's own, on the same Python floats in the same
order (batch accuracy ``correct / n`` times ``n``, loss mean times ``n``,
summed, divided by the summed weights), so the emitted values equal
Avalanche's bit for bit; per batch, the accuracy costs the three ops that
count the hits and the loss none. The plugin
metrics are Avalanche's own classes (names, reset and emit points
unchanged) with these inner metrics swapped in: :func:`device_metrics`.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from avalanche.evaluation.metrics import Accuracy, TaskAwareAccuracy
from avalanche.evaluation.metrics.accuracy import AccuracyPluginMetric
from avalanche.evaluation.metrics.forgetting_bwt import GenericExperienceForgetting, GenericStreamForgetting
from avalanche.evaluation.metrics.loss import LossMetric, LossPluginMetric


class DeviceMean:
    """Avalanche's weighted ``Mean``, its per-batch values kept as tensors until :meth:`result`.

    ``update(value, weight)`` appends the value, unread, to a list (no device
    op: the tensor is already there); :meth:`result` reads the list in one
    transfer and does Avalanche's Python float arithmetic on it in the same
    order (``summed += value * weight``), so the result equals Avalanche's bit
    for bit. ``ratio=True`` (accuracy) takes a count and adds
    ``(count / weight) * weight``, as Avalanche's ``Accuracy`` does.
    """

    def __init__(self, ratio: bool = False):
        self.ratio = ratio
        self.summed = 0.0
        self.weight = 0.0
        self._values: list = []
        self._weights: list = []

    def update(self, value: torch.Tensor, weight: float) -> None:
        self._values.append(value.detach())
        self._weights.append(float(weight))

    def _fold(self) -> None:
        """Add the pending values to the Python sums (one host read for all of them)."""
        if not self._values:
            return
        try:
            values = torch.stack(self._values).tolist()
        except RuntimeError:  # values on different devices: read one by one
            values = [v.item() for v in self._values]
        for value, weight in zip(values, self._weights):
            value = float(value)
            if self.ratio:
                value = value / weight
            self.summed += value * weight
            self.weight += weight
        self._values, self._weights = [], []

    def result(self) -> float:
        self._fold()
        if self.weight == 0.0:
            return 0.0
        return self.summed / self.weight

    def reset(self) -> None:
        self.summed, self.weight = 0.0, 0.0
        self._values, self._weights = [], []


class DeviceAccuracy(Accuracy):
    """``Accuracy`` without a host read per update: three tensor ops per batch, summed at read time."""

    def __init__(self):
        self._mean_accuracy = DeviceMean(ratio=True)

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
        self._mean_accuracy.update(torch.sum(torch.eq(predicted_y, true_y)), len(true_y))


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
        # the mean of a 0-d loss is the loss itself: no op for the usual reduced loss
        self._mean_loss.update(loss if loss.dim() == 0 else torch.mean(loss), weight=patterns)


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
