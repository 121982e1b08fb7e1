"""The issue-14 report sections: options judged on validation, several frameworks at equal compute, the data curve."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from conftest import paired_p_by_hand as p_paired

from avalanche_sst.experiments.paper.data_curve import curve_points, data_curve_section, plot_data_curve
from avalanche_sst.experiments.paper.equal_compute import equal_compute_section
from avalanche_sst.experiments.paper.sst_options import helpful_options, option_ablation_section, option_effects

MATCHED = "finetune:budget=sst"
# accuracy (%) per method, per step, per seed 0..2
ACC = {
    "sst": [[70, 71, 72], [76, 77, 78], [80, 80, 80], [81, 82, 83]],
    "sst:lr_msl=0.01": [[70, 71, 72], [77, 79, 78], [80, 81, 80], [81, 82, 83]],
    "sst:proximal=True": [[70, 71, 72], [75, 77, 77], [79, 80, 79], [80, 82, 82]],
    MATCHED: [[73, 74, 75], [80, 81, 82], [82, 83, 84], [84, 85, 86]],
}


def write_sweep(folder: Path, methods, fraction: float = 0.14, shift: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preset.json").write_text(json.dumps({"train_fraction": fraction}))
    with open(folder / "runs.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["method", "seed", "step", "top1", "seconds", "cost", "git_commit"])
        for m in methods:
            for step, values in enumerate(ACC[m], start=1):
                for seed, v in enumerate(values):
                    w.writerow([m, seed, step, f"{(v + shift) / 100:.6f}", "1.0", "100", "0123abc"])
    return folder


def test_option_effects_per_step_and_on_the_per_seed_mean_of_steps(tmp_path):
    folder = write_sweep(tmp_path / "v", ["sst", "sst:lr_msl=0.01", "sst:proximal=True", MATCHED])
    effects = {e.method: e for e in option_effects([folder])}
    lr = effects["sst:lr_msl=0.01"]
    # step 2: (77-76, 79-77, 78-78) = (1, 2, 0); step 3: (0, 1, 0); step 4: (0, 0, 0)
    assert lr.per_step[2][0] == pytest.approx(1.0) and lr.per_step[2][1] == pytest.approx(p_paired([1, 2, 0]))
    assert lr.per_step[4] == (pytest.approx(0.0), pytest.approx(float("nan"), nan_ok=True))
    # per seed mean of steps 2-4 minus sst's: (1/3, 3/3, 0/3)
    assert lr.mean_points == pytest.approx(4 / 9)
    assert lr.mean_p == pytest.approx(p_paired([1 / 3, 1, 0]))
    prox = effects["sst:proximal=True"]  # seed diffs per step: (-1, 0, -1), (-1, 0, -1), (-1, 0, -1)
    assert prox.mean_points == pytest.approx(-2 / 3) and prox.mean_p == pytest.approx(p_paired([-1, 0, -1]))
    # the matched baseline is better still, but it is not an option of sst: never kept
    assert effects[MATCHED].mean_points > 0
    assert helpful_options(effects.values()) == ["sst:lr_msl=0.01"]


def test_option_section_reads_validation_and_names_what_is_kept(tmp_path):
    folder = write_sweep(tmp_path / "v", ["sst", "sst:lr_msl=0.01", "sst:proximal=True"])
    text = option_ablation_section([folder])
    assert "**validation slices**" in text
    assert "| `sst:lr_msl=0.01` | 71.00 ± 1.00 | 78.00 ± 1.00 | 80.33 ± 0.58 | 82.00 ± 1.00 | 80.11 ± 0.69 |" in text  # seed means 79.33, 80.67, 80.33
    assert f"| `sst:proximal=True` | -0.67 (p = {p_paired([-1, 0, -1]):.2g}) |" in text
    assert text.rstrip().endswith("Kept here: `sst:lr_msl=0.01`.")
    with pytest.raises(ValueError, match="reference"):
        option_effects([folder], reference="nope")


def test_equal_compute_tests_each_framework_against_the_baselines_only(tmp_path):
    folder = write_sweep(tmp_path / "t", ["sst", "sst:lr_msl=0.01", MATCHED])
    text = equal_compute_section([folder], framework=("sst", "sst:lr_msl=0.01"), matched=MATCHED)
    assert "`sst` minus each baseline" in text and "`sst:lr_msl=0.01` minus each baseline" in text
    # sst is not a baseline of the second framework, nor is the second a baseline of sst
    assert "| `sst` | -" not in text and "| `sst:lr_msl=0.01` | " not in text.split("minus each baseline")[1]
    # sst - matched at step 2: (-4, -4, -4): a constant difference, p = 0
    assert "| `finetune:budget=sst` | -4.00 (p = 0) |" in text
    assert text.count("was NOT met") == 2


def test_data_curve_orders_fractions_and_tests_against_the_matched_baseline(tmp_path):
    methods = ["sst", MATCHED]
    big = write_sweep(tmp_path / "f025", methods, fraction=0.25, shift=2.0)
    small = write_sweep(tmp_path / "f01", methods, fraction=0.1)
    assert list(curve_points([big, small])) == [0.1, 0.25]
    text = data_curve_section([big, small], figure_link="fig/d.png")
    lines = text.splitlines()
    assert "| 0.1 | 82.00 ± 1.00 | 85.00 ± 1.00 |" in lines and "| 0.25 | 84.00 ± 1.00 | 87.00 ± 1.00 |" in lines
    assert "| 0.1 | -3.00 (p = 0) |" in lines  # sst - matched at step 4: (-3, -3, -3)
    assert text.rstrip().endswith("[d.png](fig/d.png).")
    plot_data_curve([big, small], tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 0
    with pytest.raises(ValueError, match="train_fraction=0.1"):
        curve_points([small, write_sweep(tmp_path / "again", methods, fraction=0.1)])
    with pytest.raises(ValueError, match="step 5"):
        curve_points([small], step=5)


def test_report_cli_appends_the_options_and_the_data_curve(tmp_path):
    spec = importlib.util.spec_from_file_location("report_cli", Path(__file__).parents[1] / "experiments" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    valid = write_sweep(tmp_path / "valid", ["sst", "sst:lr_msl=0.01", "sst:proximal=True"])
    curve = [write_sweep(tmp_path / f"f{f}", ["sst", MATCHED], fraction=f) for f in (0.1, 0.25)]
    out = tmp_path / "docs" / "results.md"
    assert report.main(["--results", str(tmp_path / "none"), "--archive", "", "--out", str(out),
                        "--options-ablation", str(valid), "--data-curve", *map(str, curve)]) == 0
    text = out.read_text()
    assert text.index("## Options beyond the paper") < text.index("## Where does it pay?")
    assert "[data_curve.png](fig/data_curve.png)" in text and (out.parent / "fig" / "data_curve.png").exists()


def test_data_curve_columns_follow_the_methods_asked_for(tmp_path):
    folder = write_sweep(tmp_path / "f", ["sst", "sst:proximal=True", MATCHED], fraction=0.14)
    text = data_curve_section([folder], methods=[MATCHED, "sst", "absent"])
    assert f"| train fraction | `{MATCHED}` | `sst` |" in text and "proximal" not in text
