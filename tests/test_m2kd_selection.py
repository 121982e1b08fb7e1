"""The one selection rule (grid, seeds, best mean) and the tables' equal non-method settings."""

from __future__ import annotations

import dataclasses

import pytest

from avalanche_sst.experiments.paper import TABLES
from avalanche_sst.experiments.paper.specs import check_settings, method_settings, register
from avalanche_sst.experiments.selection import (best_mean, check_rule, compared_method, grid_variants, log_grid,
                                                 parse_grid)


def test_log_grid_and_variants():
    assert log_grid(1, 1000, 4) == (1.0, 10.0, 100.0, 1000.0)
    assert parse_grid("lr_factor=1:31.6:4") == ("lr_factor", (1.0, 3.16, 10.0, 31.6))
    assert grid_variants(["m2kd:lam=0", "lwf_mc"], {"lr_factor": (1.0, 10.0)}) == [
        "m2kd:lam=0,lr_factor=1", "m2kd:lam=0,lr_factor=10", "lwf_mc:lr_factor=1", "lwf_mc:lr_factor=10"]
    assert compared_method("m2kd:lam=0,lr_factor=10", ["lr_factor"]) == "m2kd:lam=0"
    with pytest.raises(ValueError, match="at least 4"):
        log_grid(1, 10, 3)


def test_best_mean_keeps_the_best_mean_over_seeds_not_the_best_seed():
    scores = {
        "m2kd:lr_factor=1": [0.90, 0.10, 0.11],  # best single seed, mean 0.37
        "m2kd:lr_factor=3.16": [0.40, 0.41, 0.39],  # best mean 0.40
        "m2kd:lam=0,lr_factor=1": [0.2, 0.2, 0.2],  # another compared method: chosen on its own
        "m2kd:lam=0,lr_factor=3.16": [0.3, 0.1, 0.1],
        "lwf_mc:lr_factor=1": [0.5, 0.5, 0.5],
        "lwf_mc:lr_factor=3.16": [0.5, 0.5, 0.5],  # a tie keeps the first grid point
    }
    best = best_mean(scores, ["lr_factor"])
    assert {m: v for m, (v, _) in best.items()} == {
        "m2kd": "m2kd:lr_factor=3.16", "m2kd:lam=0": "m2kd:lam=0,lr_factor=1", "lwf_mc": "lwf_mc:lr_factor=1"}
    assert best["m2kd"][1] == pytest.approx(0.40)


def test_the_rule_refuses_small_grids_few_seeds_linear_grids_and_fixed_grid_keys():
    good = {"lr_factor": log_grid(1, 31.6, 4)}
    check_rule(["m2kd", "lwf_mc"], good, [0, 1, 2])
    with pytest.raises(ValueError, match="at least 3 seeds"):
        check_rule(["m2kd"], good, [0, 1])
    with pytest.raises(ValueError, match="at least 4"):
        check_rule(["m2kd"], {"lr_factor": (1.0, 10.0)}, [0, 1, 2])
    with pytest.raises(ValueError, match="log scale"):
        check_rule(["m2kd"], {"lr_factor": (1.0, 2.0, 3.0, 4.0)}, [0, 1, 2])
    with pytest.raises(ValueError, match="fixes"):
        check_rule(["m2kd:lr_factor=1", "lwf_mc"], good, [0, 1, 2])


def test_method_settings_read_the_preset_and_the_method_kwargs():
    preset = TABLES["m2kd_fig4"].presets["cpu"]
    assert method_settings("lwf_mc", preset) == method_settings("finetune", preset) == {
        "weight_decay": (5e-4, 5e-4), "epochs": (4, 4), "extra_epochs": 0, "batch_size": 64, "augment": True}
    assert method_settings("m2kd", preset)["extra_epochs"] == "method default"
    assert method_settings("m2kd:prune_ratio=0", preset)["extra_epochs"] == 0
    assert method_settings("m2kd:weight_decay_after=0.0", preset)["weight_decay"] == (5e-4, 0.0)


def test_a_table_whose_methods_differ_in_an_undeclared_setting_is_refused():
    fig4 = TABLES["m2kd_fig4"]
    check_settings(fig4)  # the registered table passes
    # the paper's own weight-decay rule for LwF-MC alone: a difference nobody declared
    presets = {n: p.replace(method_kwargs={**p.method_kwargs, "lwf_mc": {"weight_decay": 0.0}})
               for n, p in fig4.presets.items()}
    uneven = dataclasses.replace(fig4, id="m2kd_fig4_uneven", presets=presets)
    with pytest.raises(ValueError, match=r"weight_decay differs: .*lwf_mc=\(0\.0, 0\.0\)"):
        check_settings(uneven)
    with pytest.raises(ValueError, match="weight_decay differs"):
        register(uneven)
    assert "m2kd_fig4_uneven" not in TABLES
    declared = dataclasses.replace(uneven, declared_differences=(
        *fig4.declared_differences, ("lwf_mc", "weight_decay", "a reason from the paper")))
    check_settings(declared)
    # M2KD's fine-tuning epochs are accepted only because the table declares them
    with pytest.raises(ValueError, match="extra_epochs differs"):
        check_settings(dataclasses.replace(fig4, declared_differences=()))
