"""Tests that kill mutation survivors of strategies/multi_step_sst (docs/testing.md): a phase's logged
loss and the parent's epoch counter by hand, what each phase is given (the SST plugin's and the MSL
plugin's arguments, AOD's switches, the fine-tuning ablation's eq. 4 re-initialisation from the seed's
draw), and the checkpoint round trip of the prepared model.

The phases' arguments are read by replacing ``_phase`` on the instance with a recorder, so no phase
trains here unless the test says so."""

from __future__ import annotations

import copy
import io
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from avalanche.core import SupervisedPlugin

from avalanche_sst.metrics import make_evaluator
from avalanche_sst.metrics.validation import accuracy
from avalanche_sst.plugins.msl import MSLPlugin
from avalanche_sst.plugins.reinit import diverse_reinit_
from avalanche_sst.functional.sparsity import DEFAULT_CUT_FRACTION, DEFAULT_TARGET_RATIO
from avalanche_sst.plugins.sst import DEFAULT_LAM, DEFAULT_ZERO_TOL, SSTPlugin
from avalanche_sst.strategies.aod import AODStrategy
from avalanche_sst.strategies.multi_step_sst import MultiStepSST, _PhaseLog

from conftest import spread_gamma_resnet8, two_same_class_parts

torch.set_num_threads(1)


_model = spread_gamma_resnet8


@pytest.fixture(scope="module")
def bm():
    return two_same_class_parts()


def _strategy(bm, model=None, **kw) -> MultiStepSST:
    args = dict(valid_stream=bm.valid_stream, epochs_scratch=1, epochs_sst=2, epochs_aod=1, train_mb_size=16,
                eval_mb_size=64, evaluator=make_evaluator())
    args.update(kw)
    return MultiStepSST(model=model if model is not None else _model(), **args)


