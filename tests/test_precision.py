"""ChannelsLastPlugin and AutocastPlugin (bfloat16 autocast runs on CPU too).

The tests that run oneDNN's channels-last or bfloat16 kernels are ``isolated`` (tests/conftest.py):
on a CPU path where a kernel crashes, the test fails with the signal and the suite goes on.
On a path where channels-last training is known to crash (the probe of avalanche_sst.cpu_path
fails, e.g. ONEDNN_MAX_CPU_ISA=AVX2 with torch 2.14.1), the plugin must refuse with a clear error.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst import cpu_path
from avalanche_sst.benchmarks import TensorImageDataset, same_class_accumulating
from avalanche_sst.cpu_path import UnsafeCpuPathError, channels_last_failure
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.models import resnet_cifar, scaling_factors
from avalanche_sst.plugins.msl import MSLPlugin
from avalanche_sst.plugins.precision import AutocastPlugin, ChannelsLastPlugin, keep_freed_memory, to_channels_last
from avalanche_sst.plugins.sst import SSTPlugin
from avalanche_sst.strategies import AODStrategy

ACC = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
LOSS = "Loss_Stream/eval_phase/test_stream/Task000"
CL = torch.channels_last


def tiny_model(seed: int = 0, channels: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return resnet_cifar(depth=8, num_classes=3, in_channels=channels, width=4)


def tiny_benchmark(per_class: int = 40, channels: int = 1):
    """3 classes of 8x8 images told apart by brightness (learnable in a few epochs)."""
    g = torch.Generator().manual_seed(123)
    labels = torch.arange(3).repeat_interleave(per_class)
    images = (labels.view(-1, 1, 1, 1) * 80
              + torch.randint(0, 60, (len(labels), channels, 8, 8), generator=g)).to(torch.uint8)
    test_labels = torch.arange(3).repeat_interleave(20)
    test_images = (test_labels.view(-1, 1, 1, 1) * 80
                   + torch.randint(0, 60, (len(test_labels), channels, 8, 8), generator=g)).to(torch.uint8)
    return same_class_accumulating(TensorImageDataset(images, labels), TensorImageDataset(test_images, test_labels),
                                   ratios=(1, 1), seed=0, validation_fraction=0.25, padding=1)


def strategy_for(model, plugins, epochs=2, lr=0.05):
    return SupervisedTemplate(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                              criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=epochs,
                              eval_mb_size=64, evaluator=make_evaluator(), plugins=plugins, eval_every=-1)


class Record(SupervisedPlugin):
    """Records what the model saw and returned, and the mini-batch output the criterion gets."""

    def __init__(self, model):
        super().__init__()
        self.out_dtypes, self.in_channels_last, self.criterion_dtypes = [], [], []
        model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.out_dtypes.append(output.dtype)
        # With C > 1 the two layouts differ (with C == 1 both checks hold for either).
        self.in_channels_last.append(args[0].is_contiguous(memory_format=CL) and not args[0].is_contiguous())

    def before_backward(self, strategy, **kwargs):
        self.criterion_dtypes.append(strategy.mb_output.dtype)


def autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


# --- ChannelsLastPlugin ----------------------------------------------------------


def test_to_channels_last_only_touches_4d_tensors():
    x = torch.randn(2, 3, 4, 5)
    assert to_channels_last(x).is_contiguous(memory_format=CL)
    y = torch.arange(3)
    assert to_channels_last(y) is y
    assert to_channels_last("not a tensor") == "not a tensor"


@pytest.mark.isolated
def test_channels_last_outputs_equal_the_default_layout():
    model = tiny_model(channels=3).eval()
    other = copy.deepcopy(model).to(memory_format=CL)
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
        out = other(x.contiguous(memory_format=CL))
        inner = other.conv1(x.contiguous(memory_format=CL))
    assert other.conv1.weight.is_contiguous(memory_format=CL) and not other.conv1.weight.is_contiguous()
    assert inner.is_contiguous(memory_format=CL) and not inner.is_contiguous()  # NHWC all the way
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.isolated
def test_channels_last_plugin_converts_model_and_inputs_and_matches_default_eval():
    bm = tiny_benchmark(channels=3)
    ref_model, cl_model = tiny_model(channels=3), tiny_model(channels=3)
    ref = strategy_for(ref_model, [])
    plugin = ChannelsLastPlugin()
    strat = strategy_for(cl_model, [plugin])
    record = Record(cl_model)
    strat.plugins.append(record)
    ref_result = ref.eval(bm.test_stream)
    result = strat.eval(bm.test_stream)
    assert cl_model.conv1.weight.is_contiguous(memory_format=CL)
    assert record.in_channels_last and all(record.in_channels_last)
    assert result[ACC] == ref_result[ACC]
    assert result[LOSS] == pytest.approx(ref_result[LOSS], abs=1e-5)


@pytest.mark.isolated
def test_channels_last_training_matches_default_training():
    bm = tiny_benchmark(channels=3)
    ref_model, cl_model = tiny_model(channels=3), tiny_model(channels=3)
    ref, strat = strategy_for(ref_model, []), strategy_for(cl_model, [ChannelsLastPlugin()])
    record = Record(cl_model)
    strat.plugins.append(record)
    optimizer_params = [id(p) for g in strat.optimizer.param_groups for p in g["params"]]
    if channels_last_failure() is not None:  # the crashing path: a clear error before any step
        with pytest.raises(UnsafeCpuPathError, match="ONEDNN_MAX_CPU_ISA=AVX"):
            strat.train(bm.train_stream[0], eval_streams=[])
        assert not cl_model.conv1.weight.is_contiguous(memory_format=CL) and not record.in_channels_last
        return
    for s in (ref, strat):
        torch.manual_seed(1)  # same shuffling and crops
        s.train(bm.train_stream[0], eval_streams=[])
    assert record.in_channels_last and all(record.in_channels_last)
    # The conversion happens in place: the optimizer still holds the model's parameters.
    assert [id(p) for p in cl_model.parameters()] == optimizer_params
    for (name, a), b in zip(ref_model.state_dict().items(), cl_model.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)


def test_channels_last_plugin_refuses_to_train_where_the_probe_fails(monkeypatch):
    monkeypatch.setattr(cpu_path, "channels_last_failure", lambda: "died with SIGABRT")
    monkeypatch.setattr(cpu_path, "cpu_path", lambda: {"aten_cpu_capability": "AVX2", "onednn_isa": "Intel AVX2",
                                                        "onednn_max_cpu_isa": None})
    bm = tiny_benchmark(channels=3)
    model = tiny_model(channels=3)
    before = copy.deepcopy(model.state_dict())
    strat = strategy_for(model, [ChannelsLastPlugin()])
    with pytest.raises(UnsafeCpuPathError) as raised:
        strat.train(bm.train_stream[0], eval_streams=[])
    message = str(raised.value)
    for part in ("ChannelsLastPlugin", "ATen AVX2, oneDNN Intel AVX2", "died with SIGABRT", f"torch {torch.__version__}",
                 "leave the channels-last option out", "ONEDNN_MAX_CPU_ISA=AVX "):
        assert part in message, (part, message)
    # refused before the first step: nothing converted, nothing trained
    assert not model.conv1.weight.is_contiguous(memory_format=CL)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def trained_aod(bm, plugin) -> AODStrategy:
    """One AOD epoch with ``plugin`` on experience 1, from a model whose |gamma| are spread out
    (as after SST; a fresh model's are all 1, which leaves eq. 4's re-init range empty)."""
    model = tiny_model()
    with torch.no_grad():
        for f in scaling_factors(model):
            f.bn.weight.copy_(torch.linspace(0.05, 1.5, f.bn.weight.numel()))
    aod = AODStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                      train_mb_size=16, train_epochs=1, evaluator=make_evaluator(), valid_stream=bm.valid_stream,
                      plugins=[plugin])
    aod.train(bm.train_stream[1], eval_streams=[])
    return aod


@pytest.mark.isolated
def test_channels_last_plugin_with_aod_and_sst():
    bm = tiny_benchmark()
    if channels_last_failure() is not None:
        with pytest.raises(UnsafeCpuPathError, match="channels-last training is not safe on this CPU path"):
            trained_aod(bm, ChannelsLastPlugin())
        return
    aod = trained_aod(bm, ChannelsLastPlugin())
    assert all(s.conv1.weight.is_contiguous(memory_format=CL) for s in aod.students)
    assert math.isfinite(float(aod.loss))
    sst_model = tiny_model()
    sst = strategy_for(sst_model, [ChannelsLastPlugin(), SSTPlugin()], epochs=1)
    sst.train(bm.train_stream[0], eval_streams=[])
    assert math.isfinite(float(sst.loss))


# --- AutocastPlugin ----------------------------------------------------------------


def test_autocast_plugin_rejects_non_float_dtype():
    with pytest.raises(ValueError, match="dtype"):
        AutocastPlugin(dtype=torch.int8)


@pytest.mark.isolated
def test_autocast_forward_is_bf16_and_criterion_float32():
    bm = tiny_benchmark()
    model = tiny_model()
    plugin = AutocastPlugin()  # device_type from the strategy: cpu
    strat = strategy_for(model, [plugin], epochs=1)
    record = Record(model)
    strat.plugins.append(record)
    strat.train(bm.train_stream[0], eval_streams=[])
    assert record.out_dtypes and all(d == torch.bfloat16 for d in record.out_dtypes)
    assert record.criterion_dtypes and all(d == torch.float32 for d in record.criterion_dtypes)
    assert math.isfinite(float(strat.loss))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    assert not autocast_enabled()  # the region is closed after every forward
    record.out_dtypes.clear()
    strat.eval(bm.test_stream)
    assert record.out_dtypes and all(d == torch.bfloat16 for d in record.out_dtypes)
    assert not autocast_enabled()


@pytest.mark.isolated
def test_autocast_training_is_finite_and_close_to_float32():
    bm = tiny_benchmark()
    results = {}
    for name, plugins in (("fp32", []), ("bf16", [AutocastPlugin(torch.bfloat16)])):
        model = tiny_model()
        strat = strategy_for(model, plugins, epochs=3)
        torch.manual_seed(1)
        strat.train(bm.train_stream[0], eval_streams=[])
        assert math.isfinite(float(strat.loss)), name
        results[name] = strat.eval(bm.test_stream)
    assert math.isfinite(results["bf16"][LOSS])
    assert results["fp32"][ACC] > 0.8  # the task is learnable in a few epochs
    assert results["bf16"][ACC] == pytest.approx(results["fp32"][ACC], abs=0.1)
    assert results["bf16"][LOSS] == pytest.approx(results["fp32"][LOSS], rel=0.25, abs=0.05)


@pytest.mark.isolated
def test_autocast_with_aod_and_msl_gives_finite_float32_losses():
    bm = tiny_benchmark()
    aod = trained_aod(bm, AutocastPlugin())
    assert aod.loss.dtype == torch.float32 and math.isfinite(float(aod.loss))
    assert all(math.isfinite(float(v)) for v in aod.loss_terms.values())
    msl_model = tiny_model()
    msl_plugin = MSLPlugin(valid_stream=bm.valid_stream)
    teacher_dtypes = []

    class TeacherDtype(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            msl_plugin.teacher.register_forward_hook(lambda m, a, out: teacher_dtypes.append(out.dtype))

    msl = strategy_for(msl_model, [AutocastPlugin(), msl_plugin, SSTPlugin(), TeacherDtype()], epochs=1)
    msl.train(bm.train_stream[1], eval_streams=[])
    assert msl.loss.dtype == torch.float32 and math.isfinite(float(msl.loss))
    assert all(math.isfinite(float(v)) for v in msl.loss_terms.values())
    # The teacher's forward runs in the student's precision; the validation passes in float32.
    assert torch.bfloat16 in teacher_dtypes
    assert not autocast_enabled()


def test_autocast_explicit_device_type_and_recovery_after_a_failed_forward():
    plugin = AutocastPlugin(device_type="cpu")

    class S:  # the minimum the plugin reads
        device = torch.device("cpu")
        mb_output = None

    s = S()
    plugin.before_forward(s)
    assert autocast_enabled()
    plugin.before_forward(s)  # the previous forward raised: its region is closed first
    plugin.after_forward(s)
    assert not autocast_enabled()


# --- keep_freed_memory -------------------------------------------------------------


def test_keep_freed_memory_toggles_and_big_tensors_still_work():
    # In a child process: mallopt is process-wide and also turns off glibc's dynamic mmap
    # threshold for good, which must not leak into the other tests.
    import subprocess
    import sys

    code = """
import platform, torch
from avalanche_sst.plugins.precision import keep_freed_memory
applied = keep_freed_memory(True)
assert isinstance(applied, bool)
if platform.libc_ver()[0] == "glibc":
    assert applied
x = torch.ones(64, 1024, 1024)  # 256 MiB, from the heap now rather than a fresh mmap
assert float(x[-1, -1, -1] + x.sum() / x.numel()) == 2.0
del x
assert keep_freed_memory(False) == applied
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
