"""Paper-table cells at ``LAST_STEP`` (-1): the last step of each run, whatever its length."""

from __future__ import annotations

import pytest

from avalanche_sst.experiments.paper.formatting import step_text
from avalanche_sst.experiments.paper.report import seed_values
from avalanche_sst.experiments.paper.runner import cell_value
from avalanche_sst.experiments.paper.specs import LAST_STEP, Cell, TableSpec
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.sweep import RunResult


def _run(accuracies, seed=0):
    return RunResult(method="m", seed=seed, accuracies=list(accuracies), seconds=0.0,
                     scores=[{"forgetting": a / 10} for a in accuracies], report={"capacity_total": 42.0})


def test_cell_value_at_last_step_reads_each_runs_own_last_step():
    last = Cell("r", "c", "m", LAST_STEP)
    assert cell_value(last, _run([0.5, 0.6, 0.7])) == pytest.approx(70.0)
    assert cell_value(last, _run([0.5, 0.6, 0.7, 0.8, 0.9])) == pytest.approx(90.0)
    assert cell_value(Cell("r", "c", "m", 2), _run([0.5, 0.6, 0.7])) == pytest.approx(60.0)
    forgetting = Cell("r", "c", "m", LAST_STEP, score="forgetting")
    assert cell_value(forgetting, _run([0.5, 0.6, 0.7, 0.8])) == pytest.approx(8.0)  # 100 * 0.8 / 10
    assert cell_value(Cell("r", "c", "m", LAST_STEP, score="capacity_total"), _run([0.5])) == 42.0


@pytest.mark.parametrize("step", [0, -2, 1.5, True])
def test_bad_step_raises(step):
    with pytest.raises(ValueError, match="step must be a 1-based step or LAST_STEP"):
        Cell("r", "c", "m", step)


def test_step_text():
    assert step_text(3) == "step 3" and step_text(LAST_STEP) == "the last step"


def test_seed_values_map_last_step_to_each_runs_max_step(tmp_path):
    spec = TableSpec(id="t", title="t", varies="v", corner="k", rows=("r",), columns=("final", "first"),
                     cells=(Cell("r", "final", "m", LAST_STEP), Cell("r", "first", "m", 1)),
                     presets={"tiny": Preset()}, paper_setting="s", paper_source="Table 1", paper="000")
    (tmp_path / "sweep").mkdir()
    # seed 0 ran 3 steps, seed 1 ran 2 (e.g. two presets' lengths): each run's own last step
    rows = [(0, 1, 0.5), (0, 2, 0.6), (0, 3, 0.7), (1, 1, 0.4), (1, 2, 0.55)]
    (tmp_path / "sweep" / "runs.csv").write_text(
        "method,seed,step,top1,seconds\n" + "".join(f"m,{s},{k},{a},1.0\n" for s, k, a in rows)
        + "other,0,4,0.99,1.0\n")
    values = seed_values(spec, tmp_path, "tiny")
    assert values["r", "final"] == pytest.approx({0: 70.0, 1: 55.0})
    assert values["r", "first"] == pytest.approx({0: 50.0, 1: 40.0})
