"""Behaviour of SSTPlugin, ReinitPlugin, MSLPlugin, AODStrategy and MultiStepSST."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.benchmarks import TensorImageDataset, same_class_accumulating
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.models import classifier, resnet_cifar, scaling_factors
from avalanche_sst.plugins import (
    FiniteLossGuard,
    MSLPlugin,
    NonFiniteLossError,
    ReinitPlugin,
    SSTPlugin,
    StepwiseCosinePlugin,
)
from avalanche_sst.plugins import msl as msl_module
from avalanche_sst.functional.sparsity import fraction_at_or_below
from avalanche_sst.strategies import AODStrategy, MultiStepSST


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet_cifar(depth=8, num_classes=3, in_channels=1, width=4)


def tiny_benchmark(parts=(1, 1, 1), per_class: int = 40, seed: int = 0, validation_fraction: float = 0.25):
    g = torch.Generator().manual_seed(123)
    labels = torch.arange(3).repeat_interleave(per_class)
    # Class-dependent brightness makes the task learnable in a few steps.
    images = (labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (len(labels), 1, 8, 8), generator=g)).to(torch.uint8)
    test_labels = torch.arange(3).repeat_interleave(10)
    test_images = (test_labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (30, 1, 8, 8), generator=g)).to(torch.uint8)
    return same_class_accumulating(TensorImageDataset(images, labels), TensorImageDataset(test_images, test_labels),
                                   ratios=parts, seed=seed, validation_fraction=validation_fraction, padding=1)


def fake_strategy(model, epoch=0, train_epochs=6):
    clock = SimpleNamespace(train_exp_epochs=epoch, train_iterations=0, train_exp_counter=0)
    return SimpleNamespace(model=model, train_epochs=train_epochs, clock=clock, evaluator=None)


def set_gammas(model, values):
    factors = scaling_factors(model)
    flat = torch.as_tensor(values, dtype=torch.float32)
    assert len(flat) == sum(f.bn.weight.numel() for f in factors)
    start = 0
    with torch.no_grad():
        for f in factors:
            n = f.bn.weight.numel()
            f.bn.weight.copy_(flat[start:start + n])
            start += n
    return factors


def ce_backward(model):
    torch.manual_seed(1)
    model.zero_grad()
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    nn.functional.cross_entropy(model(x), y).backward()


# --- SSTPlugin ------------------------------------------------------------------


def test_sst_penalises_exactly_the_selected_factors():
    model = tiny_model()
    n = sum(f.bn.weight.numel() for f in scaling_factors(model))  # 9 BNs of a ResNet-8 w4: 52 factors
    values = torch.linspace(1.0, 0.1, n)  # strictly decreasing: the last 30% are the smallest
    values[::2] *= -1  # signs must not matter for the ranking
    factors = set_gammas(model, values)
    ce_backward(model)
    before = [f.bn.weight.grad.clone() for f in factors]

    plugin = SSTPlugin(target_ratio=0.3, lam=0.5)
    strategy = fake_strategy(model, epoch=3, train_epochs=6)  # epoch 3 >= E_cut = 2: SP_r = Target_r
    plugin.before_training_exp(strategy)
    plugin.before_training_epoch(strategy)
    assert plugin.sp_ratio == pytest.approx(0.3)
    plugin.after_backward(strategy)

    k = int(0.3 * n + 0.5)
    expected_selected = torch.zeros(n, dtype=torch.bool)
    expected_selected[n - k:] = True  # |values| decreasing: the last k are the smallest
    got_selected = torch.cat([m.flatten() for m in plugin.masks])
    assert torch.equal(got_selected, expected_selected)
    after = torch.cat([f.bn.weight.grad.flatten() for f in factors])
    delta = after - torch.cat([b.flatten() for b in before])
    assert torch.allclose(delta[~expected_selected], torch.zeros(int((~expected_selected).sum())))
    assert torch.allclose(delta[expected_selected], 0.5 * torch.sign(values[expected_selected]))


def test_sst_schedule_and_early_switch_at_named_epochs():
    model = tiny_model()
    plugin = SSTPlugin(target_ratio=0.3, zero_tol=1e-3)
    strategy = fake_strategy(model, train_epochs=6)  # E_cut = 6 / 3 = 2
    plugin.before_training_exp(strategy)
    ratios = []
    for epoch in range(4):
        strategy.clock.train_exp_epochs = epoch
        plugin.before_training_epoch(strategy)
        ratios.append(plugin.sp_ratio)
    # eq. 2: (0.3 - 1) / 2 * e + 1 -> 1.0, 0.65, then Target_r from E_cut on.
    assert ratios == pytest.approx([1.0, 0.65, 0.3, 0.3])

    n = sum(f.bn.weight.numel() for f in scaling_factors(model))
    values = torch.ones(n)
    values[: int(0.3 * n + 0.5)] = 0.0  # Target_r of the factors already at 0
    set_gammas(model, values)
    plugin.before_training_exp(strategy)
    strategy.clock.train_exp_epochs = 0
    plugin.before_training_epoch(strategy)
    assert plugin.sp_ratio == pytest.approx(0.3) and plugin.switched
    set_gammas(model, torch.ones(n))  # the count drops again: SP_r stays latched
    strategy.clock.train_exp_epochs = 1
    plugin.before_training_epoch(strategy)
    assert plugin.sp_ratio == pytest.approx(0.3)


def test_bst_penalises_every_factor():
    model = tiny_model()
    factors = scaling_factors(model)
    ce_backward(model)
    before = torch.cat([f.bn.weight.grad.flatten() for f in factors])
    plugin = SSTPlugin(target_ratio=0.3, lam=0.25, selective=False)
    strategy = fake_strategy(model, epoch=5)
    plugin.before_training_exp(strategy)
    plugin.before_training_epoch(strategy)
    plugin.after_backward(strategy)
    after = torch.cat([f.bn.weight.grad.flatten() for f in factors])
    gammas = torch.cat([f.bn.weight.detach().flatten() for f in factors])
    assert torch.allclose(after - before, 0.25 * torch.sign(gammas))


def test_sst_reaches_zero_tol_on_a_small_model_with_the_defaults():
    """The default lam / zero_tol drive the Target_r fraction to 0 in a short phase.

    342 iterations (300 samples, batch 8, 9 epochs; E_cut = 3), about the 380
    of the quick preset's SST phase.
    """
    bm = tiny_benchmark(parts=(1,), per_class=100, validation_fraction=0.0)
    model = tiny_model()
    plugin = SSTPlugin()  # defaults: target_ratio 0.3, lam 1e-2, zero_tol 1e-2
    strategy = SupervisedTemplate(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4),
        criterion=nn.CrossEntropyLoss(), train_mb_size=8, train_epochs=9, evaluator=make_evaluator(),
        plugins=[StepwiseCosinePlugin(lrs=(0.1,), epochs=(9,)), plugin])
    torch.manual_seed(0)
    strategy.train(bm.train_stream[0], eval_streams=[])
    gammas = [f.bn.weight.detach() for f in scaling_factors(model)]
    assert fraction_at_or_below(gammas, plugin.zero_tol) >= 0.29


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, float("nan")])
def test_sst_rejects_target_ratio_outside_open_interval(bad):
    with pytest.raises(ValueError, match="target_ratio"):
        SSTPlugin(target_ratio=bad)


def test_plugins_reject_models_without_batchnorm_after_conv():
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="BatchNorm2d"):
        SSTPlugin().before_training_exp(fake_strategy(plain))
    with pytest.raises(ValueError, match="BatchNorm2d"):
        MultiStepSST(model=plain)
    strategy = fake_strategy(plain)
    strategy.clock.train_exp_counter = 1
    with pytest.raises(ValueError, match="BatchNorm2d"):
        ReinitPlugin().before_training_exp(strategy)


# --- ReinitPlugin -----------------------------------------------------------------


def test_reinit_changes_exactly_the_useless_factors_into_the_range():
    model = tiny_model()
    n = sum(f.bn.weight.numel() for f in scaling_factors(model))
    values = torch.linspace(0.0, 1.0, n)[torch.randperm(n, generator=torch.Generator().manual_seed(3))]
    factors = set_gammas(model, values)
    plugin = ReinitPlugin(target_ratio=0.3, margin=0.1, seed=7, only_freed=False)  # eq. 4 as written
    strategy = fake_strategy(model)
    plugin.before_training_exp(strategy)  # experience 0: trained from scratch, left alone
    assert torch.equal(torch.cat([f.bn.weight.detach() for f in factors]), values)

    strategy.clock.train_exp_counter = 1
    plugin.before_training_exp(strategy)
    after = torch.cat([f.bn.weight.detach() for f in factors])
    useless = values.abs() <= values.abs().sort().values[int(0.3 * n + 0.5) - 1]
    low, high = plugin.last_range
    # eq. 4 on 0..1 evenly spaced: the 0.4 and 0.9 quantiles are 0.4 and 0.9.
    assert (low, high) == pytest.approx((0.4, 0.9), abs=1e-6)
    assert torch.equal(after[~useless], values[~useless])
    assert ((after[useless] >= low) & (after[useless] <= high)).all()
    assert not torch.equal(after[useless], values[useless])


def test_reinit_margin_bound_names_margin():
    with pytest.raises(ValueError, match="margin"):
        ReinitPlugin(target_ratio=0.3, margin=0.4)


# --- MSLPlugin ----------------------------------------------------------------------


def _msl_strategy(model, plugin, epochs=1):
    return SupervisedTemplate(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=epochs, evaluator=make_evaluator(),
        plugins=[plugin])


def test_msl_freezes_classifier_replaces_ce_and_keeps_teacher_in_eval():
    bm = tiny_benchmark(parts=(1, 1))
    model = tiny_model()
    head_before = copy.deepcopy(classifier(model).state_dict())
    conv_before = model.conv1.weight.detach().clone()
    # A fresh strategy's first experience has no trained teacher: give one (else MSL stands aside).
    plugin = MSLPlugin(update_teacher=False, teacher=copy.deepcopy(model))
    strategy = _msl_strategy(model, plugin)
    strategy.train(bm.train_stream[0], eval_streams=[])
    for k, v in classifier(model).state_dict().items():
        assert torch.equal(v, head_before[k]), k
    assert not torch.equal(model.conv1.weight, conv_before)  # the rest of the student trains
    assert plugin.teacher.training is False
    assert all(not p.requires_grad for p in plugin.teacher.parameters())
    assert set(strategy.loss_terms) == {"msl_kd", "msl_at"}  # the data loss was eq. 9, not CE
    assert all(p.requires_grad for p in classifier(model).parameters())  # unfrozen after the phase


def test_msl_teacher_replaced_exactly_when_student_validates_better(monkeypatch):
    bm = tiny_benchmark(parts=(1, 1))
    model = tiny_model()
    scripted = iter([0.5, 0.4, 0.6, 0.55])  # teacher, then the student after epochs 0, 1, 2

    def fake_accuracy(m, data, device, batch_size=1000):
        return next(scripted)

    monkeypatch.setattr(msl_module, "accuracy", fake_accuracy)
    plugin = MSLPlugin(valid_stream=bm.valid_stream, teacher=copy.deepcopy(model))
    snapshots = []

    class Snapshot(SupervisedPlugin):
        def after_training_epoch(self, strategy, **kw):
            snapshots.append(copy.deepcopy(plugin.teacher.state_dict()))

    strategy = _msl_strategy(model, plugin, epochs=3)
    strategy.plugins.append(Snapshot())
    strategy.train(bm.train_stream[0], eval_streams=[])
    updates = [e.value for e in strategy.sst_events if e.tag == "MSL/teacher_update"]
    assert updates == [0.0, 1.0, 0.0]
    assert plugin.teacher_updates == 1
    assert [e.value for e in strategy.sst_events if e.tag == "MSL/teacher_valid_acc"] == [0.5, 0.6, 0.6]
    # The teacher after the update epoch is the student of that epoch, and stays so.
    assert not all(torch.equal(snapshots[0][k], snapshots[1][k]) for k in snapshots[0])
    assert all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])


def test_msl_input_errors():
    flat = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))
    bm = tiny_benchmark(parts=(1, 1))
    with pytest.raises(ValueError, match="blocks"):
        _msl_strategy(flat, MSLPlugin(update_teacher=False)).train(bm.train_stream[0], eval_streams=[])
    with pytest.raises(ValueError, match="valid_stream"):
        _msl_strategy(tiny_model(), MSLPlugin()).train(bm.train_stream[0], eval_streams=[])


# --- AODStrategy --------------------------------------------------------------------


def test_aod_students_differ_after_reinit_both_train_and_the_better_is_chosen():
    bm = tiny_benchmark(parts=(1, 1))
    model = tiny_model()
    # An SST output has spread-out |gamma| (a fresh model's are all 1, so eq. 4's range would be empty).
    n = sum(f.bn.weight.numel() for f in scaling_factors(model))
    set_gammas(model, torch.linspace(0.0, 1.5, n))
    strategy = AODStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                           train_mb_size=16, train_epochs=2, evaluator=make_evaluator(),
                           valid_stream=bm.valid_stream, seed=3)
    starts = []

    class Capture(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kw):
            if not starts:
                starts.extend(copy.deepcopy(s.state_dict()) for s in strategy.model.students)

    strategy.plugins.append(Capture())
    strategy.train(bm.train_stream[1], eval_streams=[])
    s1, s2 = starts
    gamma_keys = [f"{f.name}.weight" for f in scaling_factors(model)]
    assert any(not torch.equal(s1[k], s2[k]) for k in gamma_keys)  # diverse re-init
    for start, student in zip(starts, strategy.students):
        assert not torch.equal(start["conv1.weight"], student.conv1.weight.detach())  # both trained
    accs = strategy.valid_accuracies
    assert strategy.model is strategy.students[int(accs[1] > accs[0])]
    tags = {e.tag for e in strategy.sst_events}
    for term in ("L_CE", "L_KD", "L_CR", "W_KD"):
        assert {f"AOD/{term}/student1", f"AOD/{term}/student2"} <= tags
    weights = [e.value for e in strategy.sst_events if e.tag.startswith("AOD/W_KD/")]
    assert all(0.0 < w < 1.0 for w in weights)


# --- MultiStepSST --------------------------------------------------------------------


def _multi_step(bm, **kwargs):
    model = tiny_model()
    args = dict(valid_stream=bm.valid_stream, epochs_scratch=1, epochs_sst=3, epochs_aod=1, train_mb_size=16,
                eval_mb_size=64, evaluator=make_evaluator())
    args.update(kwargs)
    return MultiStepSST(model=model, **args)


def _phases(strategy):
    return [(int(e.value), e.tag.split("/", 1)[1]) for e in strategy.sst_events if e.tag.startswith("phase/")]


def test_multi_step_runs_the_phases_in_method_order():
    bm = tiny_benchmark(parts=(1, 1, 1))
    strategy = _multi_step(bm)
    results = []
    for exp in bm.train_stream:
        strategy.train(exp)
        results.append(strategy.eval(bm.test_stream)["Top1_Acc_Stream/eval_phase/test_stream/Task000"])
        if exp.current_experience < 2:
            assert strategy.prepared is not None and strategy.prepared is not strategy.model
    assert _phases(strategy) == [(0, "scratch"), (0, "sst"), (1, "aod"), (1, "sst_msl"), (2, "aod")]
    assert strategy.prepared is None  # nothing prepared after the last experience
    assert all(0.0 <= r <= 1.0 for r in results)
    teacher_events = [e for e in strategy.sst_events if e.tag == "MSL/teacher_update"]
    assert len(teacher_events) == 3  # one decision per epoch of the MSL phase


def test_multi_step_ablation_switches_change_the_phases():
    bm = tiny_benchmark(parts=(1, 1, 1))
    strategy = _multi_step(bm, sparsity="bst", use_msl=False, new_data="finetune")
    for exp in bm.train_stream:
        strategy.train(exp)
    assert _phases(strategy) == [(0, "scratch"), (0, "bst"), (1, "finetune"), (1, "bst"), (2, "finetune")]


def test_multi_step_input_errors():
    with pytest.raises(ValueError, match="margin"):
        MultiStepSST(model=tiny_model(), target_ratio=0.5, margins=(0.1, 0.3))
    with pytest.raises(ValueError, match="new_data"):
        MultiStepSST(model=tiny_model(), new_data="lwf")
    with pytest.raises(ValueError, match="target_ratio"):
        MultiStepSST(model=tiny_model(), target_ratio=1.0)


def test_non_finite_loss_names_phase_and_epoch():
    bm = tiny_benchmark(parts=(1, 1))
    strategy = _multi_step(bm)
    with torch.no_grad():
        strategy.model.fc.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"phase 'scratch'.*epoch 0"):
        strategy.train(bm.train_stream[0])


def test_finite_loss_guard_names_the_bad_term():
    guard = FiniteLossGuard("aod")
    strategy = SimpleNamespace(loss=torch.tensor(float("inf")), clock=SimpleNamespace(train_exp_counter=1, train_exp_epochs=2),
                               loss_terms={"ce_1": torch.tensor(0.3), "kd_1": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteLossError, match=r"phase 'aod', experience 1, epoch 2: term\(s\) kd_1"):
        guard.before_backward(strategy)


def test_aod_without_validation_slice_selects_on_unaugmented_training_data():
    bm = tiny_benchmark(parts=(1, 1))
    model = tiny_model()
    strategy = AODStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=16,
                           evaluator=make_evaluator())
    strategy.experience = bm.train_stream[1]
    assert bm.train_stream[1].dataset.collate_fn.augment  # the training data itself augments
    with pytest.warns(UserWarning, match="no validation slice"):
        data = strategy._validation_data()
    assert len(data) == len(bm.train_stream[1].dataset)
    assert data.collate_fn.augment is False


def test_aod_rebuilds_its_single_group_on_the_student_pair_and_refuses_several_groups():
    bm = tiny_benchmark(parts=(1, 1))
    model = tiny_model()
    strategy = AODStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                           train_mb_size=16, train_epochs=1, evaluator=make_evaluator(), reinit=False,
                           valid_stream=bm.valid_stream)
    strategy.train(bm.train_stream[1], eval_streams=[])
    # The optimizer ended on the pair's parameters: both students, nothing of the original model.
    group = strategy.optimizer.param_groups[0]["params"]
    assert len(group) == 2 * len(list(model.parameters()))
    assert {id(p) for p in group}.isdisjoint(id(p) for p in model.parameters())

    bn = [p for n, p in model.named_parameters() if "bn" in n]
    rest = [p for n, p in model.named_parameters() if "bn" not in n]
    two_groups = torch.optim.SGD([{"params": bn}, {"params": rest}], lr=0.05)
    strategy = AODStrategy(model=model, optimizer=two_groups, train_mb_size=16, evaluator=make_evaluator(),
                           reinit=False, valid_stream=bm.valid_stream)
    with pytest.raises(ValueError, match="one parameter group"):
        strategy.train(bm.train_stream[1], eval_streams=[])


# --- issue 14: MSL's first experience, seeds, quiet phases ---------------------------------------


def test_msl_composed_into_lwf_trains_the_first_experience_with_cross_entropy():
    """The trap of issue 14: MSL in the first experience distilled an untrained model (chance accuracy)."""
    import warnings

    from avalanche.training import LwF

    bm = tiny_benchmark(parts=(1, 1))
    model = tiny_model()
    msl = MSLPlugin(valid_stream=bm.valid_stream)
    losses = []

    class Losses(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kw):
            losses.append([])

        def after_training_iteration(self, strategy, **kw):
            losses[-1].append(float(strategy.loss))

    strategy = LwF(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                   criterion=nn.CrossEntropyLoss(), alpha=1.0, temperature=2.0, train_mb_size=16, train_epochs=4,
                   evaluator=make_evaluator(), plugins=[SSTPlugin(), ReinitPlugin(), msl, Losses()])
    head = copy.deepcopy(classifier(model).state_dict())
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strategy.train(bm.train_stream[0], eval_streams=[])
    assert sum("no trained teacher" in str(w.message) for w in caught) == 1
    assert [e.value for e in strategy.sst_events if e.tag == "MSL/skipped"] == [1.0]
    assert any(not torch.equal(v, classifier(model).state_dict()[k]) for k, v in head.items())  # CE trains the head
    assert sum(losses[-1]) / len(losses[-1]) < sum(losses[0]) / len(losses[0])
    assert not hasattr(strategy, "loss_terms")  # MSL's loss never ran

    head = copy.deepcopy(classifier(model).state_dict())
    strategy.train(bm.train_stream[1], eval_streams=[])
    assert set(strategy.loss_terms) == {"msl_kd", "msl_at"}  # now eq. 9 is the data loss ...
    for k, v in classifier(model).state_dict().items():
        assert torch.equal(v, head[k]), k  # ... with the classifier frozen
    assert len([e for e in strategy.sst_events if e.tag == "MSL/teacher_update"]) == 4


def _first_reinit_draws(seed: int) -> list[torch.Tensor]:
    """The two AOD students' scaling factors right after re-init in MultiStepSST(seed=seed)."""
    from avalanche_sst.strategies import StudentPair

    drawn = []

    class Capture(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kw):
            if isinstance(strategy.model, StudentPair) and not drawn:
                drawn.extend(torch.cat([f.bn.weight.detach().flatten() for f in scaling_factors(s)])
                             for s in strategy.model.students)

    bm = tiny_benchmark(parts=(1, 1))
    strategy = _multi_step(bm, epochs_sst=1, seed=seed, phase_plugins=[Capture()])
    torch.manual_seed(0)
    for exp in bm.train_stream:
        strategy.train(exp)
    return drawn


