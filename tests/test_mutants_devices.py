"""Tests that kill the device-move survivors of mutation testing (docs/testing.md).

On a CPU-only machine every ``.to(device)``, ``device=x.device`` or ``accuracy(..., self.device,
...)`` is a no-op, so a mutant that drops the device (``.to(None)``, ``device=None``) survives
the ordinary tests. Two tools make the moves observable here:

* a stand-in accelerator: :class:`FakeDevice`, a dispatch mode under which tensors made with
  ``device="meta"`` (or moved there) hold CPU data but report the ``meta`` device. As on CUDA, a
  tensor on it cannot meet a CPU tensor of one or more dimensions in an op (a 0-dim CPU tensor can,
  a CPU tensor can be indexed by CPU indices only), ``.item()`` reads it, and ``.to("cpu")``
  brings it back. A mutant that makes a tensor on the CPU instead of on its input's device then
  raises, or returns a tensor on the wrong device, where the real code returns the right values on
  the right device. (Plain ``meta`` tensors hold no data, so code that reads a value,
  ``isnan(...).any()`` or ``float(...)``, cannot run on them.)
* spies and plain meta models: the strategies' module-level ``accuracy`` is replaced by one that
  records the device it is given (and where the model is), and strategies built with an explicit
  device (``device="meta"`` where only shapes are computed: construction, moving a model, a meta
  model's training step, which refuses CPU batches) must pass that device on, to the inner phase
  strategies and to their models.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.functional.filter_pruning import prune_plan
from avalanche_sst.functional.losses import adaptive_weights
from avalanche_sst.functional.reinit import mean_abs_split, reinit_range
from avalanche_sst.functional.sparsity import select_smallest
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.models import resnet_cifar
from avalanche_sst.models.quantized_multitask import QuantizedMultiTaskModel
from avalanche_sst.plugins.edge_kt import EdgeKTPlugin
from avalanche_sst.strategies import ada_qpacknet, aod, multi_step_sst
from avalanche_sst.strategies.ada_qpacknet import TRAIN_COST, AdaQPackNet
from avalanche_sst.strategies.aod import AODStrategy, StudentPair
from avalanche_sst.strategies.multi_step_sst import MultiStepSST
from conftest import spread_gamma_resnet8, tiny_task_net, two_binary_tasks, two_same_class_parts

torch.set_num_threads(1)

aten = torch.ops.aten
META = torch.device("meta")
CPU = torch.device("cpu")
_INDEX_OPS = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}


# --------------------------------------------------------------------------------------------
# a stand-in accelerator: CPU data that reports the meta device
# --------------------------------------------------------------------------------------------
class OnDevice(torch.Tensor):
    """A tensor of the stand-in accelerator: its data (``inner``) is on the CPU, its device meta."""

    @staticmethod
    def __new__(cls, data: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, data.shape, strides=data.stride(),
                                                   storage_offset=data.storage_offset(), dtype=data.dtype,
                                                   device=META, requires_grad=data.requires_grad)

    def __init__(self, data: torch.Tensor):
        self.inner = data

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on an OnDevice tensor outside FakeDevice()")

    def __repr__(self) -> str:
        return f"OnDevice({self.inner!r})"


class FakeDevice(TorchDispatchMode):
    """Runs ops on the CPU data of :class:`OnDevice` tensors with CUDA's device rules."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        leaves = pytree.tree_leaves((args, kwargs))
        on = [t for t in leaves if isinstance(t, OnDevice)]
        cpu = [t for t in leaves if isinstance(t, torch.Tensor) and not isinstance(t, OnDevice)]
        if kwargs.get("device") is not None:  # a factory or a move: the device asked for
            to_device = torch.device(kwargs["device"]).type == "meta"
            if to_device:
                kwargs["device"] = CPU
        else:
            to_device = bool(on)
        if on and cpu and func not in (aten.copy_.default, aten._to_copy.default):
            if func in _INDEX_OPS:  # CUDA indexes its own tensors with CPU indices, not the reverse
                self_on = isinstance(args[0], OnDevice)
                values = args[2] if len(args) > 2 else None
                mixed = (not self_on and any(isinstance(t, OnDevice) for t in pytree.tree_leaves(args[1:]))) or (
                    self_on and isinstance(values, torch.Tensor) and not isinstance(values, OnDevice)
                    and values.dim() > 0)
            else:  # only 0-dim CPU tensors may meet device tensors
                mixed = any(t.dim() > 0 for t in cpu)
            if mixed:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found meta and cpu ({func})")
        wrappers = {id(t.inner): t for t in on}
        args, kwargs = pytree.tree_map(lambda t: t.inner if isinstance(t, OnDevice) else t, (args, kwargs))
        out = func(*args, **kwargs)
        if func is aten._local_scalar_dense.default:
            return out

        def wrap(t):
            if not isinstance(t, torch.Tensor):
                return t
            if id(t) in wrappers:  # an in-place op returns its (wrapped) input
                return wrappers[id(t)]
            return OnDevice(t) if to_device else t

        return pytree.tree_map(wrap, out)


