"""Tests that kill mutation survivors of strategies/edge (docs/testing.md): the constructor's
defaults (the paper's l1 = l2 = l3 = 1, SGD with Nesterov momentum 0.9, lr 0.1, weight decay 5e-4,
batch 128; ../shared/METHOD.md) and its exact messages; what each phase is handed (its data, the
validation slices it selects on, learning rate, epochs, the transfer plugin's weights, labels and
trainable layers) in both settings and for every role; the pruning step's batch, threshold, report
and logs; the cached teacher; a phase's optimizer, device, evaluator, report and logged steps; the
earlier epoch kept on a validation tie; the resume state.

Most tests replace ``EdgeStrategy._phase`` by a recorder that trains nothing, so an experience takes
milliseconds and every argument a phase receives can be read back; the tests of ``_phase`` itself
train a width-4 ResNet-14 for two epochs on a few 8x8 images, with the accuracy measurements
replaced by a recorder."""

from __future__ import annotations

import re
import warnings
from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.logging import InteractiveLogger
from torch import nn

from avalanche_sst.benchmarks import new_class, unseen_class
from avalanche_sst.functional.filter_pruning import prune_plan, pruning_batch
from avalanche_sst.models import resnet_cifar
from avalanche_sst.models.student import student_report
from avalanche_sst.plugins.edge_kt import EdgeKTPlugin, LastConvsOnlyPlugin
from avalanche_sst.strategies import edge as edge_module
from avalanche_sst.strategies.edge import EdgeStrategy
from avalanche_sst.strategies.phased import phase_evaluator

CPU0 = torch.device("cpu", 0)  # a device the strategy must hand on as given (Avalanche's default is "cpu")


def _new_class(make_data, validation: float = 0.25):
    """3 base classes (36 training images after the validation slices), the new class, 2 slices."""
    return new_class(make_data(16, seed=0), make_data(8, seed=1), base_classes=3, seed=0,
                     validation_fraction=validation)


def _unseen(make_data, labelled: bool = True, validation: float = 0.25):
    return unseen_class(make_data(16, seed=0), make_data(8, seed=1), seen_classes=2, seed=0, labelled=labelled,
                        validation_fraction=validation)


