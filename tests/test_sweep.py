"""The sweep: output files, tables from the runs' own numbers, shared model
initialisation, TensorBoard events, checkpoints, and crash/resume."""

from __future__ import annotations

import csv
import re
import json
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from avalanche.core import SupervisedPlugin

from avalanche_sst.checkpoint import load_checkpoint
from avalanche_sst.cpu_path import cpu_path, cpu_path_text
from avalanche_sst.experiments.methods import METHODS, get_method
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import ACC_KEY, build_benchmark, build_model, main, run_sweep

BASELINES = ("finetune", "lwf", "ewc", "cumulative")
ALL = BASELINES + ("sst",)


def tiny_preset(**changes) -> Preset:
    base = Preset(
        name="test", model="resnet8-w4", methods=BASELINES, ratios=(1, 1), seeds=(0,),
        epochs_scratch=1, epochs_finetune=1, sst_epochs=3, aod_epochs=1,
        batch_size=16, eval_batch_size=64, validation_fraction=0.2,
        # a finetune lr that moves the weights, so later steps differ between methods
        lr_finetune=0.02, ewc_lambda=1.0, num_threads=1,
    )
    return base.replace(**changes)


class RecordInit(SupervisedPlugin):
    """Keeps a copy of the weights each run starts training from."""

    def __init__(self, store: dict, key):
        super().__init__()
        self.store, self.key = store, key

    def before_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter == 0:
            self.store[self.key] = {k: v.detach().clone() for k, v in strategy.model.state_dict().items()}


class Crash(Exception):
    pass


class CrashOnSecondStep(SupervisedPlugin):
    """Raises at the end of the second experience (the first one is checkpointed)."""

    def __init__(self, method: str, crashed: list):
        super().__init__()
        self.method, self.crashed = method, crashed

    def after_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter == 1:
            self.crashed.append(self.method)
            raise Crash(self.method)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def scalars(tb_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


# --------------------------------------------------------------------------
# one sweep of the baselines over two seeds, shared by several tests
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory, make_data):
    out = tmp_path_factory.mktemp("sweep")
    data = (make_data(40, seed=0), make_data(20, seed=1))
    preset = tiny_preset(seeds=(0, 1))
    inits: dict = {}
    logs: list[str] = []
    results = run_sweep(preset, out, data=data, extra_plugins=lambda m, s: [RecordInit(inits, (m, s))],
                        log=logs.append, command="pytest")
    return dict(out=out, preset=preset, data=data, results=results, inits=inits, logs=logs)