def on_device(t: torch.Tensor) -> OnDevice:
    """A copy of ``t`` on the stand-in accelerator."""
    return OnDevice(t.detach().clone())


def data(t: torch.Tensor) -> torch.Tensor:
    """The CPU data of ``t`` (``t`` itself when it is a CPU tensor)."""
    return t.inner if isinstance(t, OnDevice) else t


def test_the_stand_in_device_keeps_cuda_s_rules() -> None:
    with FakeDevice():
        a = torch.zeros(3, device=META)
        assert isinstance(a, OnDevice) and a.device == META
        b = a + 1
        assert b.device == META and torch.equal(data(b), torch.ones(3))
        assert (b + torch.tensor(1.0)).device == META  # a 0-dim CPU tensor may meet it
        with pytest.raises(RuntimeError, match="same device"):
            b + torch.ones(3)
        with pytest.raises(RuntimeError, match="same device"):
            torch.zeros(3)[b.bool()]  # a CPU tensor indexed by device indices
        assert torch.equal(data(b[torch.tensor([True, False, True])]), torch.ones(2))
        c = b.to(CPU)
        assert type(c) is torch.Tensor and c.device == CPU and torch.equal(c, torch.ones(3))
        assert float(b.sum()) == 3.0


# --------------------------------------------------------------------------------------------
# functional/sparsity, functional/reinit, functional/losses, functional/filter_pruning
# --------------------------------------------------------------------------------------------
GAMMAS = [torch.tensor([0.5, -0.1, 0.3, 2.0, 0.05]), torch.tensor([1.0, -0.2, 0.7])]
SMALLEST_HALF = [torch.tensor([False, True, True, False, True]), torch.tensor([False, True, False])]


def test_select_smallest_makes_its_masks_on_the_device_of_each_layer() -> None:
    """select_smallest ranks on the first layer's device and returns each mask on its layer's
    device: the flat mask made on the CPU cannot be indexed by the device ranking, and the second
    layer's mask, left on the first one's device, would not be on the CPU."""
    assert [m.tolist() for m in select_smallest(GAMMAS, 0.5)] == [m.tolist() for m in SMALLEST_HALF]
    with FakeDevice():
        both = select_smallest([on_device(g) for g in GAMMAS], 0.5)
        mixed = select_smallest([on_device(GAMMAS[0]), GAMMAS[1]], 0.5)
    assert [m.device for m in both] == [META, META]
    assert [m.device for m in mixed] == [META, CPU]
    for masks in (both, mixed):
        assert [data(m).tolist() for m in masks] == [m.tolist() for m in SMALLEST_HALF]


def test_mean_abs_split_gathers_the_masks_on_the_device_of_the_factors() -> None:
    """Layers on two devices: the CPU layer's mask is moved to the first layer's device before the
    masks are joined (a CPU mask cannot join a device one)."""
    expected = ((0.1 + 0.3 + 0.05 + 0.2) / 4, (0.5 + 2.0 + 1.0 + 0.7) / 4)
    assert mean_abs_split(GAMMAS, 0.5) == pytest.approx(expected)
    with FakeDevice():
        got = mean_abs_split([on_device(GAMMAS[0]), GAMMAS[1]], 0.5)
    assert got == pytest.approx(expected)


