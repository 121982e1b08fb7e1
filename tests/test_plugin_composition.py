"""Our methods composed with Avalanche's own plugins and strategies: they say when they do
nothing, and the errors they raise name the fix."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch
from avalanche.training.plugins import EarlyStoppingPlugin

from avalanche_sst.benchmarks.scenarios import task_incremental
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet
from conftest import make_images
from test_ada_qpacknet import tiny_net


# --- Ada-QPacknet + EarlyStoppingPlugin ----------------------------------------------------


def _ada_with_early_stopping(**kw):
    torch.manual_seed(0)
    bm = task_incremental(make_images(12, seed=0, classes=4), make_images(4, seed=1, classes=4),
                          classes_per_step=2, seed=0, validation_fraction=0.25, augment=False)
    strategy = AdaQPackNet(model=tiny_net(), valid_stream=bm.valid_stream, population=2, search_epochs=1,
                           full_epochs=1, train_mb_size=16, eval_mb_size=64, eval_every=1,
                           plugins=[EarlyStoppingPlugin(patience=1, val_stream_name="valid_stream")], **kw)
    return bm, strategy


def test_ada_qpacknet_early_stopping_error_names_unseen_tasks_zeros_and_the_fix_works():
    bm, strategy = _ada_with_early_stopping()
    # Avalanche's periodic evaluation runs before the task is trained.
    with pytest.raises(ValueError, match='task label 0 was never trained.*unseen_tasks="zeros"'):
        strategy.train(bm.train_stream[0], eval_streams=[bm.valid_stream])
    bm, strategy = _ada_with_early_stopping(unseen_tasks="zeros")
    strategy.train(bm.train_stream[0], eval_streams=[bm.valid_stream])
    assert strategy.model.trained_tasks == [0]


# --- SSTPlugin / ReinitPlugin in a phase too short to free Target_r of the factors ---------

from avalanche.core import SupervisedPlugin  # noqa: E402
from avalanche.training import EWC, LwF  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_sst.metrics import make_evaluator  # noqa: E402
from avalanche_sst.models import scaling_factors  # noqa: E402
from avalanche_sst.plugins import FiniteLossGuard, NonFiniteLossError, ReinitPlugin, SSTPlugin  # noqa: E402
from avalanche_sst.plugins.guard import penalty_curvature, sgd_stability_limit  # noqa: E402
from test_sst_framework import fake_strategy, set_gammas, tiny_benchmark, tiny_model  # noqa: E402


def _gammas(model) -> torch.Tensor:
    return torch.cat([f.bn.weight.detach().flatten() for f in scaling_factors(model)])


def test_sst_warns_once_with_the_numbers_when_the_phase_ends_short_of_target():
    model = tiny_model()
    n = _gammas(model).numel()  # 84 factors; Target_r 0.3 -> floor(25.2 + 0.5) = 25
    values = torch.linspace(0.5, 1.0, n)
    values[:10] = 0.0  # 10 freed, 15 short
    set_gammas(model, values)
    plugin, strategy = SSTPlugin(target_ratio=0.3), fake_strategy(model)
    plugin.before_training_exp(strategy)
    with pytest.warns(UserWarning, match=r"ended with 10 of 84 scaling factors at \|gamma\| <= zero_tol=0.01, "
                                         r"short of Target_r \* N = 25 .*25-th smallest \|gamma\| is 0.645"):
        plugin.after_training_exp(strategy)
    assert plugin.reached_target is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugin.after_training_exp(strategy)  # once per plugin, not per step
        values[:25] = 0.0  # 0.5 + 24 * 0.5 / 83 = 0.645 above
        set_gammas(model, values)
        plugin.after_training_exp(strategy)  # reached: silent
    assert plugin.reached_target is True
    assert [e.value for e in strategy.sst_events if e.tag == "SST/target_reached"] == [0.0, 0.0, 1.0]


def test_reinit_redraws_only_the_factors_sst_freed_unless_asked():
    model = tiny_model()
    n = _gammas(model).numel()
    values = torch.linspace(0.5, 1.0, n)
    values[:10] = 0.0  # of the 25 useless (Target_r 0.3), 10 are freed and 15 live
    set_gammas(model, values)
    strategy = fake_strategy(model)
    strategy.clock.train_exp_counter = 1
    strategy.plugins = [SSTPlugin(zero_tol=0.0)]  # its zero_tol is the plugin's default
    plugin = ReinitPlugin(target_ratio=0.3, margin=0.1, seed=7)
    with pytest.warns(UserWarning, match=r"only 10 of the 25 useless .*zero_tol=0\).*other 15 are live"):
        plugin.before_training_exp(strategy)
    after = _gammas(model)
    assert torch.equal(after[10:], values[10:])  # the live filters are untouched
    low, high = plugin.last_range
    assert ((after[:10] >= low) & (after[:10] <= high)).all() and (after[:10] > 0).all()
    assert [e.value for e in strategy.sst_events if e.tag == "Reinit/count"] == [10]
    assert [e.value for e in strategy.sst_events if e.tag == "Reinit/kept_live"] == [15]

    set_gammas(model, values)
    ReinitPlugin(target_ratio=0.3, margin=0.1, seed=7, only_freed=False).before_training_exp(strategy)
    assert not torch.equal(_gammas(model)[10:25], values[10:25])  # asked: eq. 4 redraws all 25


def test_short_lwf_phases_warn_once_and_reinit_keeps_live_filters():
    bm = tiny_benchmark(parts=(1, 1), per_class=8, validation_fraction=0.0)  # 3 iterations a step
    model = tiny_model()
    gammas_after = []

    class Snapshot(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kw):  # after ReinitPlugin's before_training_exp
            gammas_after.append(_gammas(strategy.model).clone())

        def after_training_exp(self, strategy, **kw):
            gammas_after.append(_gammas(strategy.model).clone())

    strategy = LwF(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                   criterion=nn.CrossEntropyLoss(), alpha=1.0, temperature=2.0, train_mb_size=8, train_epochs=1,
                   evaluator=make_evaluator(), plugins=[SSTPlugin(), ReinitPlugin(), Snapshot()])
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for exp in bm.train_stream:
            strategy.train(exp, eval_streams=[])
    messages = [str(w.message) for w in caught]
    assert sum(m.startswith("SSTPlugin: the sparsity phase") for m in messages) == 1
    assert sum(m.startswith("ReinitPlugin: before experience 1 only 0 of the 25") for m in messages) == 1
    assert [e.value for e in strategy.sst_events if e.tag == "Reinit/count"] == [0]
    assert torch.equal(gammas_after[1], gammas_after[2])  # end of step 1 == start of step 2's training


# --- EWC + SSTPlugin: a learning rate at which SGD diverges on EWC's penalty ----------------


def test_sgd_stability_limit_is_where_sgd_on_a_quadratic_stops_converging():
    assert sgd_stability_limit(0.9) == pytest.approx(3.8)
    assert sgd_stability_limit(0.9, nesterov=True) == pytest.approx(3.8 / 2.8)
    for momentum, nesterov in ((0.0, False), (0.9, False), (0.9, True)):
        limit = sgd_stability_limit(momentum, nesterov)
        for factor, converges in ((0.97, True), (1.03, False)):
            x = torch.ones(1, requires_grad=True)
            opt = torch.optim.SGD([x], lr=factor * limit, momentum=momentum, nesterov=nesterov)
            for _ in range(2000):  # f = 0.5 * 1 * x^2: curvature 1, gradient x
                x.grad = x.detach().clone()
                opt.step()
            assert (abs(float(x.detach())) < 1e-3) == converges, (momentum, nesterov, factor)


def test_penalty_curvature_sums_anchored_experiences_by_hand():
    imps = [{"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([2.0])}, {"a": torch.tensor([2.5, 0.5])}]
    # a: [3.5, 3.5], b: [2] -> 2 * lam * 3.5 with lam = 10
    assert penalty_curvature(imps, 10.0) == (70.0, "a")
    assert penalty_curvature([], 10.0) == (0.0, "")


def _ewc_sst(lr: float, plugins):
    bm = tiny_benchmark(parts=(1, 1), per_class=8, validation_fraction=0.0)
    model = tiny_model()
    strategy = EWC(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                   criterion=nn.CrossEntropyLoss(), ewc_lambda=1e4, train_mb_size=8, train_epochs=2,
                   evaluator=make_evaluator(), plugins=plugins)
    torch.manual_seed(0)
    strategy.train(bm.train_stream[0], eval_streams=[])
    return bm, strategy


@pytest.mark.parametrize("plugin", [SSTPlugin, FiniteLossGuard])
def test_ewc_with_sst_at_a_divergent_lr_is_refused_before_the_step_trains(plugin):
    bm, strategy = _ewc_sst(0.1, [plugin()])
    before = copy.deepcopy(strategy.model.state_dict())
    with pytest.raises(ValueError, match=r"lr=0.1 \(momentum 0.9\) SGD diverges on EWC's penalty in experience 1.*"
                                         r">= 3.8.*Use lr < .*or ewc_lambda < "):
        strategy.train(bm.train_stream[1], eval_streams=[])
    for k, v in strategy.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # raised before any update


def test_ewc_with_sst_at_the_suggested_lr_trains_finite():
    bm, strategy = _ewc_sst(0.1, [SSTPlugin(), FiniteLossGuard()])
    with pytest.raises(ValueError, match="Use lr < ") as info:
        strategy.train(bm.train_stream[1], eval_streams=[])
    suggested = float(str(info.value).split("Use lr < ")[1].split(",")[0])
    bm, strategy = _ewc_sst(suggested / 2, [SSTPlugin(), FiniteLossGuard()])
    strategy.train(bm.train_stream[1], eval_streams=[])  # FiniteLossGuard raises on any inf/NaN loss
    assert torch.isfinite(_gammas(strategy.model)).all()


def test_finite_loss_guard_message_serves_sweeps_and_own_loops():
    model = nn.Linear(2, 2)
    strategy = SimpleNamespace(loss=torch.tensor(float("nan")), loss_terms={"ce": 1.0, "ewc": float("inf")},
                               clock=SimpleNamespace(train_exp_counter=2, train_exp_epochs=1), model=model)
    with pytest.raises(NonFiniteLossError) as info:
        FiniteLossGuard("ewc").before_backward(strategy)
    text = str(info.value)
    assert "term(s) ewc = inf" in text
    assert "In a sweep" in text and "recorded as diverged at this step" in text and "--set and a new --out" in text
    assert "In your own training loop nothing was saved" in text
