"""The BatchNorm-free MLP and CNN, their build_model names, and multi_head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avalanche.models import MultiHeadClassifier
from avalanche.models.dynamic_modules import avalanche_model_adaptation
from avalanche.models.packnet import PackNetModel

from avalanche_sst.benchmarks import TensorImageDataset, task_incremental
from avalanche_sst.models import MODEL_NAMES, build_model, mlp, multi_head, small_cnn


def three_tasks_of_three_classes():
    ys = torch.arange(9).repeat(2)
    images = torch.zeros(len(ys), 1, 8, 8, dtype=torch.uint8)
    data = TensorImageDataset(images, ys)
    return task_incremental(data, data, classes_per_step=3, augment=False)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mlp_layers_and_parameter_count():
    model = build_model("mlp-16-8", num_classes=4, in_channels=1, image_size=8)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 16), (16, 8), (8, 4)]
    assert n_params(model) == (64 * 16 + 16) + (16 * 8 + 8) + (8 * 4 + 4)
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 4)
    default = build_model("MLP", num_classes=10, in_channels=3, image_size=4)
    assert default.classifier.in_features == 256 and default.features[1].in_features == 48


def test_mlp_without_hidden_layers_is_a_linear_map():
    model = mlp(6, hidden=(), num_classes=2)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 2], [0, 0, 0, 0, -1, 0]]))
        model.classifier.bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.arange(6.0).view(1, 1, 2, 3)  # flattened: 0 1 2 3 4 5
    assert model(x).tolist() == [[0 + 2 * 5 + 0.5, -4.0]]


def test_cnn_layers_and_parameter_count():
    model = build_model("cnn", num_classes=10, in_channels=3)
    assert n_params(model) == (3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (128 * 10 + 10)
    small = build_model("cnn-4-8", num_classes=3, in_channels=1)
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 8)]
    for size in (8, 32):  # global pooling: any input size
        assert small(torch.zeros(2, 1, size, size)).shape == (2, 3)


@pytest.mark.parametrize("name", ["mlp", "mlp-32", "cnn", "cnn-4-8"])
def test_no_normalisation_and_packnet_wraps_them(name):
    model = build_model(name, num_classes=3, in_channels=1, image_size=8)
    assert not any(hasattr(m, "running_mean") for m in model.modules())
    wrapped = PackNetModel(model)  # raises on any normalisation layer
    out = wrapped(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="norms"):
        PackNetModel(build_model("resnet8-w4", num_classes=3, in_channels=1))


@pytest.mark.parametrize("call, match", [
    (lambda: build_model("mlp", 10, 1), "pass image_size"),
    (lambda: mlp(0, (8,), 2), "in_features must be a positive int"),
    (lambda: mlp(8, (8, 0), 2), "hidden must list positive ints"),
    (lambda: small_cnn(1, (), 2), "widths must list positive ints"),
    (lambda: build_model("mlp-0", 10, 1, image_size=8), "hidden must list positive ints"),
    (lambda: build_model("cnnx", 10, 1), "unknown model name"),
    (lambda: multi_head(nn.Sequential(nn.Linear(2, 2))), "classifier_name"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_names_are_listed():
    assert {"mlp", "cnn", "mlp-<h1>[-<h2>...]", "cnn-<w1>[-<w2>...]"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("name, attr", [("mlp-8", "classifier"), ("cnn-4", "classifier"), ("resnet8-w4", "fc")])
def test_multi_head_keeps_the_first_head_and_takes_task_labels(name, attr):
    torch.manual_seed(0)
    single = build_model(name, num_classes=3, in_channels=1, image_size=8)
    old = getattr(single, attr)
    old_weight, old_bias = old.weight.detach().clone(), old.bias.detach().clone()
    x = torch.randn(4, 1, 8, 8)
    single.eval()
    with torch.no_grad():
        expected = single(x)
    model = multi_head(single)
    head = getattr(model, attr)
    assert isinstance(head, MultiHeadClassifier)
    first = head.classifiers["0"].classifier
    assert torch.equal(first.weight, old_weight) and torch.equal(first.bias, old_bias)
    # As a strategy does before training: the head of task 0 learns its 3 classes.
    avalanche_model_adaptation(model, three_tasks_of_three_classes().train_stream[0])
    model.eval()
    with torch.no_grad():
        out = model(x, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(out, expected, atol=1e-6)  # task 0 = the original model


def test_build_model_multi_head_flag():
    model = build_model("cnn-4", num_classes=2, in_channels=1, multi_head=True)
    assert isinstance(model.classifier, MultiHeadClassifier)
    assert not isinstance(build_model("cnn-4", num_classes=2, in_channels=1).classifier, MultiHeadClassifier)