def test_reinit_range_reads_device_factors_on_the_cpu() -> None:
    """Eq. (4)'s quantiles of |gamma| on a device: the values come to the CPU, where the CPU
    quantile levels are (torch.quantile refuses q on another device than its input)."""
    values = torch.linspace(0.0, 1.0, 11)
    assert reinit_range(values, 0.3, 0.1) == pytest.approx((0.4, 0.9))
    with FakeDevice():
        got = reinit_range(on_device(values), 0.3, 0.1)
    assert got == pytest.approx((0.4, 0.9))


@pytest.mark.parametrize("ce_1", [torch.tensor(1.0), 1.0])
def test_adaptive_weights_are_on_the_device_of_the_first_cross_entropy(ce_1) -> None:
    """Eq. (6) with L_CE^1 on the CPU and L_CE^2 on a device: both weights are on the CPU (c2 is
    moved to c1's device; left on its own, c2 / (c1 + c2) would land on the device)."""
    with FakeDevice():
        w1, w2 = adaptive_weights(ce_1, on_device(torch.tensor(3.0)))
    assert (w1.device, w2.device) == (CPU, CPU)
    assert (float(w1), float(w2)) == (0.25, 0.75)


def test_prune_plan_runs_the_teacher_on_the_device_of_its_parameters() -> None:
    """A CPU teacher given a batch on a device: prune_plan moves the batch to the teacher's
    device (the convolutions refuse device images with CPU weights), with the CPU plan's result."""
    torch.manual_seed(0)
    teacher = resnet_cifar(8, width=4, in_channels=1, num_classes=3)
    images = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = prune_plan(teacher, images, threshold=0.7)
    with FakeDevice():
        got = prune_plan(teacher, on_device(images), threshold=0.7)
    assert got == expected


# --------------------------------------------------------------------------------------------
# models/quantized_multitask
# --------------------------------------------------------------------------------------------
def _decoded_case():
    """Two 2x3 weights (``ref``) with the mask of 3 positions: one task stored as a 2-entry
    codebook with codes, one as its 3 fp32 values (codes None), and the weights they decode to."""
    ref = torch.ones(2, 3)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    quantized = [(torch.tensor([-0.5, 0.25]), torch.tensor([1, 0, 1], dtype=torch.uint8)),
                 (torch.tensor([-0.5, 0.25, 0.5]), None)]
    decoded = [[[0.25, 0.0, -0.5], [0.0, 0.25, 0.0]], [[-0.5, 0.0, 0.25], [0.0, 0.5, 0.0]]]
    return ref, mask, quantized, decoded


def test_decoded_weights_are_made_on_the_device_of_the_weights_they_replace() -> None:
    """_decoded fills a zero weight like ``ref`` at ``mask`` with the task's values: with the
    weights on a device and the codes on the CPU, and the reverse, the weights come out on the
    weights' device with the CPU values (the mask, codebook and values move to it)."""
    model = QuantizedMultiTaskModel(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)))
    ref, mask, quantized, decoded = _decoded_case()
    assert [w.tolist() for w in model._decoded([mask, mask], quantized, [ref, ref])] == decoded
    with FakeDevice():
        on_weights = model._decoded([mask, mask], quantized, [on_device(ref), on_device(ref)])
        on_codes = model._decoded([on_device(mask)] * 2,
                                  [(on_device(book), None if codes is None else on_device(codes))
                                   for book, codes in quantized], [ref, ref])
    assert [w.device for w in on_weights] == [META, META]
    assert [w.device for w in on_codes] == [CPU, CPU]
    for weights in (on_weights, on_codes):
        assert [data(w).tolist() for w in weights] == decoded


# --------------------------------------------------------------------------------------------
# plugins/edge_kt, strategies/multi_step_sst, strategies/aod, strategies/ada_qpacknet
# --------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by a spy to end a hook once what it checks is done."""


class _AccuracySpy:
    """Stands in for a strategy module's ``accuracy`` (same signature): records the device each
    call is given and the devices the model's tensors are on."""

    def __init__(self, monkeypatch, module, value: float = 0.5):
        self.devices: list = []
        self.model_devices: list = []
        self.value = value
        monkeypatch.setattr(module, "accuracy", self)

    def __call__(self, model, dataset, device="cpu", batch_size=1000):
        self.devices.append(device)
        self.model_devices.append(_devices(model))
        return self.value