class _Recorder:
    """Stands in for ``MultiStepSST._phase``: records each call and returns the model unchanged."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, exp, model, lr, epochs, plugins=(), strategy_cls=None, **strategy_kwargs):
        self.calls.append(SimpleNamespace(name=name, exp=exp, model=model, lr=lr, epochs=epochs,
                                          plugins=list(plugins), strategy_cls=strategy_cls, kwargs=strategy_kwargs))
        return model


def _recording(strategy) -> _Recorder:
    recorder = _Recorder()
    strategy._phase = recorder
    return recorder


# --- a phase's log ------------------------------------------------------------------------------------


def test_phase_log_averages_the_epochs_losses_and_counts_epochs_on_the_parent():
    parent = SimpleNamespace(sst_epoch_counter=5)
    inner = SimpleNamespace(sst_parent=parent, loss=None, experience=SimpleNamespace(current_experience=2))
    log = _PhaseLog(parent, "sst")
    log.before_training_exp(inner)
    for losses in ((1.0, 2.0, 4.5), (3.0,)):
        log.before_training_epoch(inner)
        for value in losses:
            inner.loss = torch.tensor(value)
            log.after_training_iteration(inner)
        log.after_training_epoch(inner)
    events = [(e.tag, e.value, e.step) for e in parent.sst_events]
    # phase marker at the experience; each epoch's mean loss at the counter before it moves on
    assert events == [("phase/sst", 2.0, 5), ("sst/loss", 2.5, 5), ("sst/loss", 3.0, 6)]
    assert parent.sst_epoch_counter == 7


# --- what each phase is given ----------------------------------------------------------------------


def test_the_sst_phase_gets_the_strategys_sst_and_msl_arguments(bm):
    s = _strategy(bm, target_ratio=0.4, lam=2e-4, cut_fraction=0.5, zero_tol=1e-3, proximal=True,
                  beta=50.0, msl_temperature=2.0, update_teacher=False, lr_sst=0.05, lr_msl=0.02, epochs_sst=3)
    recorder = _recording(s)
    start = _model(1)
    for with_msl in (False, True):
        assert s._sst_phase(bm.train_stream[1], start, with_msl=with_msl) is start
    plain, with_msl = recorder.calls
    assert (plain.name, plain.lr, plain.epochs, with_msl.name, with_msl.lr, with_msl.epochs) == (
        "sst", 0.05, 3, "sst_msl", 0.02, 3)
    # MSL and SST act on different things (the criterion and teacher; the factors' gradients): any order
    by_type = {type(p): p for p in with_msl.plugins}
    assert [type(p) for p in plain.plugins] == [SSTPlugin] and by_type.keys() == {MSLPlugin, SSTPlugin}
    assert len(with_msl.plugins) == 2 and s.last_msl is by_type[MSLPlugin]
    for sst in (plain.plugins[0], by_type[SSTPlugin]):
        assert (sst.target_ratio, sst.lam, sst.cut_fraction, sst.zero_tol, sst.log_prefix) == (
            0.4, 2e-4, 0.5, 1e-3, "SST")
        assert sst.selective is True and sst.proximal is True
    msl = by_type[MSLPlugin]
    assert (msl.beta, msl.temperature, msl.update_teacher) == (50.0, 2.0, False)
    bst = _strategy(bm, sparsity="bst", update_teacher=True)
    recorder = _recording(bst)
    bst._sst_phase(bm.train_stream[1], start, with_msl=True)
    (call,) = recorder.calls
    by_type = {type(p): p for p in call.plugins}
    assert call.name == "bst_msl" and by_type[SSTPlugin].selective is False
    assert by_type[MSLPlugin].update_teacher is True


@pytest.mark.parametrize("flag", [True, False])
def test_the_aod_phase_gets_every_switch(bm, flag):
    s = _strategy(bm, alpha=0.3, target_ratio=0.4, margins=(0.05, 0.15), reinit=flag, adaptive_weights=flag,
                  use_kd=flag, use_cr=flag, cr_detach_clean=not flag, reinit_range_scope="layer",
                  diagnostics=flag, seed=7, lr_aod=0.003, epochs_aod=2)
    recorder = _recording(s)
    prepared = _model(1)
    assert s._new_data_phase(bm.train_stream[1], prepared) is prepared
    (call,) = recorder.calls
    assert (call.name, call.model, call.lr, call.epochs, call.strategy_cls) == ("aod", prepared, 0.003, 2, AODStrategy)
    expected = dict(alpha=0.3, target_ratio=0.4, margins=(0.05, 0.15), reinit=flag, adaptive=flag, use_kd=flag,
                    use_cr=flag, cr_detach_clean=not flag, reinit_range_scope="layer", log_reinit_accuracy=flag,
                    seed=7, eval_students=False)
    assert call.kwargs == expected
    assert all(call.kwargs[k] is v for k, v in expected.items() if isinstance(v, bool))


def test_fine_tuning_re_initialises_with_the_first_margin_from_the_seeds_draw(bm):
    s = _strategy(bm, new_data="finetune", target_ratio=0.4, margins=(0.05, 0.15), reinit_range_scope="layer",
                  seed=7, lr_aod=0.003, epochs_aod=2)
    s.sst_valid_dataset = bm.valid_stream[1].dataset
    recorder = _recording(s)
    prepared = _model(1)
    expected = copy.deepcopy(prepared)
    diverse_reinit_(expected, 0.4, 0.05, torch.Generator().manual_seed(7 * 1000 + 1), "layer")
    s._new_data_phase(bm.train_stream[1], prepared)
    (call,) = recorder.calls
    assert (call.name, call.lr, call.epochs, call.model) == ("finetune", 0.003, 2, prepared)
    got = prepared.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.state_dict().items())
    diag = [(e.tag, e.value, e.step) for e in s.sst_events if e.tag.startswith("diag/")]
    assert diag == [("diag/student1_reinit_valid_acc", accuracy(expected, bm.valid_stream[1].dataset), 1)]


# --- checkpoint -------------------------------------------------------------------------------------


def test_the_prepared_model_round_trips_through_a_weights_only_checkpoint(bm):
    s = _strategy(bm)
    s.prepared, s.sst_epoch_counter = _model(1), 7
    buffer = io.BytesIO()
    torch.save(s.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"prepared", "sst_epoch_counter"}

    resumed = _strategy(bm, model=_model(2))
    model_before = copy.deepcopy(resumed.model.state_dict())
    resumed.load_state_dict(state)
    assert resumed.sst_epoch_counter == 7 and resumed.prepared is not resumed.model
    prepared, expected = resumed.prepared.state_dict(), s.prepared.state_dict()
    assert prepared.keys() == expected.keys() and all(torch.equal(prepared[k], expected[k]) for k in expected)
    model_after = resumed.model.state_dict()
    assert all(torch.equal(model_after[k], v) for k, v in model_before.items())  # the model is not the copy

    s.prepared = None
    assert s.state_dict() == {"prepared": None, "sst_epoch_counter": 7}
    resumed.load_state_dict({"prepared": None})  # an older checkpoint without the counter
    assert resumed.prepared is None and resumed.sst_epoch_counter == 0


# --- a phase's inner strategy -------------------------------------------------------------------------


def test_a_phase_trains_an_inner_strategy_built_from_the_outer_ones_settings(bm):
    seen = []

    class Inner(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            group = strategy.optimizer.param_groups[0]
            seen.append((strategy.train_epochs, strategy.train_mb_size, strategy.eval_mb_size, strategy.device,
                         type(strategy._criterion), group["momentum"], group["weight_decay"],
                         strategy.sst_parent, strategy.sst_valid_dataset, strategy.clock.train_exp_counter,
                         strategy.evaluator.loggers))

    s = _strategy(bm, momentum=0.8, weight_decay=1e-3, train_mb_size=32, eval_mb_size=50)
    s.sst_valid_dataset = bm.valid_stream[1].dataset
    model = _model(1)
    result = s._phase("finetune", bm.train_stream[1], model, 0.07, 2, plugins=[Inner()])
    assert result is model and s.last_phase_strategy.model is model and s.phase_history == [(1, "finetune")]
    # ... and a quiet evaluator: the phase logs through the outer strategy, not Avalanche's default loggers
    expected = (2, 32, 50, torch.device("cpu"), nn.CrossEntropyLoss, 0.8, 1e-3, s, bm.valid_stream[1].dataset, 1, [])
    assert seen == [expected, expected]
    optimizer = s._optimizer(model, 0.07)
    group = optimizer.param_groups[0]
    assert type(optimizer) is torch.optim.SGD and (group["lr"], group["momentum"], group["weight_decay"]) == (
        0.07, 0.8, 1e-3)


def test_the_last_experience_is_known_from_the_argument_or_the_stream(bm):
    first, last = bm.train_stream[0], bm.train_stream[1]
    s = _strategy(bm)
    assert (s._is_last(first), s._is_last(last)) == (False, True)  # the stream's length, 2
    s.num_experiences = 1
    assert s._is_last(first) is True  # the argument wins over the stream
    s.num_experiences = None
    assert s._is_last(SimpleNamespace(current_experience=5)) is False  # no stream, no count: never the last


# --- the steps (Fig. 1) -------------------------------------------------------------------------------


def _shares_no_tensor(a: nn.Module, b: nn.Module) -> bool:
    return {id(t) for t in a.state_dict(keep_vars=True).values()}.isdisjoint(
        id(t) for t in b.state_dict(keep_vars=True).values())


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_each_step_starts_from_the_prepared_model_and_prepares_on_a_copy(bm):
    s = _strategy(bm)
    recorder = _recording(s)
    model = s.model
    s.train(bm.train_stream[0])
    scratch, sst = recorder.calls
    assert (scratch.name, scratch.model, sst.name) == ("scratch", model, "sst") and s.model is model
    # the preparation trains a deep copy: the step's result is left as it was evaluated
    assert s.prepared is sst.model and sst.model is not model and _shares_no_tensor(sst.model, model)
    assert s.sst_valid_dataset is bm.valid_stream[0].dataset
    prepared = s.prepared
    s.train(bm.train_stream[1])
    aod = recorder.calls[2]
    assert aod.name == "aod" and aod.model is prepared  # the new part starts from the SST output
    assert s.model is prepared and s.prepared is None and len(recorder.calls) == 3  # nothing after the last


def test_without_a_prepared_model_a_step_starts_from_a_copy_of_the_result(bm):
    s = _strategy(bm, valid_stream=None, use_msl=False)
    recorder = _recording(s)
    s.train(bm.train_stream[0])
    assert s.sst_valid_dataset is None  # no validation stream: no slice
    s.prepared = None  # e.g. resumed from a checkpoint without one
    result = s.model
    s.train(bm.train_stream[1])
    aod = recorder.calls[2]
    assert aod.name == "aod" and aod.model is not result and _shares_no_tensor(aod.model, result)
    assert _same_weights(aod.model, result)


# --- the constructor ----------------------------------------------------------------------------------


def test_defaults_are_the_papers():
    s = MultiStepSST(model=_model())
    assert s.epochs == {"scratch": 10, "sst": 5, "aod": 5}
    assert s.lrs == {"scratch": 0.1, "sst": 0.1, "aod": 0.001, "msl": 0.1}  # lr_msl None: lr_sst
    assert (s.momentum, s.weight_decay, s.margins, s.alpha, s.beta, s.msl_temperature) == (
        0.9, 5e-4, (0.1, 0.2), 0.5, 1000.0, 1.0)
    assert s.sst_args == dict(target_ratio=DEFAULT_TARGET_RATIO, lam=DEFAULT_LAM, cut_fraction=DEFAULT_CUT_FRACTION,
                              zero_tol=DEFAULT_ZERO_TOL, selective=True, proximal=False)
    flags = (s.use_msl, s.update_teacher, s.reinit, s.adaptive_weights, s.use_kd, s.use_cr, s.cr_detach_clean,
             s.diagnostics, s.sst_args["selective"], s.sst_args["proximal"])
    assert all(a is b for a, b in zip(flags, (True,) * 6 + (False, True, True, False)))
    assert (s.new_data, s.seed, s.reinit_range_scope, s.train_mb_size, s.eval_mb_size, s.device) == (
        "aod", 0, "global", 128, 1000, torch.device("cpu"))
    assert (s.valid_stream, s.num_experiences, s.phase_plugins, s.prepared, s.sst_epoch_counter) == (
        None, None, [], None, 0)
    assert (s.phase_history, s.last_phase_strategy, s.last_msl, s.target_ratio) == ([], None, None,
                                                                                   DEFAULT_TARGET_RATIO)
    group = s.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], s.train_epochs, s.eval_every) == (
        0.1, 0.9, 5e-4, 1, -1)
    assert type(s._criterion) is nn.CrossEntropyLoss


def test_every_argument_is_kept(bm):
    marker = SupervisedPlugin()
    phase_plugin = SupervisedPlugin()
    s = MultiStepSST(model=_model(), valid_stream=bm.valid_stream, num_experiences=3, epochs_scratch=2,
                     epochs_sst=3, epochs_aod=4, lr_scratch=0.2, lr_sst=0.3, lr_aod=0.4, lr_msl=0.5, momentum=0.7,
                     weight_decay=1e-3, target_ratio=0.4, lam=2e-4, cut_fraction=0.5, zero_tol=1e-3,
                     margins=(0.05, 0.15), alpha=0.3, beta=50.0, msl_temperature=2.0, sparsity="bst", use_msl=False,
                     update_teacher=False, reinit=False, diverse_reinit=False, new_data="finetune",
                     adaptive_weights=False, use_kd=False, use_cr=False, seed=9, reinit_range_scope="layer",
                     proximal=True, cr_detach_clean=True, diagnostics=False, train_mb_size=7, eval_mb_size=11,
                     plugins=[marker], phase_plugins=[phase_plugin])
    assert (s.valid_stream, s.num_experiences, s.epochs) == (bm.valid_stream, 3, {"scratch": 2, "sst": 3, "aod": 4})
    assert s.lrs == {"scratch": 0.2, "sst": 0.3, "aod": 0.4, "msl": 0.5}
    assert (s.momentum, s.weight_decay, s.alpha, s.beta, s.msl_temperature, s.seed) == (0.7, 1e-3, 0.3, 50.0, 2.0, 9)
    assert s.margins == (0.05, 0.05)  # no diverse re-init: both students get the first margin
    assert s.sst_args == dict(target_ratio=0.4, lam=2e-4, cut_fraction=0.5, zero_tol=1e-3, selective=False,
                              proximal=True)
    flags = (s.use_msl, s.update_teacher, s.reinit, s.adaptive_weights, s.use_kd, s.use_cr, s.cr_detach_clean,
             s.diagnostics)
    assert all(a is b for a, b in zip(flags, (False,) * 6 + (True, False)))
    assert (s.new_data, s.reinit_range_scope, s.train_mb_size, s.eval_mb_size) == ("finetune", "layer", 7, 11)
    assert s.phase_plugins == [phase_plugin] and marker in s.plugins
    group = s.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.2, 0.7, 1e-3)
    assert MultiStepSST(model=_model(), margins=(0.05, 0.15)).margins == (0.05, 0.15)


def test_constructor_messages_are_exact_and_boundaries_are_allowed():
    model = _model()
    lr_hint = " (paper: 0.1 from scratch and for SST, 0.001 for AOD)"
    cases = [
        (dict(sparsity="l1"), "sparsity must be one of ('sst', 'bst'), got 'l1'"),
        (dict(new_data="lwf"), "new_data must be one of ('aod', 'finetune'), got 'lwf'"),
        (dict(reinit_range_scope="model"),
         "reinit_range_scope must be one of ('global', 'layer') (paper: 'global'), got 'model'"),
        (dict(target_ratio=1.0), f"target_ratio must be a number in the open interval (0, 1) (paper default "
                                 f"{DEFAULT_TARGET_RATIO}), got 1.0"),
        *[(dict(**{name: 0}), f"{name} must be >= 1, got 0")
          for name in ("epochs_scratch", "epochs_sst", "epochs_aod")],
        *[(dict(**{name: 0.0}), f"{name} must be a positive learning rate, got 0.0{lr_hint}")
          for name in ("lr_scratch", "lr_sst", "lr_aod", "lr_msl")],
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            MultiStepSST(model=model, **kw)
    with pytest.raises(ValueError, match=r"^margin must be a number with 0 <= margin < 1"):
        MultiStepSST(model=model, target_ratio=0.5, margins=(0.1, 0.3))
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(ValueError, match=r"^MultiStepSST\(use_msl=True\) needs a model with residual blocks"):
        MultiStepSST(model=flat)
    assert MultiStepSST(model=flat, use_msl=False).use_msl is False  # MSL alone needs the blocks
    no_bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(ValueError, match=r"^MultiStepSST needs a model with BatchNorm2d layers"):
        MultiStepSST(model=no_bn, use_msl=False)
    small = MultiStepSST(model=model, epochs_scratch=1, epochs_sst=1, epochs_aod=1, lr_scratch=1e-9, lr_sst=1e-9,
                         lr_aod=1e-9, lr_msl=1e-9)
    assert small.epochs == {"scratch": 1, "sst": 1, "aod": 1}


def test_the_evaluator_and_other_avalanche_arguments_reach_the_outer_strategy():
    from avalanche.training.templates.base_sgd import PeriodicEval

    evaluator = make_evaluator()
    s = MultiStepSST(model=_model(), evaluator=evaluator, peval_mode="iteration")
    assert s.evaluator is evaluator
    (periodic,) = [p for p in s.plugins if isinstance(p, PeriodicEval)]
    assert periodic.peval_mode == "iteration"
    # none given: Avalanche's default evaluator, with its accuracy and loss metrics (not an empty one)
    default = MultiStepSST(model=_model()).evaluator
    assert default is not evaluator and len(default.metrics) > 0