def test_sweep_writes_every_file(sweep):
    out, preset = sweep["out"], sweep["preset"]
    for name in ("table.md", "table.csv", "runs.csv", "accuracy.png", "preset.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "preset.json").read_text())["methods"] == list(BASELINES)
    # the CPU path beside the versions: in preset.json and in the table's footer
    recorded = json.loads((out / "preset.json").read_text())["cpu_path"]
    assert recorded == cpu_path() and recorded["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    footer = (out / "table.md").read_text().strip().splitlines()[-1]
    assert f"CPU path: {cpu_path_text(recorded)}; " in footer and "bit for bit" in footer
    # and the commit of the code that made the numbers, as each run recorded it
    commit = json.loads((out / "preset.json").read_text())["provenance"]["git_commit"]
    assert commit and f"Code: commit {commit[:12]}" in footer
    by_run = {(r.method, r.seed): r for r in sweep["results"]}
    assert sorted(by_run) == sorted((m, s) for m in BASELINES for s in preset.seeds)
    for (m, s), r in by_run.items():
        run_dir = out / m / f"seed{s}"
        for name in ("steps.csv", "done.json", "checkpoint.pt"):
            assert (run_dir / name).is_file(), (m, s, name)
        assert len(r.accuracies) == len(preset.ratios)
        assert all(0.0 <= a <= 1.0 for a in r.accuracies)
        steps = read_csv(run_dir / "steps.csv")
        assert [int(row["step"]) for row in steps] == [1, 2]
        assert [float(row["top1"]) for row in steps] == pytest.approx(r.accuracies, abs=1e-6)
        assert json.loads((run_dir / "done.json").read_text())["accuracies"] == r.accuracies
        assert list((run_dir / "tb").glob("events.out.tfevents.*"))
        assert (run_dir / "csv").is_dir()


def test_cost_per_step_is_recorded_and_tabulated(sweep):
    """Fine-tuning costs one sample-pass per training sample and epoch; LwF adds its
    teacher's forward (1/3) after step 1; EWC its importances (one pass over the part)."""
    out, preset = sweep["out"], sweep["preset"]
    runs = {(r["method"], int(r["seed"]), int(r["step"])): float(r["cost"]) for r in read_csv(out / "runs.csv")}
    n = [len(exp.dataset) for exp in build_benchmark(preset, 0, sweep["data"]).train_stream]
    assert runs["finetune", 0, 1] == pytest.approx(n[0]) and runs["finetune", 0, 2] == pytest.approx(n[1])
    assert runs["lwf", 0, 2] == pytest.approx(n[1] * 4 / 3, abs=0.05)  # runs.csv keeps one decimal
    assert runs["ewc", 0, 2] == pytest.approx(2 * n[1])
    md = (out / "table.md").read_text()
    assert "Training cost per step (thousand sample-passes" in md
    assert f"| finetune | {n[0] / 1000:.2f} | {n[1] / 1000:.2f} |" in md


def test_table_rows_columns_and_mean_std_from_runs(sweep):
    out, preset = sweep["out"], sweep["preset"]
    n_steps = len(preset.ratios)
    table = read_csv(out / "table.csv")
    assert [row["method"] for row in table] == list(BASELINES)
    assert list(table[0]) == ["method"] + [f"step{s}_{k}" for s in range(1, n_steps + 1) for k in ("mean", "std")]

    per_cell = defaultdict(list)
    runs = read_csv(out / "runs.csv")
    assert len(runs) == len(BASELINES) * len(preset.seeds) * n_steps
    for row in runs:
        per_cell[row["method"], int(row["step"])].append(100 * float(row["top1"]))
    any_spread = False
    for row in table:
        for s in range(1, n_steps + 1):
            values = per_cell[row["method"], s]
            assert len(values) == len(preset.seeds)
            assert float(row[f"step{s}_mean"]) == pytest.approx(statistics.fmean(values), abs=1e-3)
            assert float(row[f"step{s}_std"]) == pytest.approx(statistics.stdev(values), abs=1e-3)  # ddof=1
            any_spread |= statistics.stdev(values) > 0.1
    assert any_spread, "both seeds gave identical accuracies everywhere: the std check proves nothing"

    md = (out / "table.md").read_text()
    assert "seeds [0, 1]" in md and "pytest" in md
    first_table = next(block for block in md.split("\n\n") if block.startswith("|"))
    lines = first_table.splitlines()
    assert lines[0] == "| method | step 1 | step 2 |"
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in lines[2:]}
    assert list(rows) == list(BASELINES)
    for row in table:
        assert rows[row["method"]] == [
            f"{float(row[f'step{s}_mean']):.2f} ± {float(row[f'step{s}_std']):.2f}" for s in (1, 2)
        ]


def test_every_method_of_a_seed_starts_from_the_same_model(sweep):
    inits, results, data, preset = sweep["inits"], sweep["results"], sweep["data"], sweep["preset"]
    assert sorted(inits) == sorted((m, s) for m in BASELINES for s in preset.seeds)
    for s in preset.seeds:
        ref = inits["finetune", s]
        for m in BASELINES:
            assert all(torch.equal(ref[k], inits[m, s][k]) for k in ref), (m, s)
        # ... and it is build_model's initialisation for that seed
        model = build_model(preset, build_benchmark(preset, s, data), s)
        assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert not torch.equal(inits["finetune", 0]["fc.weight"], inits["finetune", 1]["fc.weight"])

    # Step 1 is plain cross-entropy training for all four (LwF has no teacher and EWC no
    # importances yet; Cumulative has seen one experience), with the same seeding.
    acc = {(r.method, r.seed): r.accuracies for r in results}
    for s in preset.seeds:
        assert len({acc[m, s][0] for m in BASELINES}) == 1, {m: acc[m, s] for m in BASELINES}
    # different seeds give different models/splits
    assert acc["finetune", 0] != acc["finetune", 1]


def test_tensorboard_events_hold_the_accuracy(sweep):
    out = sweep["out"]
    for r in sweep["results"]:
        tags = scalars(out / r.method / f"seed{r.seed}" / "tb")
        assert ACC_KEY in tags, (r.method, sorted(tags))
        values = [e.value for e in tags[ACC_KEY]]
        assert values == pytest.approx(r.accuracies, abs=1e-6)
        assert any(t.startswith("Loss_Epoch/train_phase") for t in tags)


def test_checkpoints_load_with_weights_only(sweep):
    out = sweep["out"]
    for r in sweep["results"]:
        path = out / r.method / f"seed{r.seed}" / "checkpoint.pt"
        state = torch.load(path, weights_only=True)
        again = load_checkpoint(path)
        assert again["step"] == state["step"] and again["scores"] == state["scores"]
        assert state["step"] == 2
        assert [s["top1"] for s in state["scores"]] == r.accuracies
        assert "fc.weight" in state["model"] and isinstance(state["model"]["fc.weight"], torch.Tensor)
        if r.method == "lwf":
            assert "prev_model" in state["method"] and state["method"]["expcount"] == 2
        if r.method == "ewc":
            assert set(state["method"]) == {"saved_params", "importances"}
            assert len(state["method"]["importances"]) >= 1


# --------------------------------------------------------------------------
# the SST method, and crash / resume for every method
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, make_data):
    out = tmp_path_factory.mktemp("fresh")
    data = (make_data(40, seed=0), make_data(20, seed=1))
    preset = tiny_preset(methods=ALL, ratios=(1, 1, 1))
    results = run_sweep(preset, out, data=data, log=lambda s: None)
    return dict(out=out, preset=preset, data=data, results=results)


