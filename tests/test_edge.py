"""Selective layer-wise knowledge transfer (Zhao, Chen & Zhao, sec. 4.1-4.2):
the loss terms by hand, the block pairing, EdgeKTPlugin in a SupervisedTemplate,
and the edge pipeline (teacher -> compression -> student -> incremental step)."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from avalanche_sst.benchmarks import new_class
from avalanche_sst.functional.edge_transfer import (
    batch_cosine,
    edge_kt_loss,
    feature_distance,
    logit_distance,
    normalised_map,
    one_hot_bce,
    pair_blocks,
)
from avalanche_sst.functional.filter_pruning import prune_plan
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.models import resnet_cifar
from avalanche_sst.models.student import build_student
from avalanche_sst.plugins.edge_kt import EdgeKTPlugin, edge_trainable_parameters

torch.set_num_threads(1)


# ---------------------------------------------------------------- loss terms by hand


def test_normalised_map_pads_the_channel_tail_and_normalises_per_sample() -> None:
    s = torch.arange(1.0, 25.0).view(2, 3, 2, 2)
    q = normalised_map(s, width=5)
    assert q.shape == (2, 20)
    assert torch.allclose(q.norm(dim=1), torch.ones(2))
    assert torch.equal(q[:, 12:], torch.zeros(2, 8))  # channels 3 and 4 are the zero padding
    assert torch.allclose(q[0, :12], s[0].flatten() / s[0].norm())


def test_cosine_by_hand() -> None:
    q_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q_s = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # flattened: (0.6 + 1) / (sqrt(2) * sqrt(2))
    assert batch_cosine(q_t, q_s).item() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="one shape"):
        batch_cosine(q_t, torch.zeros(2, 3))


def test_j1_by_hand() -> None:
    teacher = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    student = torch.tensor([[3.0, 4.0, 9.0], [0.0, 0.0, -9.0]])
    # per sample sqrt(9 + 16) = 5 and sqrt(9) = 3 over the teacher's 2 classes; mean 4
    assert logit_distance(teacher, student).item() == pytest.approx(4.0)
    # a teacher with the student's 3 outputs that knows only classes 0 and 2
    teacher3 = torch.tensor([[0.0, 100.0, 0.0], [3.0, 100.0, -9.0]])
    # per sample: sqrt(9 + 81) and sqrt(9 + 0)
    expected = (math.sqrt(90) + 3) / 2
    assert logit_distance(teacher3, student, teacher_classes=[0, 2]).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="only 3 outputs"):
        logit_distance(teacher3, student, teacher_classes=[0, 5])


def test_jb_by_hand() -> None:
    q_t = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    q_s = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    assert feature_distance(q_t, q_s).item() == pytest.approx(math.sqrt(2) / 2)


def test_j3_by_hand() -> None:
    # softmax [0.5, 0.5], label 0: -(log 0.5 + log(1 - 0.5)) = 2 ln 2
    assert one_hot_bce(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(2 * math.log(2))
    # softmax of [ln 3, 0] = [0.75, 0.25], label 1: -(log 0.25 + log 0.25)
    logits = torch.tensor([[math.log(3.0), 0.0]])
    assert one_hot_bce(logits, torch.tensor([1])).item() == pytest.approx(-2 * math.log(0.25))
    # the minus sign is restored: the loss is positive and falls as the right class wins
    confident = one_hot_bce(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    assert confident < one_hot_bce(torch.zeros(1, 2), torch.tensor([0]))


def test_total_loss_by_hand_and_without_labels() -> None:
    t_logits, s_logits = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    t_map = [[torch.tensor([[[[1.0]], [[0.0]]]])]]  # one group, one block, [1, 2, 1, 1]
    s_map = [[torch.tensor([[[[0.0]], [[2.0]]]])]]  # normalised: [0, 1]
    labels = torch.tensor([0])
    j3 = -math.log(1 / (1 + math.e)) - math.log(1 - math.e / (1 + math.e))
    total, terms, pairs = edge_kt_loss(t_logits, s_logits, t_map, s_map, labels, l1=1, l2=2, l3=3)
    assert terms["J1"].item() == pytest.approx(5.0)
    assert terms["J_b"].item() == pytest.approx(math.sqrt(2))
    assert terms["J3"].item() == pytest.approx(j3)
    assert total.item() == pytest.approx(5 + 2 * math.sqrt(2) + 3 * j3)
    assert pairs[0].cosine == pytest.approx(0.0)
    total_u, terms_u, _ = edge_kt_loss(t_logits, s_logits, t_map, s_map, None)
    assert "J3" not in terms_u and total_u.item() == pytest.approx(5 + math.sqrt(2))


def test_student_equal_to_a_zero_padded_teacher_block_pairs_at_cosine_1() -> None:
    g = torch.Generator().manual_seed(0)
    student_block = torch.rand(4, 3, 2, 2, generator=g)
    teacher_blocks = [
        torch.rand(4, 5, 2, 2, generator=g),
        torch.cat([student_block, torch.zeros(4, 2, 2, 2)], dim=1),  # the student's map, padded
        torch.rand(4, 5, 2, 2, generator=g),
    ]
    other = [[torch.rand(4, 2, 4, 4, generator=g)], [torch.rand(4, 1, 4, 4, generator=g)]]
    pairs, matched = pair_blocks([teacher_blocks, other[0]], [[student_block], other[1]])
    assert pairs[0].teacher_block == 1 and pairs[0].cosine == pytest.approx(1.0)
    assert feature_distance(*matched[0]).item() == pytest.approx(0.0, abs=1e-6)
    _, terms, _ = edge_kt_loss(torch.zeros(4, 2), torch.zeros(4, 2), [teacher_blocks, other[0]],
                               [[student_block], other[1]], None)
    assert terms["J_b/group1.0"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["J_b/group2.0"].item() > 0.1


def test_student_wider_than_teacher_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="not be wider than its teacher"):
        pair_blocks([[torch.rand(2, 3, 2, 2)]], [[torch.rand(2, 4, 2, 2)]])
    with pytest.raises(ValueError, match="same number of groups"):
        pair_blocks([[torch.rand(2, 3, 2, 2)]], [])


# ---------------------------------------------------------------- the plugin


def _tiny_benchmark(make_data, classes: int = 4):
    train, test = make_data(12, seed=0, classes=classes), make_data(6, seed=1, classes=classes)
    return new_class(train, test, base_classes=classes - 1, seed=0)


def _teacher_and_student(threshold: float = 0.9):
    torch.manual_seed(0)
    teacher = resnet_cifar(14, num_classes=4, in_channels=1, width=4)  # 2 blocks per group
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    student = build_student(teacher, prune_plan(teacher, x, threshold).widths)
    return teacher, student


class _OptimizerProbe(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.optimized: set[int] = set()

    def before_training_iteration(self, strategy, **kwargs):
        self.optimized = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}


def _quiet_evaluator():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin(loggers=[])


def test_only_last_convs_and_classifier_change_in_an_incremental_step(make_data) -> None:
    teacher, student = _teacher_and_student()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    # a previous step left gradients and momentum behind: they must not move frozen weights
    for p in student.parameters():
        p.grad = torch.ones_like(p)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    plugin, probe = EdgeKTPlugin(teacher), _OptimizerProbe()
    strategy = SupervisedTemplate(
        model=student, optimizer=torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4),
        criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=2, eval_mb_size=32,
        plugins=[plugin, probe], evaluator=_quiet_evaluator(), eval_every=-1,
    )
    strategy.train(_tiny_benchmark(make_data).train_stream[0], eval_streams=[])

    chosen = {id(p) for p in edge_trainable_parameters(student)}
    trainable = {n for n, p in student.named_parameters() if id(p) in chosen}
    assert trainable == {"layer1.0.conv2.weight", "layer2.0.conv2.weight", "layer3.0.conv2.weight",
                         "fc.weight", "fc.bias"}
    after = student.state_dict()
    for name, value in before.items():
        if name in trainable:
            assert not torch.equal(after[name], value), f"{name} did not learn"
        else:  # BN running statistics, BN affine weights, every other conv
            assert torch.equal(after[name], value), f"{name} changed"
    assert probe.optimized == {id(p) for p in edge_trainable_parameters(student)}
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in teacher_before.items())
    # everything is handed back after the experience
    assert all(p.requires_grad for p in student.parameters())
    assert len(strategy.optimizer.param_groups[0]["params"]) == len(list(student.parameters()))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in [*student.modules(), *teacher.modules()])
    # the terms and the chosen pairs are logged every iteration
    tags = {e.tag for e in strategy.sst_events}
    assert {"edge_kt/J1", "edge_kt/J_b", "edge_kt/J3", "edge_kt/total", "edge_kt/pair/group1.0",
            "edge_kt/pair/group3.0"} <= tags
    assert {p.teacher_block for p in plugin.last_pairs} <= {0, 1}
    assert plugin.last_terms["total"] == pytest.approx(
        plugin.last_terms["J1"] + plugin.last_terms["J_b"] + plugin.last_terms["J3"], rel=1e-5)


def test_unlabelled_transfer_never_reads_labels() -> None:
    teacher, student = _teacher_and_student()

    class NoLabels(SimpleNamespace):
        @property
        def mb_y(self):
            raise AssertionError("the unlabelled transfer read the labels")

    fake = NoLabels(model=student, device=torch.device("cpu"), clock=SimpleNamespace(train_iterations=0))
    plugin = EdgeKTPlugin(teacher, use_labels=False, train_only_last_convs=False)
    plugin.before_training_exp(fake)
    fake.mb_x = torch.randn(4, 1, 8, 8)
    fake.mb_output = student(fake.mb_x)
    plugin.before_backward(fake)
    plugin.after_training_exp(fake)
    assert "J3" not in plugin.last_terms
    assert fake.loss.item() == pytest.approx(plugin.last_terms["J1"] + plugin.last_terms["J_b"], rel=1e-5)
    fake.loss.backward()
    assert student.conv1.weight.grad is not None  # every layer learns when not restricted


def test_plugin_errors() -> None:
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="EdgeKTPlugin needs a teacher made of residual groups"):
        EdgeKTPlugin(flat)
    with pytest.raises(ValueError, match="l2 must be a number >= 0"):
        EdgeKTPlugin(resnet_cifar(8, width=2), l2=-1)
    plugin = EdgeKTPlugin(resnet_cifar(8, width=2))
    with pytest.raises(ValueError, match="residual groups"):
        plugin.before_training_exp(SimpleNamespace(model=flat, device=torch.device("cpu")))
    # a student wider than its teacher fails at the first batch
    teacher, wide = resnet_cifar(8, width=2, in_channels=1), resnet_cifar(8, width=4, in_channels=1)
    plugin = EdgeKTPlugin(teacher, train_only_last_convs=False)
    fake = SimpleNamespace(model=wide, device=torch.device("cpu"), mb_x=torch.randn(2, 1, 8, 8),
                           clock=SimpleNamespace(train_iterations=0))
    plugin.before_training_exp(fake)
    fake.mb_output = wide(fake.mb_x)
    fake.mb_y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="not be wider than its teacher"):
        plugin.before_backward(fake)
    plugin.after_training_exp(fake)


# ---------------------------------------------------------------- the pipeline and the sweep methods


def _context(benchmark, model=None, **preset):
    from avalanche_sst.experiments.presets import Preset
    from avalanche_sst.experiments.registry import StrategyContext

    cfg = Preset(epochs_scratch=1, epochs_finetune=1, batch_size=16, eval_batch_size=64, lr_finetune=0.05, **preset)
    torch.manual_seed(0)
    model = model or resnet_cifar(14, num_classes=benchmark.num_classes, in_channels=1, width=4)
    return StrategyContext(model=model, config=cfg, evaluator=make_evaluator(), device=torch.device("cpu"),
                           valid_stream=getattr(benchmark, "valid_stream", None), benchmark=benchmark, seed=0)


def _new_class_benchmark(make_data):
    return new_class(make_data(16, seed=0), make_data(8, seed=1), base_classes=3, seed=0, validation_fraction=0.25)


def _train_step(strategy, benchmark, step: int) -> None:
    torch.manual_seed(1000 * 0 + step)  # as the sweep does before every step
    strategy.train(benchmark.train_stream[step], eval_streams=[], reset_optimizer_state=True)


def test_new_class_pipeline_compresses_then_transfers(make_data) -> None:
    from avalanche_sst.experiments.methods import get_method

    bench = _new_class_benchmark(make_data)
    strategy = get_method("edge_kt:threshold=0.8").build(_context(bench))
    teacher = strategy.model
    _train_step(strategy, bench, 0)
    student = strategy.model
    assert student is not teacher and strategy.teacher is teacher
    assert [len(g) for g in (student.layer1, student.layer2, student.layer3)] == [1, 1, 1]
    assert student.widths == strategy.widths and student.fc.out_features == 4
    report = strategy.edge_report
    assert report["compression"]["threshold"] == 0.8 and report["compression"]["compression_ratio"] > 1
    assert {"teacher", "student"} <= set(report) and 1 <= report["student"]["best_epoch"] <= 1
    assert strategy.teacher_classes == [0, 1, 2]
    # the pruning batch: M training images without the training augmentation, the same on every call
    images = strategy._prune_batch(bench.train_stream[0])
    assert images.shape == (16, 1, 8, 8) and torch.equal(images, strategy._prune_batch(bench.train_stream[0]))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    _train_step(strategy, bench, 1)
    assert strategy.model is student
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed <= {"layer1.0.conv2.weight", "layer2.0.conv2.weight", "layer3.0.conv2.weight",
                       "fc.weight", "fc.bias"} and changed
    assert len(report["incremental"]["test_last"]) == len(report["incremental"]["test_best"]) == 2
    assert any(e.tag == "edge_kt/J3" for e in strategy.sst_events)
    metrics = strategy.eval(bench.test_stream)
    assert any("Top1_Acc_Stream" in k for k in metrics)


def test_finetune_counterpart_uses_no_teacher(make_data) -> None:
    from avalanche_sst.experiments.methods import get_method

    bench = _new_class_benchmark(make_data)
    strategy = get_method("edge_finetune").build(_context(bench))
    _train_step(strategy, bench, 0)
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    _train_step(strategy, bench, 1)
    changed = {k for k, v in strategy.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= {"layer1.0.conv2.weight", "layer2.0.conv2.weight", "layer3.0.conv2.weight",
                                   "fc.weight", "fc.bias"}  # the same layers as edge_kt: only the loss differs
    assert not any(e.tag.startswith("edge_kt/") for e in getattr(strategy, "sst_events", []))
    assert "incremental" in strategy.edge_report


def test_student_resumes_from_a_checkpoint(make_data, tmp_path) -> None:
    from avalanche_sst.experiments.methods import get_method

    bench = _new_class_benchmark(make_data)
    method = get_method("edge_kt:threshold=0.7")
    first = method.build(_context(bench))
    _train_step(first, bench, 0)
    torch.save({"model": first.model.state_dict(), "method": method.state_dict(first)}, tmp_path / "ckpt.pt")
    _train_step(first, bench, 1)

    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed = method.build(_context(bench))
    with pytest.raises(RuntimeError, match="size mismatch|Missing|Unexpected"):
        resumed.model.load_state_dict(state["model"])  # the teacher's shape: widths must come first
    method.rebuild_model(resumed, state["method"])
    assert resumed.model.widths == first.widths
    resumed.model.load_state_dict(state["model"])
    method.load_state_dict(resumed, state["method"], list(bench.train_stream)[:1])
    resumed.clock.train_exp_counter = 1
    _train_step(resumed, bench, 1)
    a, b = first.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.edge_report["compression"] == first.edge_report["compression"]


@pytest.mark.parametrize("name", ["edge_kt", "edge_independent"])
def test_unseen_class_student(make_data, name) -> None:
    from avalanche_sst.benchmarks import unseen_class
    from avalanche_sst.experiments.methods import get_method

    bench = unseen_class(make_data(16, seed=0), make_data(8, seed=1), seen_classes=2, seed=0,
                         labelled=(name == "edge_independent"), validation_fraction=0.25)
    strategy = get_method(name).build(_context(bench))
    _train_step(strategy, bench, 0)
    assert {"teacher", "compression", "student"} <= set(strategy.edge_report)
    assert strategy.teacher_classes == [0, 1, 2, 3]
    kt_tags = {e.tag for e in getattr(strategy, "sst_events", []) if e.tag.startswith("edge_kt/")}
    if name == "edge_kt":
        assert "edge_kt/J1" in kt_tags and "edge_kt/J3" not in kt_tags
    else:
        assert not kt_tags
    assert len(strategy.edge_report["student"]["test_last"]) == 1


def test_pipeline_errors(make_data) -> None:
    from avalanche_sst.experiments.methods import get_method
    from avalanche_sst.experiments.registry import check_setting
    from avalanche_sst.strategies.edge import EdgeStrategy

    bench = _new_class_benchmark(make_data)
    with pytest.raises(ValueError, match="role must be one of"):
        EdgeStrategy(model=resnet_cifar(8, width=2, in_channels=1, num_classes=4), benchmark=bench,
                     role="independent")
    with pytest.raises(ValueError, match="threshold P"):
        get_method("edge_kt:threshold=1.5").build(_context(bench))
    with pytest.raises(ValueError, match="residual groups"):
        get_method("edge_kt").build(_context(bench, model=nn.Sequential(nn.Conv2d(1, 2, 3))))
    with pytest.raises(ValueError, match="settings"):
        EdgeStrategy(model=resnet_cifar(8, width=2), benchmark=SimpleNamespace(setting="same_class"))
    with pytest.raises(ValueError, match="does not run in the 'unseen_class'"):
        check_setting(get_method("edge_finetune"), "unseen_class")
    with pytest.raises(ValueError, match="has no argument 'l1'"):
        get_method("edge_independent:l1=2")
    from avalanche_sst.benchmarks import unseen_class

    unlabelled = unseen_class(make_data(4, seed=0), make_data(2, seed=1), seen_classes=2, labelled=False)
    with pytest.raises(ValueError, match="labelled=False"):
        get_method("edge_independent").build(_context(unlabelled))


class _CrashInSecondStep(SupervisedPlugin):
    def after_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter == 1:
            raise RuntimeError("crash")


def test_sweep_resumes_a_pruned_student_to_the_same_result(tmp_path, tiny_data) -> None:
    from avalanche_sst.experiments.presets import Preset
    from avalanche_sst.experiments.sweep import run_sweep

    preset = Preset(name="test", model="resnet14-w4", scenario="new_class", scenario_kwargs={"base_classes": 3},
                    methods=("edge_kt:threshold=0.8",), seeds=(0,), epochs_scratch=1, epochs_finetune=1,
                    batch_size=16, eval_batch_size=64, validation_fraction=0.25, lr_finetune=0.05, num_threads=1)
    run_sweep(preset, tmp_path / "straight", data=tiny_data, log=lambda s: None)
    with pytest.raises(RuntimeError, match="crash"):
        run_sweep(preset, tmp_path / "resumed", data=tiny_data, log=lambda s: None,
                  extra_plugins=lambda m, s: [_CrashInSecondStep()])
    run_dir = "edge_kt_threshold=0.8"
    ckpt = torch.load(tmp_path / "resumed" / run_dir / "seed0" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 1 and ckpt["method"]["widths"]["mids"]  # a pruned student was saved
    logs = []
    run_sweep(preset, tmp_path / "resumed", data=tiny_data, log=logs.append)
    assert any("resuming after step 1" in line for line in logs)
    a = torch.load(tmp_path / "resumed" / run_dir / "seed0" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / run_dir / "seed0" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert (tmp_path / "resumed" / "table.csv").read_text() == (tmp_path / "straight" / "table.csv").read_text()


@pytest.mark.parametrize("name, dependent", [("edge_kt", True), ("edge_finetune", False)])
def test_the_kt_student_learns_the_base_classes_with_the_teacher(make_data, name, dependent) -> None:
    """Sec. 5.2: the dependent student trains with the full loss in experience 0;
    the independent one (w/o KT) with cross entropy alone."""
    from avalanche_sst.experiments.methods import get_method

    bench = _new_class_benchmark(make_data)
    strategy = get_method(name).build(_context(bench))
    _train_step(strategy, bench, 0)
    kt_terms = [e for e in getattr(strategy, "sst_events", []) if e.tag == "edge_kt/J_b"]
    assert bool(kt_terms) == dependent
    if dependent:  # one J_b per training iteration of the student phase: 3 classes x 16 images / batch 16
        assert len(kt_terms) == 3
    # every layer learns in experience 0 (the last-convs-only rule is the incremental step's)
    assert all(p.requires_grad for p in strategy.model.parameters())


def test_j1_outputs_picks_the_logits_j1_reads(make_data) -> None:
    from avalanche_sst.experiments.methods import get_method

    bench = _new_class_benchmark(make_data)
    known = get_method("edge_kt").build(_context(bench))
    every = get_method("edge_kt:j1_outputs=all").build(_context(bench))
    for s in (known, every):
        s.teacher_classes = [0, 1, 2]
    assert known._kt_plugin(True, False).teacher_classes == [0, 1, 2]
    assert every._kt_plugin(True, False).teacher_classes is None  # every output of the teacher
    with pytest.raises(ValueError, match="j1_outputs must be 'known' or 'all'"):
        get_method("edge_kt:j1_outputs=new").build(_context(bench))


# ---------------------------------------------------------------- mutation-testing kills


def test_incremental_best_epoch_is_chosen_on_validation_not_test(make_data, monkeypatch) -> None:
    """Sec. 5: the incremental step keeps the epoch whose validation slices score best (plain mean
    over the experiences seen); here the test stream would pick epoch 1, validation picks epoch 2."""
    from avalanche_sst.experiments.methods import get_method
    from avalanche_sst.strategies import edge as edge_module

    bench = _new_class_benchmark(make_data)
    strategy = get_method("edge_finetune:epochs_incremental=3").build(_context(bench))
    _train_step(strategy, bench, 0)
    valid_sizes = {len(e.dataset) for e in bench.valid_stream}
    test_sizes = {len(e.dataset) for e in bench.test_stream}
    assert not valid_sizes & test_sizes  # the fake below tells the two apart by size
    # per epoch: validation means 0.2, 0.9, 0.5 (best: 2); test 0.9, 0.1, 0.2 (best: 1)
    schedule = {"valid": [0.2, 0.9, 0.5], "test": [0.9, 0.1, 0.2]}
    calls: dict[int, int] = {}

    def fake_accuracy(model, data, device, batch_size):
        n = calls[len(data)] = calls.get(len(data), 0) + 1
        values = schedule["valid" if len(data) in valid_sizes else "test"]
        return values[n - 1] if n <= len(values) else 0.5

    monkeypatch.setattr(edge_module, "accuracy", fake_accuracy)
    _train_step(strategy, bench, 1)
    report = strategy.edge_report["incremental"]
    assert report["best_epoch"] == 2 and report["best_valid"] == pytest.approx(0.9)
    assert all(calls[n] == 3 for n in valid_sizes)  # every seen experience's slice, every epoch


@pytest.mark.parametrize("classes, expected", [([0, 1, 2], 5.5), (None, 11.5)])
def test_j1_in_the_plugin_reads_only_the_teachers_classes(classes, expected) -> None:
    """J1 = batch mean of the per-sample l2 distance over the teacher's classes. The teacher
    outputs all-zero logits; the student's are [3, 4, 0, 12] and [0, 0, 6, 8]: over classes 0-2
    the distances are 5 and 6 (J1 = 5.5), over all four outputs 13 and 10 (J1 = 11.5)."""
    teacher, student = _teacher_and_student()
    with torch.no_grad():
        teacher.fc.weight.zero_()
        teacher.fc.bias.zero_()
    plugin = EdgeKTPlugin(teacher, l2=0.0, l3=0.0, teacher_classes=classes, train_only_last_convs=False)
    fake = SimpleNamespace(model=student, device=torch.device("cpu"), clock=SimpleNamespace(train_iterations=0))
    plugin.before_training_exp(fake)
    fake.mb_x, fake.mb_y = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    student(fake.mb_x)  # fills the student's block maps, as the strategy's forward does
    fake.mb_output = torch.tensor([[3.0, 4.0, 0.0, 12.0], [0.0, 0.0, 6.0, 8.0]])
    plugin.before_backward(fake)
    plugin.after_training_exp(fake)
    assert plugin.last_terms["J1"] == pytest.approx(expected)
    assert fake.loss.item() == pytest.approx(expected)  # l2 = l3 = 0: the loss is J1 alone
