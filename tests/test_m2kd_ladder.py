"""Issue 21's ablation ladder (LwF-MC -> + all teachers -> + L_AD -> + pruning), its 5-then-1 variant,
and the report's paired tests of adjacent rungs."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from avalanche_sst.benchmarks import class_incremental
from avalanche_sst.experiments.paper import TABLES
from avalanche_sst.experiments.paper.specs import method_settings, register
from avalanche_sst.experiments.paper.stats import paired_column_tests, paired_sentence
from conftest import make_images, paired_p_by_hand

REPO = Path(__file__).resolve().parents[1]
RUNGS = ("lwf_mc", "m2kd:prune_ratio=0,lam=0", "m2kd:prune_ratio=0", "m2kd:prune_ratio=0.75")


@pytest.mark.parametrize("table_id", ["m2kd_ladder", "m2kd_ladder_5_1"])
def test_the_ladders_rungs_differ_only_in_the_part_they_add(table_id):
    spec = TABLES[table_id]
    assert spec.methods() == RUNGS
    for name, preset in spec.presets.items():
        settings = {m: method_settings(m, preset) for m in RUNGS}
        pruned = settings.pop("m2kd:prune_ratio=0.75")
        assert pruned["extra_epochs"] == "method default"  # the fine-tuning after pruning, declared
        assert len({json.dumps(s) for s in settings.values()}) == 1, settings
        assert {k: v for k, v in pruned.items() if k != "extra_epochs"} == \
            {k: v for k, v in settings["lwf_mc"].items() if k != "extra_epochs"}
        # the same learning rate for every rung: one lr_factor for lwf_mc and m2kd
        assert preset.method_kwargs["lwf_mc"]["lr_factor"] == preset.method_kwargs["m2kd"]["lr_factor"]
    assert spec.presets["cpu"].seeds == (0, 1, 2, 3, 4)
    assert spec.paired_columns == (("+ all teachers", "LwF-MC"), ("+ L_AD", "+ all teachers"),
                                   ("+ pruning 0.75", "+ L_AD"))


def test_the_5_then_1_split_is_accepted_by_the_class_split_scenario():
    spec = TABLES["m2kd_ladder_5_1"]
    classes_per_step = spec.presets["cpu"].scenario_kwargs["classes_per_step"]
    assert classes_per_step == (5, 1, 1, 1, 1, 1) and len(spec.rows) == 6
    bench = class_incremental(make_images(4, classes=10), make_images(2, seed=1, classes=10),
                              classes_per_step=classes_per_step, seed=0, augment=False)
    sizes = [len(exp.classes_in_this_experience) for exp in bench.train_stream]
    assert sizes == [5, 1, 1, 1, 1, 1] == [len(e.classes_in_this_experience) for e in bench.test_stream]
    seen = [c for exp in bench.train_stream for c in exp.classes_in_this_experience]
    assert sorted(seen) == list(range(10))  # every class once
    assert sum(spec.presets["paper"].scenario_kwargs["classes_per_step"]) == 100  # CIFAR-100's analogue


def test_a_ladder_with_an_unknown_paired_column_is_refused():
    spec = TABLES["m2kd_ladder"]
    with pytest.raises(ValueError, match=r"paired_columns .*unknown: \['+ L_ad'\]".replace("+", r"\+")):
        register(dataclasses.replace(spec, id="m2kd_ladder_typo", paired_columns=(("+ L_ad", "LwF-MC"),)))
    assert "m2kd_ladder_typo" not in TABLES


def test_paired_column_tests_hand_values():
    spec = TABLES["m2kd_ladder"]
    per_seed = {("Step 2", "LwF-MC"): {0: 40.0, 1: 50.0, 2: 45.0},
                ("Step 2", "+ all teachers"): {0: 44.0, 1: 51.0, 2: 50.0},  # diffs 4, 1, 5
                ("Step 2", "+ L_AD"): {0: 44.0, 1: 51.0, 2: 50.0}}  # diffs 0, 0, 0: no spread
    ours = {k: (sum(v.values()) / 3, 1.0, 3) for k, v in per_seed.items()}
    tests = paired_column_tests(spec, ours, per_seed)
    assert [t[:3] for t in tests] == [("Step 2", "+ all teachers", "LwF-MC"), ("Step 2", "+ L_AD", "+ all teachers")]
    assert tests[0][3] == pytest.approx(10 / 3) and tests[0][4] == pytest.approx(paired_p_by_hand([4, 1, 5]))
    assert tests[1][3] == 0.0 and tests[1][4] != tests[1][4]  # nan: equal on every seed
    assert paired_sentence(tests) == (f"Step 2: + all teachers - LwF-MC = +3.33 (p = {tests[0][4]:.2g}); "
                                      "Step 2: + L_AD - + all teachers = +0.00.")


def test_the_report_gives_the_ladders_paired_tests(tmp_path):
    from avalanche_sst.experiments.paper.report import write_report

    spec = TABLES["m2kd_ladder"]
    table = tmp_path / "results" / spec.id
    (table / "sweep").mkdir(parents=True)
    values = {"LwF-MC": (40.0, 50.0, 45.0), "+ all teachers": (44.0, 51.0, 50.0), "+ L_AD": (43.0, 50.0, 52.0),
              "+ pruning 0.75": (43.0, 50.0, 52.0)}
    cells, cell_seeds = [], []
    for row in spec.rows:
        for col, vs in values.items():
            cells.append({"row": row, "col": col, "mean": sum(vs) / 3, "std": 1.0, "n": 3})
            cell_seeds.append({"row": row, "col": col, "values": {str(s): v for s, v in enumerate(vs)}})
    command = "python experiments/paper_tables.py m2kd_ladder --preset cpu"
    (table / f"{spec.id}.json").write_text(json.dumps({"command": command, "sweeps": ["sweep"], "seeds": [0, 1, 2],
                                                       "cells": cells, "cell_seeds": cell_seeds}))
    with open(table / f"{spec.id}.csv", "w", newline="") as f:
        csv.writer(f).writerows([["Step", *values], *([row, *("1" for _ in values)] for row in spec.rows)])
    with open(table / "sweep" / "runs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["method", "seed", "step", "top1", "seconds", "cost", "git_commit"],
                                 ["lwf_mc", 0, 1, 0.5, 1.0, 100, "abc"]])
    text = write_report(tmp_path / "results", REPO / "docs" / "paper_numbers.csv", tmp_path / "r.md")
    assert "## Compared methods with different hyperparameters or budgets" in text  # the generated list
    p_teachers = paired_p_by_hand([4, 1, 5])
    p_aux = paired_p_by_hand([-1, -1, 2])
    assert (f"Step 2: + all teachers - LwF-MC = +3.33 (p = {p_teachers:.2g}); "
            f"Step 2: + L_AD - + all teachers = +0.00 (p = {p_aux:.2g}); "
            "Step 2: + pruning 0.75 - + L_AD = +0.00; Step 3:") in text