def test_sst_runs_in_a_sweep_and_logs_its_phases(uninterrupted):
    out = uninterrupted["out"]
    sst = next(r for r in uninterrupted["results"] if r.method == "sst")
    assert len(sst.accuracies) == 3 and all(0.0 <= a <= 1.0 for a in sst.accuracies)
    tags = scalars(out / "sst" / "seed0" / "tb")
    assert "SST/sp_ratio" in tags and "phase/aod" in tags, sorted(tags)
    # AOD runs on every step after the first (value = experience index), scratch on the first
    assert [e.value for e in tags["phase/aod"]] == [1.0, 2.0]
    assert [e.value for e in tags["phase/scratch"]] == [0.0]
    assert [e.value for e in tags[ACC_KEY]] == pytest.approx(sst.accuracies, abs=1e-6)
    state = torch.load(out / "sst" / "seed0" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["method"]["prepared"] is None  # nothing prepared after the last step


def test_crash_and_resume_give_the_same_table(tmp_path, uninterrupted):
    preset, data = uninterrupted["preset"], uninterrupted["data"]
    out = tmp_path / "resumed"
    crashed: list[str] = []
    logs: list[str] = []
    done_mtimes: dict[str, int] = {}

    def plugins(method, seed):
        return [] if method in crashed else [CrashOnSecondStep(method, crashed)]

    # Each call crashes the next method at its second step; the following call resumes it.
    for attempt in range(len(ALL) + 1):
        logs.append(f"--- call {attempt}")
        try:
            results = run_sweep(preset, out, data=data, extra_plugins=plugins, log=logs.append)
            break
        except Crash as crash:
            method = str(crash)
            run_dir = out / method / "seed0"
            ckpt = load_checkpoint(run_dir / "checkpoint.pt")
            assert ckpt["step"] == 1, (method, ckpt["step"])
            assert not (run_dir / "done.json").exists()
            for m in ALL:
                done = out / m / "seed0" / "done.json"
                if done.exists() and m not in done_mtimes:
                    done_mtimes[m] = done.stat().st_mtime_ns
    else:
        pytest.fail(f"the sweep never finished; crashed: {crashed}")
    assert crashed == list(ALL), "every method (sst included) must crash once at its second step"
    assert attempt == len(ALL)

    # Finished runs are not redone: the last call only resumed sst and reused the others.
    last_call = logs[logs.index(f"--- call {attempt}"):]
    for m in ALL[:-1]:
        assert any(l.startswith(f"[{m} seed 0] finished earlier") for l in last_call), m
        assert (out / m / "seed0" / "done.json").stat().st_mtime_ns == done_mtimes[m], m
    assert any(l.startswith("[sst seed 0] resuming after step 1") for l in last_call)
    for m in ALL:
        assert sum(l.startswith(f"[{m} seed 0] resuming after step 1") for l in logs) == 1, m

    fresh = {r.method: r.accuracies for r in uninterrupted["results"]}
    resumed = {r.method: r.accuracies for r in results}
    assert resumed == fresh
    assert (out / "table.csv").read_text() == (uninterrupted["out"] / "table.csv").read_text()

    def strip_seconds(path):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in read_csv(path)]

    assert strip_seconds(out / "runs.csv") == strip_seconds(uninterrupted["out"] / "runs.csv")

    # Stronger than the accuracies: the final checkpoints (model weights and the methods'
    # own state: LwF's teacher, EWC's importances, SST's prepared model) are bit-identical.
    for m in ALL:
        a = torch.load(out / m / "seed0" / "checkpoint.pt", weights_only=True)
        b = torch.load(uninterrupted["out"] / m / "seed0" / "checkpoint.pt", weights_only=True)
        a.pop("seconds"), b.pop("seconds")
        a.pop("evaluator"), b.pop("evaluator")  # log file lengths: the resumed run has two event files
        assert_same_state(a, b, m)

    # ... and so are the logs: Avalanche's CSV files, and every TensorBoard scalar once
    from test_resume import tb_scalars

    for m in ALL:
        run, ref = out / m / "seed0", uninterrupted["out"] / m / "seed0"
        for name in ("eval_results.csv", "training_results.csv"):
            assert (run / "csv" / name).read_text() == (ref / "csv" / name).read_text(), (m, name)
        assert tb_scalars(run / "tb") == tb_scalars(ref / "tb"), m