def _devices(model: nn.Module) -> set:
    return {p.device for p in model.parameters()} | {b.device for b in model.buffers()}


@pytest.fixture(scope="module")
def parts():
    return two_same_class_parts()


@pytest.fixture(scope="module")
def tasks():
    return two_binary_tasks()


_resnet8 = spread_gamma_resnet8


def test_edge_kt_moves_the_teacher_to_the_strategy_s_device() -> None:
    teacher = resnet_cifar(8, width=2, in_channels=1)
    plugin = EdgeKTPlugin(teacher, train_only_last_convs=False)
    plugin.before_training_exp(SimpleNamespace(model=resnet_cifar(8, width=2, in_channels=1), device=META))
    try:
        assert _devices(teacher) == {META} and not teacher.training
    finally:
        plugin._hooks.close()


# --- strategies/multi_step_sst ----------------------------------------------------------------
def _multi_step(**kw):
    return MultiStepSST(model=_resnet8(), epochs_scratch=1, epochs_sst=1, epochs_aod=1, train_mb_size=32,
                        eval_mb_size=64, **kw)


def test_multi_step_sst_keeps_the_device_it_is_given() -> None:
    """The template would put a strategy given no device on the CPU."""
    assert _multi_step(device="meta").device == META
    assert _multi_step().device == CPU  # the default


def test_multi_step_sst_phases_run_on_its_device(parts) -> None:
    """Each phase's inner strategy is built on the outer strategy's device."""
    class Untrained(SupervisedTemplate):
        def train(self, *args, **kwargs):
            pass

    s = _multi_step(device="meta")
    s.sst_valid_dataset = None
    model = _resnet8()
    assert s._phase("scratch", parts.train_stream[0], model, 0.1, 1, strategy_cls=Untrained) is model
    assert s.last_phase_strategy.device == META


def test_multi_step_sst_diagnoses_accuracy_on_its_device(parts, monkeypatch) -> None:
    spy = _AccuracySpy(monkeypatch, multi_step_sst)
    s = _multi_step(device=torch.device("cpu"))
    s.sst_valid_dataset = parts.valid_stream[0].dataset
    s._diagnose_accuracy("result", _resnet8(), parts.train_stream[0])
    assert spy.devices == [CPU]
    assert [(e.tag, e.value) for e in s.sst_events] == [("diag/result_valid_acc", 0.5)]


def test_multi_step_sst_resumes_the_prepared_model_on_its_device() -> None:
    """load_state_dict builds the prepared model on the strategy's device (the resumed model is on
    the CPU), with the saved values."""
    s = _multi_step(device="meta")
    saved = _resnet8()
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(1.0)
    s.load_state_dict({"prepared": saved.state_dict(), "sst_epoch_counter": 3})
    assert _devices(s.prepared) == {META} and _devices(s.model) == {CPU}
    assert s.sst_epoch_counter == 3


# --- strategies/aod -------------------------------------------------------------------------
def _aod(**kw):
    model = _resnet8()
    return AODStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), train_mb_size=32,
                       train_epochs=1, eval_mb_size=64, evaluator=make_evaluator(), **kw)


def test_aod_puts_the_student_pair_on_its_device_before_the_reinit_diagnostic(parts, monkeypatch) -> None:
    """The two re-initialised students are made on the CPU and moved, as a pair, to the strategy's
    device before the re-initialisation diagnostic runs them there (the template's own move of
    the model comes later, in its ``_before_training_exp``)."""
    spy = _AccuracySpy(monkeypatch, aod)
    s = _aod(device="meta", valid_stream=parts.valid_stream, log_reinit_accuracy=True)
    s.experience = parts.train_stream[0]
    s._before_training_exp()
    assert spy.devices == [META, META] and spy.model_devices == [{META}, {META}]
    assert _devices(s.model) == {META} and len(s.model.students) == 2