def _teacher(classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet_cifar(14, num_classes=classes, in_channels=1, width=4)


def _strategy(bench, model=None, **kwargs) -> EdgeStrategy:
    args = dict(epochs_scratch=1, epochs_incremental=1, train_mb_size=16, eval_mb_size=64, evaluator=phase_evaluator())
    model = _teacher(bench.num_classes) if model is None else model
    return EdgeStrategy(model=model, benchmark=bench, **{**args, **kwargs})


def _train(strategy, bench, last_step: int) -> None:
    for step in range(last_step + 1):
        strategy.train(bench.train_stream[step], eval_streams=[])


def _same(datasets, expected) -> bool:
    """The very data sets expected, in order (not copies)."""
    return datasets is not None and len(datasets) == len(expected) and all(a is b for a, b in zip(datasets, expected))


def _describe(plugins) -> list[str]:
    """``kt-all`` / ``kt-last``: EdgeKTPlugin training every layer / the last convs; ``last``: the
    plain last-convs-only rule."""
    out = []
    for p in plugins:
        if isinstance(p, EdgeKTPlugin):
            out.append("kt-last" if p.train_only_last_convs else "kt-all")
        else:
            assert isinstance(p, LastConvsOnlyPlugin), p
            out.append("last")
    return out


@pytest.fixture
def phases(monkeypatch) -> dict:
    """``EdgeStrategy._phase`` replaced by a recorder (no training): phase name -> its arguments."""
    calls: dict = {}

    def record(self, name, exp, model, lr, epochs, plugins=(), valid=None):
        calls[name] = SimpleNamespace(exp=exp, model=model, lr=lr, epochs=epochs, plugins=list(plugins), valid=valid)
        self.edge_report[name] = {"epochs": epochs}
        return model

    monkeypatch.setattr(EdgeStrategy, "_phase", record)
    return calls


# ---------------------------------------------------------------- the constructor


def test_defaults_are_the_papers(make_data) -> None:
    s = EdgeStrategy(model=_teacher(), benchmark=_new_class(make_data))
    assert (s.role, s.threshold, s.l1, s.l2, s.l3, s.j1_outputs) == ("kt", 1.0, 1.0, 1.0, 1.0, "known")
    assert s.train_all_layers is None  # the incremental step's rule: last convs and classifier only
    assert s.epochs == {"scratch": 10, "incremental": 10, "student": 10}
    assert s.lrs == {"scratch": 0.1, "incremental": 0.1}
    assert (s.momentum, s.nesterov, s.weight_decay) == (0.9, True, 5e-4)
    assert (s.train_mb_size, s.prune_images, s.eval_mb_size) == (128, 128, 1000)  # M = the batch
    assert s.select_on_validation is True and s.seed == 0 and s.teacher_cache is None
    assert s.device == torch.device("cpu")
    assert s.widths is None and s.teacher_classes == [] and s.plan == {} and s.edge_report == {}
    # no evaluator given: Avalanche's default one, which reports the run's accuracy
    assert [type(logger) for logger in s.evaluator.loggers] == [InteractiveLogger]


@pytest.mark.parametrize("prune_images", [0, -3])
def test_prune_images_below_one_is_refused_not_replaced_by_the_batch(make_data, prune_images) -> None:
    with pytest.raises(ValueError, match=rf"^EdgeStrategy: prune_images \(M, the images the pruning rule sees\) "
                                         rf"must be >= 1, got {prune_images}; leave it None for one training batch$"):
        EdgeStrategy(model=_teacher(), benchmark=_new_class(make_data), prune_images=prune_images)
    assert EdgeStrategy(model=_teacher(), benchmark=_new_class(make_data), prune_images=1).prune_images == 1


def test_given_arguments_reach_the_strategy(make_data, tmp_path) -> None:
    evaluator, plugin = phase_evaluator(), SupervisedPlugin()
    s = EdgeStrategy(model=_teacher(), benchmark=_new_class(make_data), role="finetune", threshold=0.7, l1=0.5,
                     l2=2.0, l3=3.0, j1_outputs="all", train_all_layers=True, epochs_scratch=2,
                     epochs_incremental=3, epochs_student=4, lr_scratch=0.05, lr_incremental=0.02, momentum=0.5,
                     nesterov=False, weight_decay=1e-3, prune_images=5, select_on_validation=False, seed=3,
                     teacher_cache=str(tmp_path / "teacher.pt"), train_mb_size=16, eval_mb_size=7, device=CPU0,
                     evaluator=evaluator, plugins=[plugin])
    assert (s.role, s.threshold, s.l1, s.l2, s.l3, s.j1_outputs) == ("finetune", 0.7, 0.5, 2.0, 3.0, "all")
    assert s.train_all_layers is True
    assert s.epochs == {"scratch": 2, "incremental": 3, "student": 4}
    assert s.lrs == {"scratch": 0.05, "incremental": 0.02}
    assert (s.momentum, s.nesterov, s.weight_decay) == (0.5, False, 1e-3)
    assert (s.train_mb_size, s.prune_images, s.eval_mb_size) == (16, 5, 7)
    assert s.select_on_validation is False and s.seed == 3 and s.teacher_cache == tmp_path / "teacher.pt"
    assert s.device == CPU0
    assert s.evaluator is evaluator and plugin in s.plugins


@pytest.mark.parametrize("momentum, nesterov, expected", [(0.5, True, True), (0.5, False, False), (0.0, True, False)])
def test_nesterov_needs_momentum(make_data, momentum, nesterov, expected) -> None:
    """SGD refuses Nesterov without momentum: momentum 0 turns it off instead of failing in a phase."""
    s = EdgeStrategy(model=_teacher(), benchmark=_new_class(make_data), momentum=momentum, nesterov=nesterov)
    assert s.nesterov is expected


def test_constructor_messages_are_exact(make_data) -> None:
    bench, unlabelled = _new_class(make_data), _unseen(make_data, labelled=False)
    cases = [
        (dict(benchmark=SimpleNamespace()),  # a benchmark without a setting
         "EdgeStrategy runs in the settings ['new_class', 'unseen_class'], got a benchmark with setting=None; "
         "build it with avalanche_sst.benchmarks.new_class/unseen_class"),
        (dict(benchmark=unlabelled, role="independent"),
         "EdgeStrategy(role='independent') learns the seen classes from their labels, but the benchmark says "
         "labelled=False; build it with unseen_class(..., labelled=True)"),
        (dict(model=nn.Sequential(nn.Conv2d(1, 2, 3))),
         "EdgeStrategy needs a teacher made of residual groups of blocks (resnet_cifar or wide_resnet); got "
         "Sequential. Build it with avalanche_sst.models.resnet_cifar(...) or wide_resnet(...)"),
        (dict(epochs_scratch=0), "EdgeStrategy: epochs_scratch must be >= 1, got 0"),
        (dict(epochs_incremental=0), "EdgeStrategy: epochs_incremental must be >= 1, got 0"),
        (dict(epochs_student=0), "EdgeStrategy: epochs_student must be >= 1, got 0"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            EdgeStrategy(**{"model": _teacher(), "benchmark": bench, **args})


def test_a_benchmark_that_does_not_say_labelled_is_taken_as_labelled() -> None:
    s = EdgeStrategy(model=_teacher(), benchmark=SimpleNamespace(setting="unseen_class"), role="independent")
    assert (s.setting, s.role) == ("unseen_class", "independent")


# ---------------------------------------------------------------- what each phase is handed


def test_new_class_kt_phases_get_their_data_rates_validation_and_transfer(make_data, phases) -> None:
    bench = _new_class(make_data)
    s = _strategy(bench, l1=0.5, l2=2.0, l3=3.0, epochs_scratch=2, epochs_student=3, epochs_incremental=4,
                  lr_scratch=0.05, lr_incremental=0.02)
    _train(s, bench, 1)
    v0, v1 = (e.dataset for e in bench.valid_stream)
    teacher, student, step = phases["teacher"], phases["student"], phases["incremental"]
    # the teacher: experience 0 from scratch, selected on experience 0's slice only (not the new class's)
    assert teacher.exp.dataset is bench.train_stream[0].dataset and teacher.model is s.teacher
    assert (teacher.lr, teacher.epochs, teacher.plugins) == (0.05, 2, []) and _same(teacher.valid, [v0])
    # the dependent student: the same data with the teacher's help, every layer, J3 on the labels
    assert student.exp.dataset is bench.train_stream[0].dataset and student.model is s.model
    assert (student.lr, student.epochs) == (0.05, 3) and _same(student.valid, [v0])
    assert _describe(student.plugins) == ["kt-all"]
    kt = student.plugins[0]
    assert kt.teacher is s.teacher and (kt.l1, kt.l2, kt.l3) == (0.5, 2.0, 3.0) and kt.use_labels
    assert kt.teacher_classes == [0, 1, 2]  # J1 reads the classes the teacher learned
    # the incremental step: the new class, last convs and classifier, selected on both slices
    assert step.exp.dataset is bench.train_stream[1].dataset and step.model is student.model is s.model
    assert (step.lr, step.epochs) == (0.02, 4) and _same(step.valid, [v0, v1])
    assert _describe(step.plugins) == ["kt-last"]
    kt = step.plugins[0]
    assert kt.teacher is s.teacher and (kt.l1, kt.l2, kt.l3) == (0.5, 2.0, 3.0) and kt.use_labels


@pytest.mark.parametrize("role, train_all, expected", [
    ("kt", None, ["kt-last"]), ("kt", False, ["kt-last"]), ("kt", True, ["kt-all"]),
    ("finetune", None, ["last"]), ("finetune", False, ["last"]), ("finetune", True, []),
])
def test_the_incremental_step_trains_the_papers_layers_unless_told(make_data, phases, role, train_all,
                                                                    expected) -> None:
    bench = _new_class(make_data)
    s = _strategy(bench, role=role, train_all_layers=train_all)
    _train(s, bench, 1)
    assert _describe(phases["student"].plugins) == (["kt-all"] if role == "kt" else [])  # "w/o KT": labels alone
    assert _describe(phases["incremental"].plugins) == expected


@pytest.mark.parametrize("role, train_all, expected", [
    ("kt", None, ["kt-all"]), ("kt", True, ["kt-all"]), ("kt", False, ["kt-last"]),
    ("independent", None, []), ("independent", True, []), ("independent", False, ["last"]),
])
def test_the_unseen_class_student_learns_every_layer_unless_told(make_data, phases, role, train_all,
                                                                 expected) -> None:
    bench = _unseen(make_data)
    s = _strategy(bench, role=role, train_all_layers=train_all, lr_scratch=0.05, epochs_scratch=2, epochs_student=3)
    _train(s, bench, 0)
    teacher, student = phases["teacher"], phases["student"]
    # the teacher learns every class, selected on the held-out slice of every class
    assert teacher.exp.dataset is bench.pretrain_stream[0].dataset
    assert (teacher.lr, teacher.epochs) == (0.05, 2) and _same(teacher.valid, [bench.pretrain_valid_stream[0].dataset])
    assert s.teacher_classes == [0, 1, 2, 3]
    assert student.exp.dataset is bench.train_stream[0].dataset and (student.lr, student.epochs) == (0.05, 3)
    assert _describe(student.plugins) == expected
    if role == "kt":  # unlabelled: J1 + sum J_b, nothing labelled to select on
        assert not student.plugins[0].use_labels and student.valid is None
    else:
        assert _same(student.valid, [bench.valid_stream[0].dataset])


def test_without_selection_or_validation_data_every_phase_keeps_its_last_epoch(make_data, phases) -> None:
    bench = _new_class(make_data)
    _train(_strategy(bench, select_on_validation=False), bench, 1)
    assert [c.valid for c in phases.values()] == [None, None, None]
    unseen = _unseen(make_data)
    _train(_strategy(unseen, role="independent", select_on_validation=False), unseen, 0)
    assert phases["teacher"].valid is None and phases["student"].valid is None
    for bench in (_new_class(make_data, validation=0.0), _unseen(make_data, validation=0.0)):
        role = "finetune" if bench.setting == "new_class" else "independent"
        _train(_strategy(bench, role=role), bench, 0)
        assert phases["teacher"].valid is None and phases["student"].valid is None


def test_the_incremental_step_before_experience_0_is_refused(make_data, phases) -> None:
    bench = _new_class(make_data)
    s = _strategy(bench)
    s.clock.train_exp_counter = 1  # as a resumed run that skipped rebuild_model
    message = ("EdgeStrategy: the incremental step needs the student of experience 0; train experience 0 first "
               "(or resume with rebuild_model)")
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        s.train(bench.train_stream[1], eval_streams=[])
    assert "incremental" not in phases


# ---------------------------------------------------------------- compression and the cached teacher


def test_the_pruning_step_uses_the_strategys_threshold_batch_and_seed(make_data, phases) -> None:
    bench = _new_class(make_data)
    s = _strategy(bench, threshold=0.7, seed=3)
    _train(s, bench, 0)
    exp = bench.train_stream[0]
    images = pruning_batch(exp, 16, 3)
    assert torch.equal(s._prune_batch(exp), images)
    assert not torch.equal(images, pruning_batch(exp, 16, 0))  # the seed picks the M images
    plan = prune_plan(s.teacher, images, 0.7)
    assert plan.widths != prune_plan(s.teacher, images, 1.0).widths  # P matters on this teacher
    assert s.plan == plan.to_dict() and s.widths == plan.widths and s.model.widths == plan.widths
    report = s.edge_report["compression"]
    sizes = student_report(s.teacher, s.model, (1, 8, 8))  # Table 1's columns
    assert report == {"threshold": 0.7, "widths": plan.widths.to_dict(), **sizes}
    logged = {e.tag: (e.value, e.step) for e in s.sst_events if e.tag.count("/") == 1}
    keys = ("compression_ratio", "student_params", "student_flops")
    assert logged == {f"edge/{k}": (float(sizes[k]), 0) for k in keys}


def test_the_students_initialisation_is_drawn_from_the_seed(make_data, phases) -> None:
    bench = _new_class(make_data)
    students, widths = [], []
    for seed in (1, 2, 1):
        s = _strategy(bench, seed=seed, prune_images=1000)  # every image, in a seeded order: the same widths
        _train(s, bench, 0)
        students.append(s.model.state_dict())
        widths.append(s.widths)
    assert widths[0] == widths[1] == widths[2]
    conv = "conv1.weight"
    assert torch.equal(students[0][conv], students[2][conv]) and not torch.equal(students[0][conv], students[1][conv])


def test_a_cached_teacher_is_loaded_instead_of_trained_and_gives_the_same_student(make_data, phases,
                                                                                   tmp_path) -> None:
    bench, cache = _new_class(make_data), tmp_path / "teacher.pt"
    first = _strategy(bench, teacher_cache=cache, threshold=0.7, epochs_scratch=2)
    _train(first, bench, 0)
    assert set(phases) == {"teacher", "student"}
    saved = torch.load(cache, weights_only=True)
    assert set(saved) == {"state_dict", "report"} and saved["report"] == {"epochs": 2}
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in first.teacher.state_dict().items())
    phases.clear()
    second = _strategy(bench, model=_teacher(seed=5), teacher_cache=cache, threshold=0.7, epochs_scratch=2)
    _train(second, bench, 0)
    assert set(phases) == {"student"}  # loaded, not trained
    a, b = first.teacher.state_dict(), second.teacher.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.edge_report["teacher"] == {"epochs": 2}
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_student_and_the_pruning_batch_go_to_the_strategys_device(make_data, phases, monkeypatch) -> None:
    moved = []
    build_student, real_batch = edge_module.build_student, edge_module.pruning_batch

    def recorded_build(teacher, widths):
        model = build_student(teacher, widths)
        to = model.to
        model.to = lambda device: (moved.append(("student", device)), to(device))[1]
        return model

    def recorded_batch(experience, num_images, seed):
        images = real_batch(experience, num_images, seed)
        return SimpleNamespace(to=lambda device: (moved.append(("images", device)), images.to(device))[1])

    monkeypatch.setattr(edge_module, "build_student", recorded_build)
    monkeypatch.setattr(edge_module, "pruning_batch", recorded_batch)
    bench = _new_class(make_data)
    s = _strategy(bench, device=CPU0)
    _train(s, bench, 0)
    s.rebuild_student(s.edge_state_dict())
    assert moved == [("images", CPU0), ("student", CPU0), ("student", CPU0)]


def test_the_resume_state_starts_empty_copies_and_loads_back(make_data, phases) -> None:
    bench = _new_class(make_data)
    s = _strategy(bench)
    fresh = s.edge_state_dict()
    assert (fresh["widths"], fresh["teacher_classes"], fresh["plan"], fresh["report"]) == ({}, [], {}, {})
    _train(s, bench, 0)
    state = s.edge_state_dict()
    state["plan"]["widths"]["groups"].append(99)
    state["report"]["compression"]["widths"]["groups"].append(99)
    assert 99 not in s.plan["widths"]["groups"] and 99 not in s.edge_report["compression"]["widths"]["groups"]
    other = _strategy(bench, model=_teacher(seed=5))
    other.load_edge_state_dict(s.edge_state_dict())
    assert other.plan == s.plan and other.teacher_classes == [0, 1, 2] and other.edge_report == s.edge_report
    a, b = s.teacher.state_dict(), other.teacher.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- a phase, trained


class _PhaseProbe(SupervisedPlugin):
    """Reaches every phase (``propagate_to_phases``): per phase, the optimizer's settings at its first
    iteration, its device and evaluator's loggers, and the epochs it ran."""

    propagate_to_phases = True

    def __init__(self):
        super().__init__()
        self.seen: list[dict] = []

    def before_training_iteration(self, strategy, **kwargs):
        if strategy.clock.train_exp_iterations == 0:
            group = strategy.optimizer.param_groups[0]
            self.seen.append(dict(lr=group["lr"], momentum=group["momentum"], nesterov=group["nesterov"],
                                  weight_decay=group["weight_decay"], device=strategy.device,
                                  loggers=list(strategy.evaluator.loggers), epochs=0))

    def after_training_epoch(self, strategy, **kwargs):
        self.seen[-1]["epochs"] += 1


def _fake_accuracy(monkeypatch, values=None) -> list:
    """Every accuracy the strategy measures, as (data set size, device, batch size); returns 0.5, or
    ``values`` in call order."""
    calls = []
    queue = list(values or [])

    def accuracy(model, data, device, batch_size):
        calls.append((len(data), device, batch_size))
        return queue.pop(0) if queue else 0.5

    monkeypatch.setattr(edge_module, "accuracy", accuracy)
    return calls


def test_a_phase_trains_with_the_strategys_optimizer_schedule_device_and_quiet_evaluator(make_data,
                                                                                          monkeypatch) -> None:
    bench, probe = _new_class(make_data), _PhaseProbe()
    s = _strategy(bench, role="finetune", epochs_scratch=2, epochs_student=2, epochs_incremental=2, lr_scratch=0.05,
                  lr_incremental=0.02, momentum=0.8, weight_decay=1e-3, eval_mb_size=7, device=CPU0, plugins=[probe])
    measured = _fake_accuracy(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(s, bench, 1)
    common = dict(momentum=0.8, nesterov=True, weight_decay=1e-3, device=CPU0, loggers=[], epochs=2)
    assert probe.seen == [dict(lr=0.05, **common), dict(lr=0.05, **common), dict(lr=0.02, **common)]
    # no phase builds Avalanche's default evaluator or device (each warns when it has to)
    assert not [w for w in caught if "No loggers" in str(w.message) or "device" in str(w.message)]
    assert {(device, size) for _, device, size in measured} == {(CPU0, 7)}
    # per phase: the validation slices every epoch, then the test stream at the last and at the best epoch
    assert [n for n, _, _ in measured] == [12, 12, 24, 8, 24, 8] * 2 + [12, 4, 12, 4, 24, 8, 24, 8]
    # a tie keeps the earlier epoch (every measurement is 0.5 here)
    assert s.edge_report["incremental"] == {"epochs": 2, "test_last": [0.5, 0.5], "best_epoch": 1, "best_valid": 0.5,
                                            "test_best": [0.5, 0.5]}
    steps = {e.tag: e.step for e in s.sst_events if e.tag.startswith("edge/") and "test_" in e.tag}
    assert steps == {f"edge/{phase}/{when}/exp{i}": step for phase, step in (("teacher", 0), ("student", 0),
                                                                              ("incremental", 1))
                     for when in ("test_last", "test_best_valid") for i in (0, 1)}


def test_a_phase_without_validation_reports_its_last_epoch(make_data, monkeypatch) -> None:
    bench = _new_class(make_data)
    s = _strategy(bench, role="finetune", epochs_scratch=2, select_on_validation=False)
    _fake_accuracy(monkeypatch, [0.25, 0.75, 0.5, 1.0])  # the teacher's test accuracies, then the student's
    _train(s, bench, 0)
    assert s.edge_report["teacher"] == {"epochs": 2, "test_last": [0.25, 0.75], "best_epoch": 2, "best_valid": -1.0,
                                        "test_best": [0.25, 0.75]}
    assert s.edge_report["student"]["test_best"] == [0.5, 1.0]