def assert_same_state(a, b, where):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}/{i}")
    else:
        assert a == b, (where, a, b)


def test_methods_differ_so_the_resume_comparison_is_informative(uninterrupted):
    """Sanity check of the comparison above: every method ends with other weights
    (LwF's and EWC's penalties act), so matching checkpoints are not a coincidence."""
    out = uninterrupted["out"]
    final = {m: torch.load(out / m / "seed0" / "checkpoint.pt", weights_only=True)["model"] for m in ALL}
    for i, m in enumerate(ALL):
        for n in ALL[i + 1:]:
            assert not all(torch.equal(final[m][k], final[n][k]) for k in final[m]), (m, n)


# --------------------------------------------------------------------------
# method names
# --------------------------------------------------------------------------
def test_unknown_method_lists_the_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'nope'; choose from \[.*'finetune'.*'sst'"):
        get_method("nope")
    with pytest.raises(ValueError, match="unknown method 'nope'") as info:
        main(["--preset", "quick", "--methods", "finetune", "nope", "--out", str(tmp_path / "x")])
    for name in BASELINES + ("sst",):
        assert repr(name) in str(info.value)
    assert str(sorted(METHODS)) in str(info.value)
    # it fails before any training or data loading: no run folder was made
    assert not (tmp_path / "x" / "finetune").exists()


def test_report_only_tabulates_finished_runs_and_names_the_rest(tmp_path, tiny_data):
    from avalanche_sst.experiments.sweep import collect_finished

    preset = Preset(model="resnet8-w4", methods=("finetune", "ewc"), seeds=(0,), ratios=(1, 1),
                    epochs_scratch=1, epochs_finetune=1, batch_size=16, eval_batch_size=64,
                    validation_fraction=0.2)
    run_sweep(preset.replace(methods=("finetune",)), tmp_path, data=tiny_data, log=lambda m: None)
    finished, missing = collect_finished(preset, tmp_path)
    assert [(r.method, r.seed) for r in finished] == [("finetune", 0)]
    assert missing == ["ewc seed 0"]


def test_a_finished_run_is_reused_only_under_its_own_settings(tmp_path, make_data):
    data = (make_data(40, seed=0), make_data(20, seed=1))
    preset = tiny_preset(methods=("finetune",))
    run_sweep(preset, tmp_path, data=data, log=lambda s: None)
    done = json.loads((tmp_path / "finetune" / "seed0" / "done.json").read_text())
    assert done["settings"]["lr_finetune"] == 0.02 and "seeds" not in done["settings"]
    logs: list[str] = []
    # fields that cannot change its numbers (name, other methods' kwargs, threads) reuse it
    run_sweep(preset.replace(name="other", method_kwargs={"lwf": {"x": 1}}), tmp_path, data=data, log=logs.append)
    assert any("finished earlier" in line for line in logs)
    with pytest.raises(ValueError, match=r"other settings \(lr_finetune: 0.02 -> 0.05\).*another --out"):
        run_sweep(preset.replace(lr_finetune=0.05), tmp_path, data=data, log=lambda s: None)
    with pytest.raises(ValueError, match=r"method_kwargs: \{\} -> \{'epochs': 2\}"):
        run_sweep(preset.replace(method_kwargs={"finetune": {"epochs": 2}}), tmp_path, data=data, log=lambda s: None)


def test_a_preset_key_the_method_name_replaces_is_not_a_changed_setting(tmp_path):
    """m2kd:lr_factor=0.1 ran at 0.1 whatever factor the preset carried for m2kd: a selection's finished runs
    stay reusable after the preset takes the selected factor; any other kwarg still counts."""
    from avalanche_sst.experiments.sweep import check_same_settings

    saved = {"lr_scratch": 0.1, "method_kwargs": {"lr_factor": 1.0, "memory_size": 2000}}
    now = {"lr_scratch": 0.1, "method_kwargs": {"lr_factor": 10.0, "memory_size": 2000}}
    check_same_settings(tmp_path / "done.json", saved, now, "icarl:lr_factor=0.1")
    for name in ("icarl", ""):
        with pytest.raises(ValueError, match=r"other settings \(method_kwargs: \{'lr_factor': 1.0, 'memory_size': "
                                             r"2000\} -> \{'lr_factor': 10.0, 'memory_size': 2000\}\)"):
            check_same_settings(tmp_path / "done.json", saved, now, name)
    with pytest.raises(ValueError, match=r"other settings \(method_kwargs: \{'lr_factor': 1.0\} -> "
                                         r"\{'lr_factor': 10.0\}\)"):  # the name fixes memory_size only
        check_same_settings(tmp_path / "done.json", saved, now, "icarl:memory_size=2000")
    changed = {"lr_scratch": 0.1, "method_kwargs": {"lr_factor": 10.0, "memory_size": 500}}
    with pytest.raises(ValueError, match=r"method_kwargs: \{'memory_size': 2000\} -> \{'memory_size': 500\}"):
        check_same_settings(tmp_path / "done.json", saved, changed, "icarl:lr_factor=0.1")


def test_a_second_sweep_in_the_folder_keeps_the_first_ones_finished_runs(tmp_path, make_data):
    # adaq_table4 runs its ablation methods in adaq_split's folder: adaq_split's rows must stay
    data = (make_data(40, seed=0), make_data(20, seed=1))
    preset = tiny_preset(methods=("finetune",))
    run_sweep(preset, tmp_path, data=data, log=lambda s: None)
    first = read_csv(tmp_path / "runs.csv")
    run_sweep(preset.replace(methods=("ewc",), name="second"), tmp_path, data=data, log=lambda s: None,
              command="pytest")
    rows = read_csv(tmp_path / "runs.csv")
    assert [r for r in rows if r["method"] == "finetune"] == first
    assert sorted({r["method"] for r in rows}) == ["ewc", "finetune"]
    assert json.loads((tmp_path / "preset.json").read_text())["methods"] == ["finetune", "ewc"]
    table = (tmp_path / "table.md").read_text()
    assert "| finetune |" in table and "| ewc |" in table
    # the footer says how the runs shared the machine, not the table process's own thread count
    footer = table.strip().splitlines()[-1]
    assert footer.startswith("Produced by `pytest`") and ", 1 run at a time, 1 torch thread each " in footer
    assert not re.search(r"\d threads", footer)
    # a sweep under other settings is another experiment: the earlier runs are not listed with it
    run_sweep(preset.replace(methods=("lwf",), lr_finetune=0.05), tmp_path, data=data, log=lambda s: None)
    assert {r["method"] for r in read_csv(tmp_path / "runs.csv")} == {"lwf"}