def test_aod_evaluates_its_students_on_its_device(parts, monkeypatch) -> None:
    """The re-initialisation diagnostic, the choice of the student and the per-student evaluation
    all run the students on the strategy's device."""
    spy = _AccuracySpy(monkeypatch, aod)
    s = _aod(device=torch.device("cpu"), valid_stream=parts.valid_stream)
    s.experience = parts.train_stream[0]
    s.model = StudentPair(_resnet8(), _resnet8())
    s._log_reinit_accuracy()
    assert spy.devices == [CPU, CPU]
    spy.devices.clear()
    s._after_training_exp()
    assert spy.devices == [CPU, CPU] and s.valid_accuracies == [0.5, 0.5] and s.chosen == 0
    spy.devices.clear()
    s.eval(parts.test_stream[0])
    assert spy.devices == [CPU, CPU]


# --- strategies/ada_qpacknet ----------------------------------------------------------------
def _ada(bm, **kw):
    torch.manual_seed(0)
    return AdaQPackNet(model=tiny_task_net(), valid_stream=bm.valid_stream, population=2, search_epochs=1,
                       full_epochs=1, train_mb_size=8, eval_mb_size=64, **kw)


def test_ada_qpacknet_moves_the_model_to_its_device_before_the_search(tasks) -> None:
    s = _ada(tasks, device="meta")
    s.experience = tasks.train_stream[0]

    def stop(*args, **kwargs):
        raise _Stop

    s.model.available_masks = stop  # the capacity is read right after the move
    with pytest.raises(_Stop):
        s._before_training_exp()
    assert _devices(s.model) == {META}


def test_ada_qpacknet_short_training_feeds_its_device(tasks) -> None:
    """A candidate's short training moves each batch (images and labels) to the strategy's device,
    where the model is (a meta model refuses CPU inputs and CPU labels)."""
    s = _ada(tasks, device="meta")
    s.experience = tasks.train_stream[0]
    s.model.begin_task(0, s.model.available_masks(8))
    s.model.to(META)
    s._short_train(0, 1)
    assert s._pending_cost["train"] == pytest.approx(len(tasks.train_stream[0].dataset) * TRAIN_COST)


def test_ada_qpacknet_validates_on_its_device(tasks, monkeypatch) -> None:
    spy = _AccuracySpy(monkeypatch, ada_qpacknet, value=0.75)
    s = _ada(tasks, device=torch.device("cpu"))
    s.experience = tasks.train_stream[0]
    assert s._val_accuracy(0) == 0.75
    assert spy.devices == [CPU]


def test_ada_qpacknet_keeps_the_candidates_weights_on_the_cpu(tasks) -> None:
    """The search keeps each candidate's trained weights on the CPU (P_S copies of the net off the
    accelerator) and hands the winner's to the net's load_state_dict. (torch skips loading CPU
    values into meta parameters, so what is checked is the state handed over.)"""
    s = _ada(tasks, device="meta")
    s.experience = tasks.train_stream[0]
    net = s.model.net
    loaded, accs, load = [], iter([0.25, 0.75]), net.load_state_dict

    def short_train(task, epochs):  # "training" a candidate: a weight change that tells them apart
        with torch.no_grad():
            net[0].weight.add_(1.0)

    def spy(state, strict=True):
        loaded.append({k: (v.device, data(v).clone()) for k, v in state.items()})
        return load(state, strict=strict)

    s._short_train, s._val_accuracy, net.load_state_dict = short_train, lambda task: next(accs), spy
    with warnings.catch_warnings(), FakeDevice():
        warnings.simplefilter("ignore", UserWarning)  # torch's "copying into a meta parameter is a no-op"
        s.model.to(META)
        start = data(net[0].weight).clone()
        report = s._search(0, s.model.available_masks(8))
    assert report["chosen"] == 1 and report["candidate_accuracy"] == [0.25, 0.75]
    assert [{d for d, _ in state.values()} for state in loaded] == [{META}, {META}, {CPU}]
    assert torch.equal(loaded[0]["0.weight"][1], start) and torch.equal(loaded[1]["0.weight"][1], start)
    assert torch.equal(loaded[2]["0.weight"][1], start + 1.0)  # the second candidate: start + one "training"
