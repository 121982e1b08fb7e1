"""Learning curves for converged presets (the plateau rule, the resumable runner) and the generated
"Does it pay at equal compute?" section (issue 14, parts 0 and 7)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from avalanche_sst.experiments import curves
from avalanche_sst.experiments.curves import (CURVE_COLUMNS, choose_epochs, decision_curve, default_budgets,
                                              plateau_epoch, run_curves, train_curve)
from avalanche_sst.experiments.paper.equal_compute import (equal_compute_section, load_sweeps, read_runs,
                                                           verdicts, write_equal_compute)
from avalanche_sst.experiments.paper.stats import seed_test
from avalanche_sst.experiments.presets import Preset

from conftest import make_images, paired_p_by_hand as p_df2

# --- the plateau rule on hand-made curves ------------------------------------------------------------


def test_plateau_after_rise_is_the_first_epoch_no_later_epoch_beats_by_min_delta():
    accs = [0.5, 0.6, 0.7, 0.75, 0.752, 0.751, 0.753, 0.749]
    # epoch 3 (0.70) is beaten later by 0.053 > 0.005; epoch 4 (0.75) only by 0.003
    assert plateau_epoch(range(1, 9), accs, min_delta=0.005, patience=3) == 4
    # with no tolerance the small later gains count: the best (0.753, epoch 7) needs 3 epochs after it
    assert plateau_epoch(range(1, 9), accs, min_delta=0.0, patience=3) is None
    assert plateau_epoch(range(1, 9), accs, min_delta=0.0, patience=1) == 7


def test_a_late_gain_beyond_min_delta_moves_the_choice_later():
    accs = [0.5, 0.7, 0.7, 0.7, 0.72, 0.72, 0.72, 0.72]
    assert plateau_epoch(range(1, 9), accs, min_delta=0.005, patience=2) == 5
    assert plateau_epoch(range(1, 9), accs, min_delta=0.03, patience=2) == 2  # 0.02 gain tolerated


def test_a_still_rising_or_too_short_curve_has_no_plateau():
    assert plateau_epoch([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], patience=0) == 4  # only the last point qualifies
    assert plateau_epoch([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], patience=1) is None
    # flat from epoch 4 but only one epoch of evidence after it
    assert plateau_epoch([1, 2, 3, 4, 5], [0.5, 0.6, 0.7, 0.8, 0.8], patience=3) is None


def test_rule_on_a_budget_grid_counts_patience_in_epochs():
    budgets, finals = [5, 10, 20, 30], [0.80, 0.85, 0.86, 0.862]
    assert plateau_epoch(budgets, finals, min_delta=0.005, patience=5) == 20
    assert plateau_epoch(budgets, finals, min_delta=0.005, patience=11) is None  # 30 - 20 = 10 < 11


@pytest.mark.parametrize("epochs,accs", [([1, 2], [0.1]), ([], []), ([1, 1, 2], [0.1, 0.2, 0.3])])
def test_plateau_rejects_malformed_curves(epochs, accs):
    with pytest.raises(ValueError, match="epochs"):
        plateau_epoch(epochs, accs)


def test_plateau_rejects_negative_tolerances():
    with pytest.raises(ValueError, match="min_delta"):
        plateau_epoch([1, 2], [0.1, 0.2], min_delta=-0.1)


def test_default_budgets():
    assert default_budgets(30) == (5, 10, 15, 20, 30)
    assert default_budgets(3) == (1, 2, 3)
    with pytest.raises(ValueError, match="max_epochs"):
        default_budgets(0)


def _row(seed, step, schedule, budget, epoch, acc):
    return {"preset": "p", "seed": seed, "step": step, "schedule": schedule, "budget": budget, "epoch": epoch,
            "val_acc": acc}


def test_decision_curve_reads_final_epochs_of_cosine_runs_and_averages_seeds():
    rows = [_row(0, 2, "cosine", 2, 1, 0.1), _row(0, 2, "cosine", 2, 2, 0.6),
            _row(1, 2, "cosine", 2, 1, 0.2), _row(1, 2, "cosine", 2, 2, 0.8),
            _row(0, 2, "cosine", 4, 4, 0.9), _row(1, 2, "cosine", 4, 4, 0.7),
            _row(0, 1, "cosine", 2, 2, 0.0), _row(0, 2, "constant", 5, 1, 0.0)]
    xs, means, seeds = decision_curve(rows, 2, "cosine")
    assert xs == [2, 4] and means == pytest.approx([0.7, 0.8]) and seeds == 2
    assert choose_epochs(rows, 2, "cosine", min_delta=0.2, patience=2) == (2, True)
    assert choose_epochs(rows, 2, "cosine", min_delta=0.05, patience=2) == (4, False)  # rising: the largest
    with pytest.raises(ValueError, match="no cosine curve for step 3"):
        choose_epochs(rows, 3, "cosine")


# --- the runner on tiny generated data ------------------------------------------------------------------


def tiny_preset(**changes) -> Preset:
    base = Preset(name="tiny", model="resnet8-w4", ratios=(1, 1), seeds=(0,), batch_size=16, eval_batch_size=64,
                  validation_fraction=0.25, lr_finetune=0.02, num_threads=1)
    return base.replace(**changes)


@pytest.fixture
def data():
    return make_images(40, seed=0), make_images(7, seed=1)  # 80 training samples per part, 20 of them validation


def test_train_curve_scores_the_given_dataset_after_every_epoch():
    preset = tiny_preset()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    from avalanche_sst.benchmarks import same_class_accumulating

    # 3 "validation" images: the test set of a one-part benchmark
    bench = same_class_accumulating(make_images(8, seed=0), make_images(1, seed=2, classes=3), ratios=(1,))
    valid_data = bench.test_stream[0].dataset
    values = train_curve(preset, model, bench.train_stream[0], valid_data, lr=0.1, epochs=3, schedule="constant",
                         device=torch.device("cpu"))
    assert len(values) == 3
    assert all(abs(3 * v - round(3 * v)) < 1e-9 for v in values)  # fractions of the 3 validation images
    with pytest.raises(ValueError, match="schedule"):
        train_curve(preset, model, bench.train_stream[0], valid_data, 0.1, 1, "linear", torch.device("cpu"))


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cosine_runner_writes_files_and_resumes_without_retraining(tmp_path, data, monkeypatch):
    starts = []  # (step, first weight) each training run starts from
    original = curves.train_curve

    def recording(preset, model, experience, valid, lr, epochs, schedule, device):
        starts.append((experience.current_experience + 1, epochs, next(iter(model.parameters())).detach().clone()))
        return original(preset, model, experience, valid, lr, epochs, schedule, device)

    monkeypatch.setattr(curves, "train_curve", recording)
    out = tmp_path / "curves"
    result = run_curves(tiny_preset(), out, max_epochs=2, budgets=(1, 2), patience=1, data=data, log=lambda s: None,
                        command="python experiments/learning_curves.py --preset tiny")
    assert [t[:2] for t in result["trained"]] == [(0, 1), (0, 1), (0, 2), (0, 2)]
    rows = _read_csv(out / "curves.csv")
    assert tuple(rows[0]) == CURVE_COLUMNS
    assert len(rows) == 2 * (1 + 2)  # two steps, budgets of 1 and 2 epochs, one row per epoch
    # validation slices of 20 images, not the test set (28 images)
    assert all(abs(20 * float(r["val_acc"]) - round(20 * float(r["val_acc"]))) < 1e-4 for r in rows)
    summary = (out / "curves.md").read_text()
    assert f"`epochs_scratch={result['chosen'][0]}`" in summary and "learning_curves.py --preset tiny" in summary
    assert (out / "curves.png").stat().st_size > 0
    # step 2 starts from step 1's run at the chosen budget
    saved = torch.load(next((out / "runs/seed0/step1").rglob(f"cosine{result['chosen'][0]}.pt")), weights_only=True)
    first = next(iter(saved["model"].values()))
    assert all(torch.equal(w, first) for step, _, w in starts if step == 2)
    assert not any(torch.equal(w, first) for step, _, w in starts if step == 1)

    again = run_curves(tiny_preset(), out, max_epochs=2, budgets=(1, 2), patience=1, data=data, log=lambda s: None)
    assert again["trained"] == [] and again["chosen"] == result["chosen"]
    assert _read_csv(out / "curves.csv") == rows

    # a run lost (killed before its file was written) is the only one trained again
    lost = next((out / "runs/seed0/step2").rglob("cosine2.pt"))
    lost.unlink()
    third = run_curves(tiny_preset(), out, max_epochs=2, budgets=(1, 2), patience=1, data=data, log=lambda s: None)
    assert third["trained"] == [(0, 2, "cosine", 2)]
    assert _read_csv(out / "curves.csv") == rows  # every step seeds its own RNG


def test_constant_probe_trains_the_next_steps_start_with_the_cosine_schedule(tmp_path, data):
    result = run_curves(tiny_preset(), tmp_path, max_epochs=3, schedule="constant", patience=0, data=data,
                        log=lambda s: None)
    e1 = result["chosen"][0]
    assert result["trained"] == [(0, 1, "constant", 3), (0, 1, "cosine", e1), (0, 2, "constant", 3)]
    rows = _read_csv(tmp_path / "curves.csv")
    assert sum(r["schedule"] == "constant" for r in rows) == 6 and sum(r["schedule"] == "cosine" for r in rows) == e1


def test_runner_refuses_other_settings_in_the_same_folder_and_bad_presets(tmp_path, data):
    run_curves(tiny_preset(ratios=(1,)), tmp_path, budgets=(1,), patience=0, data=data, log=lambda s: None)
    # the preset's epochs (what the curves set) and the grid may change: finished runs are reused
    more = run_curves(tiny_preset(ratios=(1,), epochs_scratch=7), tmp_path, budgets=(1, 2), patience=0, data=data,
                      log=lambda s: None)
    assert more["trained"] == [(0, 1, "cosine", 2)]
    with pytest.raises(ValueError, match="lr_finetune"):
        run_curves(tiny_preset(ratios=(1,), lr_finetune=0.5), tmp_path, budgets=(1,), data=data, log=lambda s: None)
    with pytest.raises(ValueError, match="same-class"):
        run_curves(tiny_preset(scenario="class_incremental"), tmp_path / "b", data=data, log=lambda s: None)
    with pytest.raises(ValueError, match="validation_fraction"):
        run_curves(tiny_preset(validation_fraction=0.0), tmp_path / "c", data=data, log=lambda s: None)


# --- "Does it pay at equal compute?" from hand-made runs.csv --------------------------------------------

MATCHED = "finetune:budget=sst"
# Top-1 (%) per step, seeds 0, 1, 2. sst - finetune: +2.0 +-0.1 at steps 2 and 3, +0.5 +-0.1 at step 4;
# sst - matched: (2, 1, 3) at step 2, (-2, -2.1, -1.9) at step 3, (0.5, -0.5, 0) at step 4.
ACC = {
    "sst": [[70, 71, 72], [78, 79, 80], [79, 80, 81], [80, 81, 82]],
    "finetune": [[70, 71, 72], [76, 76.9, 78.1], [77, 77.9, 79.1], [79.5, 80.4, 81.6]],
    MATCHED: [[70, 71, 72], [76, 78, 77], [81, 82.1, 82.9], [79.5, 81.5, 82]],
}
COST = {"sst": [1000, 2000, 2000, 2000], "finetune": [500, 250, 250, 250], MATCHED: [1000, 2000, 2000, 2000]}


def write_runs(folder: Path, methods, cost: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "runs.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["method", "seed", "step", "top1", "seconds", *(["cost"] if cost else []), "git_commit"])
        for m in methods:
            for step, values in enumerate(ACC[m], start=1):
                for seed, v in enumerate(values):
                    w.writerow([m, seed, step, f"{v / 100:.6f}", "1.0", *([COST[m][step - 1]] if cost else []),
                                "0123abc"])
    return folder


def test_hand_computed_p_values():
    assert p_df2([2, 1, 3]) == pytest.approx(0.074180, abs=1e-6)  # t = 2 sqrt(3)
    assert p_df2([2, 2.1, 1.9]) == pytest.approx(0.000832, abs=1e-6)  # t = 20 sqrt(3)


def test_equal_compute_section_from_hand_made_runs(tmp_path):
    a = write_runs(tmp_path / "sweep", ["sst", "finetune"])
    b = write_runs(tmp_path / "matched", [MATCHED])
    text = equal_compute_section([a, b])
    assert text.startswith("## Does it pay at equal compute?")
    assert "| `sst` | 71.00 ± 1.00 | 79.00 ± 1.00 | 80.00 ± 1.00 | 81.00 ± 1.00 |" in text
    assert "| `sst` : `finetune` | 2.00 | 8.00 | 8.00 | 8.00 |" in text
    assert "| `sst` | 1.0 | 2.0 | 2.0 | 2.0 |" in text  # thousand sample-passes
    # sst - matched at step 2: diffs (2, 1, 3), p = 0.0742 by hand; vs finetune: (2, 2.1, 1.9), p = 0.00083
    assert f"+2.00 (p = {p_df2([2, 1, 3]):.2g})" in text and "(p = 0.074)" in text
    assert f"| `finetune` | +2.00 (p = {p_df2([2, 2.1, 1.9]):.2g}) |" in text
    assert "`sst` against `finetune`: ahead by at least 1 point(s) at steps 2 and 3; ahead by less than 1 point(s) " \
           "at step 4." in text
    assert (f"`sst` against `{MATCHED}`: behind at step 3; not significantly different at steps 2 and 4.") in text
    assert "was NOT met: it held at 0 of 3 step(s)." in text


def test_verdicts_and_the_aim_met(tmp_path):
    rows = load_sweeps([write_runs(tmp_path / "a", ["sst", "finetune"])])
    acc_seed = {}
    for r in rows:
        acc_seed.setdefault((r["method"], r["step"]), {})[r["seed"]] = 100 * r["top1"]
    acc = {k: (sum(v.values()) / 3, 1.0, 3) for k, v in acc_seed.items()}
    v = verdicts("sst", "finetune", (2, 3, 4), acc, seed_test(acc, acc_seed), aim_points=1.0)
    assert v["ahead_by_aim"] == [2, 3] and v["ahead"] == [4] and not v["behind"]
    v = verdicts("sst", "finetune", (2, 3, 4), acc, seed_test(acc, acc_seed), aim_points=0.4)
    assert v["ahead_by_aim"] == [2, 3, 4]
    # with finetune as the matched baseline and an aim of 0.4 points every compared step holds
    text = equal_compute_section([tmp_path / "a"], matched="finetune", aim_points=0.4)
    assert "was met." in text


def test_section_without_cost_column_or_matched_runs_says_so(tmp_path):
    folder = write_runs(tmp_path / "s", ["sst", "finetune"], cost=False)
    out = tmp_path / "docs" / "section.md"
    text = write_equal_compute([folder], out, figure=tmp_path / "docs" / "cost.png")
    assert out.read_text() == text
    assert "no `cost` column" in text and f"No `{MATCHED}` runs were given" in text
    assert not (tmp_path / "docs" / "cost.png").exists() and "cost.png" not in text


def test_section_links_the_accuracy_against_cost_figure(tmp_path):
    folder = write_runs(tmp_path / "s", ["sst", "finetune"])
    text = write_equal_compute([folder], tmp_path / "docs" / "results.md", figure=tmp_path / "docs" / "fig" / "c.png")
    assert (tmp_path / "docs" / "fig" / "c.png").stat().st_size > 0
    assert "[c.png](fig/c.png)" in text


def test_runs_reader_handles_variant_names_and_rejects_duplicates(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "runs.csv").write_text(
        "method,seed,step,top1,seconds,cost\n"
        '"sst:a=1,b=2",0,1,0.5,1.0,10\n'
        "sst:a=1,b=2,1,1,0.25,1.0,\n")  # unquoted (older writers), no cost
    rows = read_runs(tmp_path / "q" / "runs.csv")
    assert [r["method"] for r in rows] == ["sst:a=1,b=2"] * 2
    assert rows[0]["cost"] == 10.0 and "cost" not in rows[1] and rows[1]["top1"] == 0.25
    write_runs(tmp_path / "a", ["sst"])
    write_runs(tmp_path / "b", ["sst"])
    with pytest.raises(ValueError, match="in both"):
        load_sweeps([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="framework"):
        equal_compute_section([tmp_path / "a"], framework="nope")


def test_command_line_entry_writes_the_summary_with_its_command(tmp_path, data, monkeypatch, capsys):
    import avalanche_sst.experiments.sweep as sweep

    monkeypatch.setattr(sweep, "load_dataset", lambda name, root: data)
    argv = ["--preset", "quick", "--seeds", "0", "--budgets", "1", "2", "--patience", "1", "--out", str(tmp_path),
            "--set", "model=resnet8-w4", "ratios=1", "batch_size=16", "validation_fraction=0.25", "num_threads=1"]
    assert curves.main(argv) == 0
    summary = (tmp_path / "curves.md").read_text()
    assert "python experiments/learning_curves.py --preset quick --seeds 0" in summary
    assert "The preset now has `epochs_scratch=4`, `epochs_finetune=3`." in summary
    assert "chosen epochs per step: [" in capsys.readouterr().out


def test_report_cli_appends_the_equal_compute_section(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_cli", Path(__file__).parents[1] / "experiments" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    folder = write_runs(tmp_path / "sweep", ["sst", "finetune", MATCHED])
    out = tmp_path / "docs" / "results.md"
    assert report.main(["--results", str(tmp_path / "none"), "--archive", "", "--out", str(out),
                        "--equal-compute", str(folder)]) == 0
    text = out.read_text()
    assert text.startswith("# Results") and "\n## Does it pay at equal compute?" in text
    assert "| `sst` | 71.00 ± 1.00 | 79.00 ± 1.00 | 80.00 ± 1.00 | 81.00 ± 1.00 |" in text
    assert "[equal_compute.png](fig/equal_compute.png)" in text and (out.parent / "fig" / "equal_compute.png").exists()
