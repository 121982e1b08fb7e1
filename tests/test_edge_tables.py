"""The edge method's tables and what they read: balanced best-epoch selection, the
shared teacher cache, ``Method.report``, cells with a ``score``, per-seed values."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from avalanche_sst.benchmarks import new_class
from avalanche_sst.experiments.methods import get_method
from avalanche_sst.experiments.methods.edge_kt import teacher_cache_path
from avalanche_sst.experiments.paper import TABLES, Cell, run_table, seed_values
from avalanche_sst.experiments.paper.runner import cell_value
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.registry import Method, StrategyContext
from avalanche_sst.experiments.sweep import RunResult, run_report
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.models import resnet_cifar
from avalanche_sst.strategies.edge import _BestEpoch

torch.set_num_threads(1)


class _ConstantClass(nn.Module):
    def forward(self, x):
        return torch.tensor([[5.0, 0.0]]).expand(x.shape[0], 2)


def _labelled(labels):
    return torch.utils.data.TensorDataset(torch.zeros(len(labels), 1), torch.tensor(labels))


def test_best_epoch_scores_the_plain_mean_of_old_and_new_accuracy() -> None:
    # old slice: 3 images of class 0 (all right), new slice: 1 image of class 1 (wrong).
    best = _BestEpoch([_labelled([0, 0, 0]), _labelled([1])], "cpu", batch_size=8)
    best.after_training_epoch(SimpleNamespace(model=_ConstantClass()))
    assert best.best_acc == pytest.approx(0.5)  # (1 + 0) / 2; the sample-weighted mean would be 0.75
    assert best.best_epoch == 1


def _cell_run() -> RunResult:
    return RunResult("edge_kt", 0, [0.5, 0.25], 1.0, scores=[{"weighted_mean": 0.5, "old": 0.6},
                                                            {"weighted_mean": 0.25, "old": 0.2}],
                     report={"compression_ratio": 7.5})


def test_cell_value_reads_accuracy_step_scores_and_the_report() -> None:
    run = _cell_run()
    assert cell_value(Cell("r", "c", "edge_kt", 2), run) == pytest.approx(25.0)
    assert cell_value(Cell("r", "c", "edge_kt", 1, score="old"), run) == pytest.approx(60.0)
    assert cell_value(Cell("r", "c", "edge_kt", 2, score="compression_ratio"), run) == 7.5  # as reported
    with pytest.raises(KeyError, match="no score 'oldd'.*report: \\['compression_ratio'\\]"):
        cell_value(Cell("r", "c", "edge_kt", 1, score="oldd"), run)


def test_run_report_must_be_flat_numbers() -> None:
    good = Method("m", lambda ctx: None, "", report=lambda s: {"a": 1, "b": 2.5})
    assert run_report(good, None) == {"a": 1.0, "b": 2.5}
    assert run_report(Method("m", lambda ctx: None, ""), None) == {}
    bad = Method("m", lambda ctx: None, "", report=lambda s: {"a": [1, 2]})
    with pytest.raises(TypeError, match="report\\(\\) must return"):
        run_report(bad, None)


def _context(bench, cache_dir=None, config=None, seed=0) -> StrategyContext:
    model = resnet_cifar(depth=14, num_classes=4, width=4, in_channels=1)
    config = config or SimpleNamespace(epochs_scratch=1, epochs_finetune=1, lr_scratch=0.05, lr_finetune=0.05,
                                       momentum=0.9, weight_decay=5e-4, batch_size=16, eval_batch_size=64)
    return StrategyContext(model=model, config=config, evaluator=make_evaluator(), device=torch.device("cpu"),
                           valid_stream=bench.valid_stream, benchmark=bench, seed=seed, cache_dir=cache_dir)


def test_a_cached_teacher_gives_the_same_student(make_data, tmp_path) -> None:
    bench = new_class(make_data(16, seed=0), make_data(8, seed=1), base_classes=3, seed=0, validation_fraction=0.25)
    cache = tmp_path / "teacher.pt"

    def first_step(teacher_cache, train_teacher=True):
        torch.manual_seed(0)
        strategy = get_method("edge_kt:threshold=0.8").build(_context(bench))
        strategy.teacher_cache = teacher_cache
        if not train_teacher:
            phase = strategy._phase

            def no_teacher_training(name, *args, **kwargs):
                assert name != "teacher", "the cached teacher was trained again"
                return phase(name, *args, **kwargs)

            strategy._phase = no_teacher_training
        strategy.train(bench.train_stream[0], eval_streams=[])
        return strategy

    plain, writer = first_step(None), first_step(cache)
    assert cache.exists()
    reader = first_step(cache, train_teacher=False)  # loads the teacher instead of training it
    for other in (writer, reader):
        assert other.edge_report["teacher"] == plain.edge_report["teacher"]
        a, b = plain.model.state_dict(), other.model.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = torch.load(cache, weights_only=True)
    assert all(torch.equal(v, plain.teacher.state_dict()[k]) for k, v in saved["state_dict"].items())


def test_teacher_cache_key_follows_what_the_teacher_depends_on(make_data, tmp_path) -> None:
    bench = new_class(make_data(16, seed=0), make_data(8, seed=1), base_classes=3, seed=0, validation_fraction=0.25)
    base = Preset(name="a", scenario="new_class", epochs_scratch=3, lr_finetune=0.01)

    def key(preset, seed=0, select=True):
        return teacher_cache_path(_context(bench, tmp_path, preset, seed), select)

    assert key(base) == key(base.replace(name="b", lr_finetune=0.1, epochs_finetune=9, methods=("lwf",)))
    assert key(base) != key(base.replace(epochs_scratch=4))
    assert key(base) != key(base, seed=1)
    assert key(base) != key(base, select=False)
    assert key(base).parent == tmp_path / "edge_teachers"
    assert teacher_cache_path(_context(bench, None, base), True) is None


def test_edge_tables_resolve_and_table1_reads_table4s_runs() -> None:
    t1, t4, t7 = TABLES["edge_table1"], TABLES["edge_table4"], TABLES["edge_table7"]
    assert t1.runs_of == "edge_table4" and set(t1.methods()) <= set(t4.methods())
    for spec in (t1, t4, t7):
        for name in spec.methods():
            get_method(name)  # registered, variant keys accepted
        assert spec.preset("cpu").seeds == (0, 1, 2)
    assert t1.preset("cpu").replace(name="x") == t4.preset("cpu").replace(name="x")
    assert t4.preset("paper").dataset == "cifar10" and t4.preset("paper").model == "wrn28-10"
    assert t7.preset("cpu").scenario == "unseen_class"


def test_edge_table1_tiny_cells_are_the_runs_report_values(tmp_path) -> None:
    from avalanche_sst.experiments.sweep import load_dataset

    train, test = load_dataset("fashion_mnist", None)
    out = run_table("edge_table1", "tiny", out_root=tmp_path, data=(train, test), log=lambda s: None)
    done = json.loads((tmp_path / "edge_table4" / "sweep" / "edge_kt_threshold=0.8" / "seed0" / "done.json")
                      .read_text())
    mean, std, n = out["cells"]["P = 0.8", "Compression (x)"]
    assert n == 1 and std == 0.0 and mean == pytest.approx(done["report"]["compression_ratio"])
    assert out["cells"]["P = 0.8", "Top-1 (%)"][0] == pytest.approx(100 * done["scores"][0]["old"])
    assert ("Teacher", "Compression (x)") not in out["cells"]
    per_seed = seed_values(TABLES["edge_table1"], tmp_path / "edge_table1", "tiny")
    assert per_seed["P = 0.8", "Compression (x)"] == {0: pytest.approx(done["report"]["compression_ratio"])}
    md = (tmp_path / "edge_table1" / "edge_table1.md").read_text()
    assert "../edge_table4/sweep" in md
    # the runs stay labelled by the table that owns them, though edge_table1 wrote their preset.json last
    sweep_preset = json.loads((tmp_path / "edge_table4" / "sweep" / "preset.json").read_text())
    assert sweep_preset["name"] == "edge_table4-tiny"
    # the students' parameters fall as P falls (fewer filters kept)
    params = [out["cells"][f"P = {p}", "Params"][0] for p in (1.0, 0.9, 0.8, 0.7)]
    assert params == sorted(params, reverse=True)


def test_the_teachers_forward_is_charged_a_third_per_sample(make_data) -> None:
    from avalanche_sst.metrics.cost import CostMeter

    bench = new_class(make_data(16, seed=0), make_data(8, seed=1), base_classes=3, seed=0, validation_fraction=0.25)
    ctx = _context(bench)
    meter = CostMeter()
    ctx.plugins = [meter]
    strategy = get_method("edge_kt:threshold=0.8").build(ctx)
    torch.manual_seed(0)
    strategy.train(bench.train_stream[0], eval_streams=[])
    strategy.train(bench.train_stream[1], eval_streams=[])
    # 36 base-class images: teacher 1 epoch (36) + dependent student 1 epoch (36 + 36/3);
    # 12 new-class images: incremental epoch 12 + 12/3
    assert meter.step_costs == [pytest.approx(36 + 36 + 12), pytest.approx(12 + 4)]


def test_epochs_student_sets_only_the_students_epochs(make_data) -> None:
    bench = new_class(make_data(16, seed=0), make_data(8, seed=1), base_classes=3, seed=0, validation_fraction=0.25)
    strategy = get_method("edge_finetune:epochs_student=2").build(_context(bench))
    torch.manual_seed(0)
    strategy.train(bench.train_stream[0], eval_streams=[])
    assert strategy.edge_report["teacher"]["epochs"] == 1 and strategy.edge_report["student"]["epochs"] == 2
    with pytest.raises(ValueError, match="epochs_student must be >= 1"):
        get_method("edge_kt:epochs_student=0").build(_context(bench))
