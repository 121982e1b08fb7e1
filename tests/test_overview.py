"""The cross-method overview (avalanche_sst.experiments.overview) on hand-made sweeps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from avalanche_sst.experiments.overview import (HEADING, MethodRow, collect, missing_methods, overview_section,
                                                pareto_front, preset_names, replace_section)

REPO = Path(__file__).resolve().parents[1]
HEADER = ["method", "seed", "step", "top1", "seconds", "cost", "memory_bytes", "inference_flops", "git_commit",
          "git_dirty"]


def write_sweep(folder: Path, runs: dict, scenario: str = "class_incremental", commit: str = "abc123",
                evaluate_on: str = "test", name: str = "split_quick") -> Path:
    """``runs``: {(method, seed): [(top1, cost, memory, flops) per step]}."""
    folder.mkdir(parents=True)
    (folder / "preset.json").write_text(json.dumps({"name": name, "scenario": scenario, "evaluate_on": evaluate_on}))
    (folder / "table.md").write_text(f"t\nProduced by `python experiments/sweep.py --preset {name}` in 1 s.\n")
    with open(folder / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for (method, seed), steps in runs.items():
            for i, (top1, cost, memory, flops) in enumerate(steps, start=1):
                w.writerow([method, seed, i, top1, 1.0, cost, memory, flops, commit, False])
    return folder


def test_preset_names_add_the_sweep_folder_only_where_a_method_repeats_a_preset_name():
    def row(method, sweep, preset):
        return MethodRow(method, sweep, preset, [0], (1.0, 0.0), (1.0, 0.0), None, None)

    rows = [row("sst", "docs/runs/paper/table2/sweep_model=resnet8", "table2-cpu"),
            row("sst", "docs/runs/paper/table2/sweep_model=resnet14", "table2-cpu"),
            row("sst", "docs/runs/quick", "quick"), row("lwf", "docs/runs/quick", "quick"),
            row("lwf", "docs/runs/paper/table2/sweep_model=resnet8", "table2-cpu")]
    assert preset_names(rows) == ["table2-cpu, sweep_model=resnet8", "table2-cpu, sweep_model=resnet14", "quick",
                                  "quick", "table2-cpu"]


def test_pareto_front_by_hand():
    #            0: cheap, low  1: dominated by 0  2: dearer, higher  3: same cost as 2, lower  4: dearest, best
    points = [(1.0, 50.0), (2.0, 40.0), (3.0, 60.0), (3.0, 55.0), (9.0, 70.0)]
    assert pareto_front(points) == [0, 2, 4]
    assert pareto_front([(1.0, 5.0), (1.0, 5.0)]) == [0]
    assert pareto_front([]) == []


@pytest.fixture
def sweeps(tmp_path):
    root = tmp_path / "runs"
    write_sweep(root / "a", {
        ("finetune", 0): [(0.9, 100, 0, 2000), (0.4, 100, 0, 2000)],
        ("finetune", 1): [(0.9, 100, 0, 2000), (0.6, 100, 0, 2000)],
        ("replay", 0): [(0.9, 100, 7200, 2000), (0.7, 200, 7200, 2000)],
        ("replay", 1): [(0.9, 100, 7200, 2000), (0.8, 200, 14400, 2000)],
        ("sst", 0): [(0.9, 300, 5000, 2000), (0.7, 300, 0, 2000)],  # keeps its prepared model but after the last step
    })
    write_sweep(root / "b", {("cumulative", 0): [(0.9, 100, 7200, 2000), (0.65, 400, 14400, 2000)]})
    write_sweep(root / "stale", {("ewc", 0): [(0.9, 100, 0, 2000)]}, commit="")
    write_sweep(root / "valid", {("lwf", 0): [(0.9, 100, 0, 2000)]}, evaluate_on="valid")
    return root


def test_overview_table_from_the_last_step_and_summed_cost(sweeps, tmp_path):
    overview = collect([sweeps])
    rows = {r.method: r for r in overview.rows["class_incremental"]}
    assert set(rows) == {"finetune", "replay", "cumulative", "sst"}  # not the stale ewc, not the validation lwf
    assert rows["finetune"].score == pytest.approx((50.0, 14.142136))  # (40, 60): std sqrt(200)
    assert rows["finetune"].cost == (200.0, 0.0) and rows["finetune"].memory == 0.0
    assert rows["replay"].score == pytest.approx((75.0, 7.0710678)) and rows["replay"].cost == (300.0, 0.0)
    assert rows["replay"].memory == 10800.0 and rows["replay"].flops == 2000.0  # (7200 + 14400) / 2
    assert rows["cumulative"].cost == (500.0, 0.0)
    assert rows["sst"].memory == 5000.0  # the most it kept after any step, not the 0 B after its last
    assert any("stale" in s and "`python experiments/sweep.py --preset split_quick`" in s for s in overview.stale)
    assert any("valid" in s and "validation" in s for s in overview.stale)
    missing = missing_methods(overview)["class_incremental"]
    assert "ewc" in missing and "m2kd" in missing and "replay" not in missing

    text = overview_section([sweeps], figure_dir=tmp_path / "fig", link_from=tmp_path)
    assert text.startswith(HEADING)
    assert "| `finetune` | split_quick | 2 | 50.00 ± 14.14 | 0.2 ± 0.0 | 0 B | 0.00 M |" in text
    assert "| `replay` | split_quick | 2 | 75.00 ± 7.07 | 0.3 ± 0.0 | 10.8 kB | 0.00 M |" in text
    # cumulative (65 % for 500) is beaten by replay (75 % for 300)
    assert "On the Pareto front of score against training cost: `finetune` (split_quick), `replay` (split_quick)." \
        in text
    assert "[overview_class_incremental.png](fig/overview_class_incremental.png)" in text
    assert (tmp_path / "fig" / "overview_class_incremental.png").stat().st_size > 0
    assert "No fresh runs at all in: same_class, task_incremental" in text


def test_section_replaced_in_place_or_appended():
    doc = "# R\n\n## A\n\na\n\n" + HEADING + "\n\nold\n\n## C\n\nc\n"
    new = replace_section(doc, HEADING + "\n\nnew\n")
    assert new == "# R\n\n## A\n\na\n\n" + HEADING + "\n\nnew\n\n## C\n\nc\n"
    assert replace_section("# R\n", HEADING + "\n\nx\n") == "# R\n\n" + HEADING + "\n\nx\n"


def test_report_cli_only_overview_keeps_the_rest(sweeps, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_cli", REPO / "experiments" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    out.write_text("# Results\n\nkept\n")
    assert report.main(["--out", str(out), "--overview", str(sweeps), "--only-overview"]) == 0
    text = out.read_text()
    assert text.startswith("# Results\n\nkept\n\n" + HEADING)
    assert (out.parent / "fig" / "overview_class_incremental.png").exists()
    assert report.main(["--out", str(out), "--overview", str(sweeps), "--only-overview"]) == 0
    assert out.read_text().count(HEADING) == 1


def test_a_setting_with_more_rows_than_styles_gets_a_panel_per_method_each_with_the_whole_front(monkeypatch,
                                                                                                  tmp_path):
    from matplotlib.collections import PathCollection

    from avalanche_sst.experiments import figure_style, overview

    saved = {}
    monkeypatch.setattr(figure_style, "save_figure", lambda fig, path: saved.setdefault("fig", fig))
    # 3 methods x 24 variants = 72 labels, two more than distinct colour-and-marker pairs
    rows = [MethodRow(f"{m}:x={i}" if i else m, "docs/runs/a", "quick", [0], (float(i), 1.0),
                      (1000.0 * (i + 1), 0.0), None, None) for m in ("sst", "finetune", "lwf") for i in range(24)]
    overview.plot_setting(rows, tmp_path / "f.png", title="same_class")
    axes = saved["fig"].axes
    assert [ax.get_title() for ax in axes] == ["same_class (marker area: memory beyond the model)\n"
                                               "sst (grey: the setting's other methods)",
                                               *(f"{m} (grey: the setting's other methods)" for m in ("finetune", "lwf"))]
    for ax, method in zip(axes, ("sst", "finetune", "lwf")):
        _, names = ax.get_legend_handles_labels()
        assert names[-1] == "Pareto front (cost, score)"
        assert len(names) == 25 and all(n.split(":")[0].split(" ")[0] == method for n in names[:-1])
        # the front of the whole setting (sst's points come first among equal ones), in every panel
        (front,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert list(front.get_xdata()) == [1000.0 * (i + 1) for i in range(24)]
        grey = [c for c in ax.collections if isinstance(c, PathCollection)
                and tuple(c.get_facecolor()[0][:3]) == pytest.approx((0.827, 0.827, 0.827), abs=1e-3)]
        assert len(grey) == 48  # the other two methods' points
