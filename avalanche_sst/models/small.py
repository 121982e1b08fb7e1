"""Small models without BatchNorm, and multi-head conversion.

Avalanche's PackNet (Mallya & Lazebnik, CVPR 2018; ``PackNetModel`` /
``PackNetPlugin``) prunes and freezes the weights of ``Linear`` and ``Conv``
layers per task and refuses normalisation layers (their running statistics
would be shared by all tasks), so its baseline runs need models made of
Linear, Conv2d, ReLU, pooling and Flatten only: :func:`mlp` and
:func:`small_cnn`. Both name their last layer ``classifier`` (an
``nn.Linear``), which :func:`multi_head` turns into Avalanche's
``MultiHeadClassifier`` for task-incremental runs.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import nn


class MLP(nn.Module):
    """Flatten, then ``Linear-ReLU`` per hidden layer, then ``classifier``."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int):
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class SmallCNN(nn.Module):
    """``[Conv3x3-ReLU-MaxPool2]`` x len(widths), global average pooling, ``classifier``.

    Works on any input size of at least ``2 ** (len(widths) - 1)`` pixels a side.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def _check_widths(name: str, widths: Sequence[int], allow_empty: bool) -> list[int]:
    widths = list(widths)
    if (not widths and not allow_empty) or any(
        isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths
    ):
        raise ValueError(f"{name} must list positive ints (layer widths), got {widths}")
    return widths


def mlp(in_features: int, hidden: Sequence[int] = (256,), num_classes: int = 10) -> MLP:
    """A BatchNorm-free MLP; ``hidden=()`` gives a linear classifier."""
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise ValueError(f"in_features must be a positive int (channels * height * width), got {in_features!r}")
    return MLP(in_features, _check_widths("hidden", hidden, allow_empty=True), num_classes)


def small_cnn(in_channels: int = 3, widths: Sequence[int] = (32, 64, 128), num_classes: int = 10) -> SmallCNN:
    """A BatchNorm-free CNN (about 94k parameters with the default widths)."""
    return SmallCNN(in_channels, _check_widths("widths", widths, allow_empty=False), num_classes)


def multi_head(model: nn.Module, classifier_name: Optional[str] = None) -> nn.Module:
    """``model`` with its last ``nn.Linear`` replaced by a ``MultiHeadClassifier``.

    Uses Avalanche's ``as_multitask``: the result takes ``(x, task_labels)``,
    and Avalanche strategies grow one head per new task label in
    ``model_adaptation`` (head size = the classes of that task's first
    experience); the first head starts from ``model``'s classifier weights.
    ``classifier_name`` defaults to ``fc`` when the model has one (ResNets),
    else ``classifier``.
    A model resumed from a checkpoint needs its heads grown first (one
    ``adaptation`` per trained experience) before ``load_state_dict``.
    """
    from avalanche.models import as_multitask

    if classifier_name is None:  # our ResNets call it `fc`, the small models `classifier`
        classifier_name = "fc" if isinstance(getattr(model, "fc", None), nn.Linear) else "classifier"
    if not isinstance(getattr(model, classifier_name, None), (nn.Linear, nn.Sequential)):
        raise ValueError(
            f"multi_head needs the model's classifier layer under the attribute {classifier_name!r} "
            "(an nn.Linear, or an nn.Sequential ending in one); pass classifier_name=<its attribute name>"
        )
    return as_multitask(model, classifier_name)
