"""Ada-QPacknet's paper tables (seed 003): the specs resolve, Table 4 reads adaq_split's runs,
and a capacity cell is the run's own report value."""

from __future__ import annotations

import json

import pytest
import torch

from avalanche_sst.experiments.methods import get_method
from avalanche_sst.experiments.paper import PAPERS, TABLES, run_table, sweep_groups
from avalanche_sst.experiments.paper.specs import LAST_STEP
from avalanche_sst.experiments.scenarios import get_scenario

torch.set_num_threads(1)

ADAQ_TABLES = ("adaq_split", "adaq_permuted", "adaq_table4")


def test_adaq_tables_resolve_to_registered_methods_of_their_setting() -> None:
    assert PAPERS["003"].citation == "Pietron et al. 2023"
    for tid in ADAQ_TABLES:
        spec = TABLES[tid]
        assert spec.paper == "003"
        for preset_name in ("cpu", "paper", "tiny"):
            preset = spec.preset(preset_name)
            setting = get_scenario(preset.scenario).setting
            assert setting == "task_incremental" and preset.multi_head
            assert preset.validation_fraction > 0  # Ada-QPacknet selects masks and bits on it
            for name in spec.methods():
                method = get_method(name, preset.method_kwargs.get(name.split(":")[0]))
                assert setting in method.settings, (tid, name)
        # every column has a cell in some row; Ada-QPacknet's capacity reads its report
        assert {c.col for c in spec.cells} == set(spec.columns)
    split, permuted, table4 = (TABLES[t] for t in ADAQ_TABLES)
    assert split.preset("cpu").scenario_kwargs == {"classes_per_step": 2}
    assert permuted.preset("cpu").scenario_kwargs == {"n_tasks": 10}
    assert split.cell("Ada-QPacknet", "Capacity (%)").score == "capacity_total"
    assert split.cell("PackNet", "Capacity (%)").score == "capacity_total"
    # forgetting and capacity after each preset's own last task (paper adaq_split: 10 tasks, cpu: 5)
    for spec in (split, permuted, table4):
        assert all(c.step == LAST_STEP for c in spec.cells if not c.col.startswith("Task "))
    assert split.preset("cpu").method_kwargs["si"]["si_lambda"] == 100.0  # chosen on validation (one seed)
    # Table 4 runs in adaq_split's folder: same presets, its methods added to that table's sweep
    assert table4.runs_of == "adaq_split"
    for preset_name in ("cpu", "paper", "tiny"):
        assert table4.preset(preset_name) == split.preset(preset_name)
    assert set(sweep_groups(table4, "cpu")) == set(sweep_groups(split, "cpu")) == {()}
    assert split.preset("paper").dataset == "cifar100" and split.preset("paper").device == "cuda"
    assert split.preset("paper").method_kwargs["adaqpacknet"] == {"population": 16, "search_epochs": 5,
                                                                  "full_epochs": 50}


def test_adaq_table4_tiny_capacity_cells_are_the_runs_report_values(tmp_path) -> None:
    from avalanche_sst.experiments.sweep import load_dataset

    out = run_table("adaq_table4", "tiny", out_root=tmp_path, data=load_dataset("fashion_mnist", None),
                    log=lambda s: None)
    sweep = tmp_path / "adaq_split" / "sweep"
    for row, method in (("Ada-QPacknet", "adaqpacknet"), ("Pruning only", "adaqpacknet_quantize=False")):
        done = json.loads((sweep / method / "seed0" / "done.json").read_text())
        report = done["report"]
        mean, std, n = out["cells"][row, "Capacity per task (%)"]
        assert n == 1 and std == 0.0
        assert mean == pytest.approx(report["capacity_mean"])
        # the mean over the 5 tasks of their own shares
        per_task = [report[f"capacity/task{i}"] for i in range(1, 6)]
        assert report["capacity_mean"] == pytest.approx(sum(per_task) / 5)
        assert report["capacity_total"] == pytest.approx(sum(per_task))
    md = (tmp_path / "adaq_table4" / "adaq_table4.md").read_text()
    assert "../adaq_split/sweep" in md
    value = f"{out['cells']['Ada-QPacknet', 'Capacity per task (%)'][0]:.2f}"
    assert f"| Ada-QPacknet | {value} ± 0.00 |" in md
    # pruning only keeps 32-bit values: more bits per task than with quantization on top
    assert out["cells"]["Pruning only", "Capacity per task (%)"][0] > \
        out["cells"]["Ada-QPacknet", "Capacity per task (%)"][0]


@pytest.mark.parametrize("table", ["adaq_split", "adaq_permuted"])
def test_the_cpu_presets_lr_factors_are_their_selection_records_choice(table) -> None:
    """Every compared method runs at the lr_factor its validation selection chose (the record's last line)."""
    import ast
    from pathlib import Path

    record = Path(__file__).parents[1] / "docs" / "runs" / "selection" / table / "selection.md"
    chosen = ast.literal_eval(record.read_text().rstrip().splitlines()[-1].strip())
    kwargs = TABLES[table].preset("cpu").method_kwargs
    assert set(chosen) == {name.split(":")[0] for name in TABLES[table].methods()}
    assert {name: {"lr_factor": kwargs[name]["lr_factor"]} for name in chosen} == chosen