def test_two_seeds_draw_different_reinit_values_and_one_seed_the_same():
    a, a_again, b = _first_reinit_draws(0), _first_reinit_draws(0), _first_reinit_draws(1)
    assert all(torch.equal(x, y) for x, y in zip(a, a_again))
    assert all(not torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])  # the two students differ too


def test_phase_strategies_do_not_warn_about_missing_loggers():
    import warnings

    bm = tiny_benchmark(parts=(1, 1))
    strategy = _multi_step(bm, epochs_sst=1)  # its own evaluator is the user's business
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for exp in bm.train_stream:
            strategy.train(exp)
    assert not [w for w in caught if "No loggers specified" in str(w.message)]


def test_sst_plus_is_the_framework_with_the_options_kept_on_validation():
    import avalanche_sst.experiments.methods  # noqa: F401  (registers sst and sst_plus)
    from avalanche_sst.experiments.presets import Preset
    from avalanche_sst.experiments.registry import StrategyContext, get_method
    from avalanche_sst.strategies import SST_PLUS_OPTIONS

    assert SST_PLUS_OPTIONS == {"proximal": True, "reinit_range_scope": "layer"}

    def build(name):
        ctx = StrategyContext(model=resnet_cifar(8, num_classes=4, width=4), config=Preset(name="t", ratios=(1, 1)),
                              evaluator=make_evaluator(), device=torch.device("cpu"), seed=3)
        return get_method(name).build(ctx)

    plain, plus = build("sst"), build("sst_plus")
    assert plain.reinit_range_scope == "global" and plus.reinit_range_scope == "layer"
    assert plain.sst_args["proximal"] is False and plus.sst_args["proximal"] is True
    # everything else is the paper's framework, and a variant's key still wins
    assert plus.sst_args == {**plain.sst_args, "proximal": True} and plus.lrs == plain.lrs
    assert build("sst_plus:proximal=False").sst_args["proximal"] is False
