"""Scores per setting (hand values), the sweep in the class- and
task-incremental settings, its fail-fast checks, ``--set``, and the resume
of a method whose model is rebuilt before its weights load."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from torch import nn

from avalanche_sst.benchmarks.scenarios import class_incremental, task_incremental
from avalanche_sst.experiments import registry
from avalanche_sst.experiments.methods import Method, common_kwargs, register
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import main, run_sweep
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.metrics.scores import STREAM_ACC, STREAM_FORGETTING, TRAINED_ACC, StepInfo, step_scores

SPLIT_METHODS = ("finetune", "lwf", "ewc", "replay", "cumulative")


def tiny(**changes) -> Preset:
    base = Preset(name="test", model="resnet8-w4", scenario="class_incremental",
                  scenario_kwargs={"classes_per_step": 2}, methods=("finetune",), seeds=(0,),
                  epochs_scratch=1, epochs_finetune=1, batch_size=16, eval_batch_size=64,
                  validation_fraction=0.0, lr_finetune=0.05, num_threads=1,
                  method_kwargs={"replay": {"mem_size": 16}})
    return base.replace(**changes)


# --- the scores, on hand values --------------------------------------------------


def test_class_incremental_scores_average_the_steps_so_far():
    results = {f"{TRAINED_ACC}/eval_phase/test_stream/Task000": 0.5,
               f"{STREAM_FORGETTING}/eval_phase/test_stream/Task000": 0.25,
               f"{STREAM_ACC}/eval_phase/test_stream/Task000": 0.3}
    info = StepInfo(step=1, history=[{"top1_seen": 1.0, "avg_incremental": 1.0, "forgetting": 0.0}],
                    test_sizes=[10, 10])
    assert step_scores("class_incremental", results, info) == {
        "top1_seen": 0.5, "avg_incremental": 0.75, "forgetting": 0.25}


def test_task_incremental_score_is_the_mean_over_seen_tasks_only():
    exp = "Top1_Acc_Exp/eval_phase/test_stream"
    results = {f"{exp}/Task000/Exp000": 0.9, f"{exp}/Task001/Exp001": 0.5, f"{exp}/Task002/Exp002": 0.1,
               f"{STREAM_ACC}/eval_phase/test_stream/Task002": 0.5,
               f"{STREAM_FORGETTING}/eval_phase/test_stream/Task002": 0.05}
    scores = step_scores("task_incremental", results, StepInfo(step=1, history=[{}], test_sizes=[5, 5, 5]))
    # tasks 0 and 1 are seen after step 1 (0-based); task 2 and the stream key (Task002) must not count
    assert scores == pytest.approx({"mean_task_top1": 0.7, "forgetting": 0.05})


def test_new_class_scores_plain_and_weighted_mean():
    exp = "Top1_Acc_Exp/eval_phase/test_stream/Task000"
    results = {f"{exp}/Exp000": 0.9, f"{exp}/Exp001": 0.5}
    scores = step_scores("new_class", results, StepInfo(step=1, history=[{}], test_sizes=[900, 100]))
    assert scores == pytest.approx({"weighted_mean": 0.86, "old": 0.9, "new": 0.5, "mean": 0.7})


def test_unknown_setting_and_missing_metric_are_clear_errors():
    with pytest.raises(ValueError, match="no scores for setting 'nope'"):
        step_scores("nope", {}, StepInfo(0, [], []))
    with pytest.raises(KeyError, match="make_evaluator"):
        step_scores("same_class", {}, StepInfo(0, [], []))


# --- the scores of a model that always predicts label 0 ----------------------------


class AlwaysZero(nn.Module):
    """Logits that always pick label 0; one parameter so an optimizer can be built (lr 0)."""

    def __init__(self, classes: int):
        super().__init__()
        self.classes = classes
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = torch.zeros(len(x), self.classes) + 0 * self.unused
        logits[:, 0] = 1.0
        return logits


def _scores_of_constant_model(benchmark, setting):
    model = AlwaysZero(4)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                     train_mb_size=32, train_epochs=1, eval_mb_size=64, evaluator=make_evaluator())
    sizes = [len(e.dataset) for e in benchmark.test_stream]
    history = []
    for step, exp in enumerate(benchmark.train_stream):
        strategy.train(exp)
        history.append(step_scores(setting, strategy.eval(benchmark.test_stream), StepInfo(step, history, sizes)))
    return history


def test_class_incremental_scores_of_a_constant_model(tiny_data):
    train, test = tiny_data  # 4 classes, 20 test images each
    benchmark = class_incremental(train, test, classes_per_step=2, seed=0)
    first, second = _scores_of_constant_model(benchmark, "class_incremental")
    # step 1: the 40 test images of the first 2 classes, 20 of them label 0
    assert first == pytest.approx({"top1_seen": 0.5, "avg_incremental": 0.5, "forgetting": 0.0})
    # step 2: 20 right of 80 seen; the first group's accuracy did not move (0.5 -> 0.5)
    assert second == pytest.approx({"top1_seen": 0.25, "avg_incremental": 0.375, "forgetting": 0.0})


def test_task_incremental_scores_of_a_constant_model(tiny_data):
    train, test = tiny_data
    benchmark = task_incremental(train, test, classes_per_step=2, seed=0)
    first, second = _scores_of_constant_model(benchmark, "task_incremental")
    # labels restart at 0 in every task: label 0 is half of each task's test images
    assert first["mean_task_top1"] == pytest.approx(0.5) and second["mean_task_top1"] == pytest.approx(0.5)


# --- the sweep in the new settings -----------------------------------------------------


@pytest.mark.parametrize("scenario,header", [
    ("class_incremental", "Top-1 accuracy (%) on the test images of all classes seen so far"),
    ("task_incremental", "Mean over the tasks seen so far of each task's Top-1 accuracy (%), task label given"),
])
def test_split_sweep_runs_every_baseline(tmp_path, tiny_data, scenario, header):
    preset = tiny(scenario=scenario, methods=SPLIT_METHODS)
    results = run_sweep(preset, tmp_path, data=tiny_data, log=lambda s: None, command="pytest")
    assert [r.method for r in results] == list(SPLIT_METHODS)
    table = (tmp_path / "table.md").read_text()
    assert table.startswith(header)
    assert "Scores after the last step" in table and "forgetting" in table
    for r in results:
        assert len(r.scores) == 2 and all(0.0 <= v <= 1.0 for s in r.scores for v in s.values())
    rows = (tmp_path / "runs.csv").read_text().splitlines()
    # class-incremental runs add the per-group accuracies and prediction shares (metrics.groups) last
    groups = ["group_acc_1", "group_acc_2", "group_share_1", "group_share_2", "group_share_unseen"]
    columns = rows[0].split(",")
    assert columns[-1 - len(groups) if scenario == "class_incremental" else -1] == "forgetting"
    assert columns[len(columns) - len(groups):] == groups if scenario == "class_incremental" else True
    assert len(rows) == 1 + 2 * len(SPLIT_METHODS)
    if scenario == "class_incremental":
        # a fine-tuned single head forgets the first classes; Cumulative keeps its data
        final = {r.method: r.scores[-1] for r in results}
        assert final["cumulative"]["top1_seen"] > final["finetune"]["top1_seen"]


def test_method_outside_its_setting_fails_before_training(tmp_path, tiny_data):
    with pytest.raises(ValueError, match="'sst' does not run in the 'class_incremental' setting"):
        run_sweep(tiny(methods=("finetune", "sst")), tmp_path, data=tiny_data, log=lambda s: None)
    assert not (tmp_path / "finetune").exists()


def test_variant_typo_fails_before_any_run_trains(tmp_path):
    with pytest.raises(ValueError, match="no argument 'target_raito'; did you mean 'target_ratio'"):
        main(["--preset", "quick", "--methods", "finetune", "sst:target_raito=0.5", "--out", str(tmp_path)])
    assert not (tmp_path / "finetune").exists()
    with pytest.raises(ValueError, match="'replay' has no argument 'mem_sise'; did you mean 'mem_size'"):
        run_sweep(tiny(methods=("finetune", "replay:mem_sise=3")), tmp_path, data=(None, None))


def test_set_parses_each_field_type_and_names_the_closest_field():
    p = Preset().with_settings(["ratios=1,2,3,4", "label_noise=0.1", "train_fraction=0.25",
                                "scenario=class_incremental", "multi_head=false",
                                "scenario_kwargs={'classes_per_step': 5}", "methods=finetune,lwf"])
    assert p.ratios == (1, 2, 3, 4) and p.label_noise == 0.1 and p.train_fraction == 0.25
    assert p.scenario == "class_incremental" and p.multi_head is False
    assert p.scenario_kwargs == {"classes_per_step": 5} and p.methods == ("finetune", "lwf")
    with pytest.raises(ValueError, match="no field 'label_nosie'; did you mean 'label_noise'"):
        Preset().with_settings(["label_nosie=0.1"])
    with pytest.raises(ValueError, match="not a valid float"):
        Preset().with_settings(["lr_finetune=fast"])


# --- a method whose model grows resumes to the same table -------------------------------


class Grow(SupervisedPlugin):
    """Adds a fresh Linear(4, 4) block before each experience after the first."""

    def before_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter > 0:
            grow(strategy.model, 1)
            strategy.make_optimizer(reset_optimizer_state=True)


def grow(model, n):
    for _ in range(n):
        model.extra.append(nn.Linear(4, 4))


class Growing(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone, self.extra = backbone, nn.ModuleList()

    def forward(self, x):
        y = self.backbone(x)
        for layer in self.extra:
            y = y + layer(y)
        return y


class CrashAfterFirstStep(SupervisedPlugin):
    def __init__(self, armed):
        super().__init__()
        self.armed = armed

    def after_training_exp(self, strategy, **kwargs):
        if self.armed and strategy.clock.train_exp_counter == 1:
            raise RuntimeError("crash")


@pytest.fixture
def growing_method():
    def build(ctx):
        ctx.model = Growing(ctx.model)
        kwargs = common_kwargs(ctx)
        kwargs["plugins"] = [Grow(), *kwargs["plugins"]]
        return Naive(model=ctx.model, **kwargs)

    def rebuild(strategy, state):
        grow(strategy.model, int(state["blocks"]) - len(strategy.model.extra))

    register(Method("growing", build, "test: a model that grows each step", settings=("class_incremental",),
                    state_dict=lambda s: {"blocks": len(s.model.extra)}, rebuild_model=rebuild))
    yield "growing"
    registry.METHODS.pop("growing")


def test_rebuilt_model_resumes_to_the_same_table(tmp_path, tiny_data, growing_method):
    preset = tiny(methods=(growing_method,), scenario_kwargs={"classes_per_step": 1})  # 4 steps
    run_sweep(preset, tmp_path / "straight", data=tiny_data, log=lambda s: None)
    with pytest.raises(RuntimeError, match="crash"):
        run_sweep(preset, tmp_path / "resumed", data=tiny_data, log=lambda s: None,
                  extra_plugins=lambda m, s: [CrashAfterFirstStep(True)])
    ckpt = torch.load(tmp_path / "resumed" / "growing" / "seed0" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 1 and ckpt["method"] == {"blocks": 0}
    logs = []
    run_sweep(preset, tmp_path / "resumed", data=tiny_data, log=logs.append)
    assert any("resuming after step 1" in line for line in logs)
    assert (tmp_path / "resumed" / "table.csv").read_text() == (tmp_path / "straight" / "table.csv").read_text()
    a = torch.load(tmp_path / "resumed" / "growing" / "seed0" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "growing" / "seed0" / "checkpoint.pt", weights_only=True)
    assert a["method"] == {"blocks": 3} and a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("method,scenario", [("replay", "class_incremental"), ("lwf", "task_incremental")])
def test_resume_is_bit_identical_in_the_new_settings(tmp_path, tiny_data, method, scenario):
    """Replay refills its buffer from (seed, experience); a multi-head model grows its
    heads before its weights load."""
    preset = tiny(methods=(method,), scenario=scenario, scenario_kwargs={"classes_per_step": 1})
    run_sweep(preset, tmp_path / "straight", data=tiny_data, log=lambda s: None)
    with pytest.raises(RuntimeError, match="crash"):
        run_sweep(preset, tmp_path / "resumed", data=tiny_data, log=lambda s: None,
                  extra_plugins=lambda m, s: [CrashAfterFirstStep(True)])
    run_sweep(preset, tmp_path / "resumed", data=tiny_data, log=lambda s: None)
    a = torch.load(tmp_path / "resumed" / method / "seed0" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / method / "seed0" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert (tmp_path / "resumed" / "table.csv").read_text() == (tmp_path / "straight" / "table.csv").read_text()


def test_evaluate_on_valid_scores_the_validation_slices(tmp_path, tiny_data, monkeypatch):
    from avalanche_sst.experiments import tables

    splits = []
    monkeypatch.setattr(tables, "plot_accuracy", lambda summary, path, title="", split="test set": splits.append(split))
    preset = tiny(validation_fraction=0.25, evaluate_on="valid")
    (result,) = run_sweep(preset, tmp_path, data=tiny_data, log=lambda s: None)
    assert splits == ["validation slices"]  # the figure's y axis names what was scored
    # 10 validation images per class: 20 seen after step 1, 40 after step 2 (the test set has 40 and 80)
    first, second = (s["top1_seen"] for s in result.scores)
    assert abs(first * 20 - round(first * 20)) < 1e-6 and abs(second * 40 - round(second * 40)) < 1e-6
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "finetune" / "seed0" / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert any("/eval_phase/valid_stream" in t for t in tags)
    assert not any("/eval_phase/test_stream" in t for t in tags)
    assert "Scored on the VALIDATION slices" in (tmp_path / "table.md").read_text()
    with pytest.raises(ValueError, match="validation_fraction=0.1"):
        run_sweep(tiny(evaluate_on="valid"), tmp_path / "b", data=tiny_data, log=lambda s: None)


def test_the_harness_imports_without_avalanches_qp_solver_warning():
    """Avalanche's start-up warns that qpsolvers has no solver (GEM's, unused here); the
    sweep's output, in the driver and in every Ray worker, must not carry it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-W", "default", "-c", "import avalanche_sst.experiments.sweep"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no QP solver" not in done.stderr
