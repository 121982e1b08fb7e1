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


def _load_selection_script():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "select_on_validation_cli", Path(__file__).parents[1] / "experiments" / "select_on_validation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lr_factor_scales_the_preset_rates_of_a_method_that_does_not_take_it():
    """Every method understands lr_factor: a cross-entropy baseline trains at the preset's lrs times it."""
    import torch

    from avalanche_sst.experiments.methods import StrategyContext, get_method
    from avalanche_sst.plugins.schedule import StepwiseCosinePlugin

    preset = TABLES["m2kd_fig4"].presets["tiny"].replace(lr_scratch=0.1, lr_finetune=0.01)
    model = torch.nn.Linear(4, 2)
    ctx = StrategyContext(model=model, config=preset, evaluator=None, device=torch.device("cpu"))
    for name, factor in (("finetune:lr_factor=3", 3.0), ("ewc:lr_factor=0.5,ewc_lambda=2.0", 0.5)):
        strategy = get_method(name).build(ctx)
        schedule = next(p for p in strategy.plugins if isinstance(p, StepwiseCosinePlugin))
        assert list(schedule.lrs) == pytest.approx([0.1 * factor, 0.01 * factor])
        assert strategy.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * factor)
    ewc = get_method("ewc:lr_factor=0.5,ewc_lambda=2.0").build(ctx)
    assert next(p for p in ewc.plugins if type(p).__name__ == "EWCPlugin").ewc_lambda == 2.0  # other keys reach it
    assert preset.lr_scratch == 0.1  # the preset itself is unchanged
    # a preset's method_kwargs may carry it too; a variant's value wins, as for any key
    strategy = get_method("finetune:lr_factor=2", {"lr_factor": 10.0}).build(ctx)
    assert strategy.optimizer.param_groups[0]["lr"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="lr_factor must be a number > 0"):
        get_method("finetune:lr_factor=0")
    with pytest.raises(ValueError, match="has no argument 'lr_facto'"):
        get_method("finetune:lr_facto=2")


def test_lr_factor_scales_a_methods_own_learning_rates(monkeypatch):
    """Ada-QPacknet trains with its own Adam lr and floor, the edge step with its lr_incremental: lr_factor
    scales those (given or the builder's defaults) besides the preset's rates, or a grid over it is inert."""
    import functools

    import torch

    from avalanche_sst.experiments.methods import METHODS, StrategyContext, get_method

    preset = TABLES["adaq_split"].presets["tiny"]
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    ctx = StrategyContext(model=model, config=preset, evaluator=None, device=torch.device("cpu"),
                          valid_stream=[object()])  # only checked to be given
    strategy = get_method("adaqpacknet:lr_factor=0.5", {"population": 2}).build(ctx)
    assert (strategy.lr, strategy.lr_min) == pytest.approx((0.005, 5e-5))  # the paper's 0.01 -> 1e-4, halved
    assert get_method("adaqpacknet:lr_factor=3,lr=0.1").build(ctx).lr == pytest.approx(0.3)
    seen = {}
    for name, given, expected in (("edge_kt", {"lr_incremental": 0.003}, {"lr_incremental": 0.0015}),
                                  ("edge_finetune", {}, {})):  # None: the preset's lr_finetune, scaled
        real = METHODS[name]

        @functools.wraps(real.build)
        def capture(ctx, **kwargs):
            seen.update(kwargs, lr_finetune=ctx.config.lr_finetune)

        monkeypatch.setitem(METHODS, name, dataclasses.replace(real, build=capture))
        seen.clear()
        get_method(f"{name}:lr_factor=0.5", given).build(ctx)
        assert {k: v for k, v in seen.items() if k.startswith("lr")} == pytest.approx(
            {**expected, "lr_finetune": 0.5 * preset.lr_finetune})


def test_lr_finetune_factor_scales_the_later_steps_rate_alone(monkeypatch):
    """The edge tables' first step trains the teacher every method starts from: lr_finetune_factor scales
    only lr_finetune (the edge step's rate when lr_incremental is not given), so a grid over it leaves
    the teacher's lr_scratch as it is; where an own rate replaces lr_finetune it is refused (inert)."""
    import functools

    import torch

    from avalanche_sst.experiments.methods import METHODS, StrategyContext, get_method

    preset = TABLES["edge_table4"].presets["tiny"].replace(lr_scratch=0.1, lr_finetune=0.01)
    ctx = StrategyContext(model=torch.nn.Linear(4, 2), config=preset, evaluator=None, device=torch.device("cpu"))
    seen = {}
    for name in ("edge_kt", "lwf"):
        real = METHODS[name]

        @functools.wraps(real.build)
        def capture(ctx, **kwargs):
            seen.update(kwargs, lr_scratch=ctx.config.lr_scratch, lr_finetune=ctx.config.lr_finetune)

        monkeypatch.setitem(METHODS, name, dataclasses.replace(real, build=capture))
        seen.clear()
        get_method(f"{name}:lr_finetune_factor=0.316").build(ctx)
        assert {k: v for k, v in seen.items() if k.startswith("lr")} == pytest.approx(
            {"lr_scratch": 0.1, "lr_finetune": 0.00316})
        seen.clear()  # with lr_factor: both rates scaled by it, lr_finetune by both
        get_method(f"{name}:lr_finetune_factor=0.5", {"lr_factor": 2.0}).build(ctx)
        assert {k: v for k, v in seen.items() if k.startswith("lr")} == pytest.approx(
            {"lr_scratch": 0.2, "lr_finetune": 0.01})
    with pytest.raises(ValueError, match="drop lr_incremental from the variant and the preset's method_kwargs"):
        get_method("edge_kt:lr_finetune_factor=0.5", {"lr_incremental": 0.003})
    with pytest.raises(ValueError, match=r"drop lr, lr_min .*or use lr_factor"):  # Ada-QPacknet's own Adam rates
        get_method("adaqpacknet:lr_finetune_factor=0.5")
    with pytest.raises(ValueError, match=r"lr_finetune_factor must be a number > 0 .*lr_finetune\), got -1"):
        get_method("lwf:lr_finetune_factor=-1")


def test_edge_table4_selects_every_method_family_by_the_rule():
    """Table 4's compared families (KT, fine-tuning, LwF, Cumulative) run at the incremental rate the
    record chose for each (every threshold at its family's), scored on the mean of old and new classes."""
    from avalanche_sst.experiments.paper.edge_tables import TABLE4_CHOICES

    table = TABLES["edge_table4"]
    assert table.selection_score == "mean"
    for name in ("edge_table4", "edge_table1"):
        assert TABLES[name].preset("cpu").method_kwargs == TABLE4_CHOICES
    assert {compared_method(m, ["lr_finetune_factor"]).split(":")[0] for m in table.methods()} == {
        "edge_kt", "edge_finetune", "lwf", "cumulative"}
    assert all("lr_incremental" not in kwargs for kwargs in TABLE4_CHOICES.values())  # it would make the grid inert
    assert TABLES["edge_table7"].preset("cpu").method_kwargs["edge_kt"] == {"lr_incremental": 0.003,
                                                                             "j1_outputs": "known"}


def test_edge_table4_choices_are_the_best_means_of_its_selection_record():
    """TABLE4_CHOICES is what the rule keeps from the published record's per-seed scores (a diverged seed,
    edge_kt at 31.6, scores NaN and rules its grid point out)."""
    import csv
    from collections import defaultdict
    from pathlib import Path

    from avalanche_sst.experiments.paper.edge_tables import TABLE4_CHOICES
    from avalanche_sst.experiments.selection import chosen_values

    record = Path(__file__).resolve().parents[1] / "docs/runs/selection/edge_table4/scores.csv"
    scores = defaultdict(list)
    with open(record) as f:
        for row in csv.DictReader(f):
            scores[row["variant"]].append(float(row["mean"]))
    assert len(scores) == 24 and all(len(v) == 3 for v in scores.values())
    assert chosen_values(best_mean(scores, ["lr_finetune_factor"]), ["lr_finetune_factor"]) == TABLE4_CHOICES
    assert TABLE4_CHOICES == {"edge_kt": {"lr_finetune_factor": 1}, "edge_finetune": {"lr_finetune_factor": 1},
                              "lwf": {"lr_finetune_factor": 0.316}, "cumulative": {"lr_finetune_factor": 10}}


def _fake_sweep(table, seen, curve_means=None):
    """A run_sweep stand-in: each run's last step scores ``table[(method, lr_factor)][seed]`` as top1_seen
    and ``curve_means`` (default: the same table) as avg_incremental."""
    from avalanche_sst.experiments.sweep import RunResult, method_for

    curve_means = table if curve_means is None else curve_means

    def fake_sweep(preset, out, command, workers):
        seen.append(preset)
        results = []
        for variant in preset.methods:
            method_for(preset, variant)  # a runnable name: the method takes lr_factor
            key = (variant.partition(":")[0], float(variant.rsplit("lr_factor=", 1)[1]))
            for seed in preset.seeds:
                acc, mean = (t.get(key, (0.1, 0.1, 0.1))[seed] for t in (table, curve_means))
                last = {"top1_seen": acc, "avg_incremental": mean}
                results.append(RunResult(variant, seed, [0.99, acc], 1.0, [{"top1_seen": 0.99}, last]))
        return results

    return fake_sweep


def test_a_tables_selection_score_decides_unless_score_is_given(tmp_path, monkeypatch):
    """m2kd_fig4 selects on the mean of the accuracy curve (avg_incremental), not on its last point;
    --score top1_seen selects on the last point; a table without selection_score uses the last point."""
    script = _load_selection_script()
    last = {("lwf_mc", f): (0.3, 0.3, 0.3) for f in (0.1, 1.0, 10.0, 100.0)} | {("lwf_mc", 0.1): (0.6, 0.1, 0.5)}
    curve = {("lwf_mc", f): (0.5, 0.5, 0.5) for f in (0.1, 1.0, 10.0, 100.0)} | {("lwf_mc", 10.0): (0.6, 0.7, 0.5)}
    monkeypatch.setattr(script, "run_sweep", _fake_sweep(last, [], curve))
    args = ["--preset", "tiny", "--methods", "lwf_mc", "--grid", "lr_factor=0.1:100:4", "--out", str(tmp_path / "r")]
    assert TABLES["m2kd_fig4"].selection_score == "avg_incremental" == TABLES["m2kd_table1"].selection_score
    script.main(["m2kd_fig4", *args, "--record", str(tmp_path / "curve")])
    text = (tmp_path / "curve" / "selection.md").read_text()
    assert text.startswith("Validation-slice selection, final avg_incremental (%), mean over seeds [0, 1, 2]:")
    assert "Chosen (best mean): lwf_mc:lr_factor=10 (60.00%)" in text
    script.main(["m2kd_fig4", *args, "--record", str(tmp_path / "last"), "--score", "top1_seen"])
    text = (tmp_path / "last" / "selection.md").read_text()
    assert "Chosen (best mean): lwf_mc:lr_factor=0.1 (40.00%)" in text
    assert "\nAt the grid's edge (a value beyond it may score better: extend the grid): lwf_mc: lr_factor=0.1 " \
           "(lowest)\n" in text
    assert TABLES["m2kd_ladder"].selection_score is None
    script.main(["m2kd_ladder", *args, "--record", str(tmp_path / "ladder")])
    text = (tmp_path / "ladder" / "selection.md").read_text()
    assert text.startswith("Validation-slice selection, final top1_seen (%)")
    assert "Chosen (best mean): lwf_mc:lr_factor=0.1 (40.00%)" in text


def test_selection_tunes_every_method_of_a_table_over_one_lr_factor_grid(tmp_path, monkeypatch):
    """The CE baselines and the BCE methods of m2kd_fig4 get the same lr_factor grid; each keeps its best mean."""
    script = _load_selection_script()
    # fixture: final validation accuracy per (method, lr_factor) and seed; finetune peaks at 1, lwf_mc at 10
    table = {("finetune", 0.1): (0.2, 0.2, 0.2), ("finetune", 1.0): (0.5, 0.3, 0.4),
             ("finetune", 10.0): (0.9, 0.1, 0.1), ("finetune", 100.0): (0.1, 0.1, 0.1),
             ("lwf_mc", 0.1): (0.1, 0.1, 0.1), ("lwf_mc", 1.0): (0.3, 0.3, 0.3),
             ("lwf_mc", 10.0): (0.4, 0.5, 0.45), ("lwf_mc", 100.0): (0.2, 0.2, 0.2)}
    seen = []
    monkeypatch.setattr(script, "run_sweep", _fake_sweep(table, seen))
    script.main(["m2kd_fig4", "--preset", "tiny", "--methods", "finetune", "lwf_mc", "--grid", "lr_factor=0.1:100:4",
                 "--seeds", "0", "1", "2", "--out", str(tmp_path / "runs"), "--record", str(tmp_path / "record"),
                 "--shared"])
    preset = seen[-1]
    assert preset.evaluate_on == "valid" and preset.seeds == (0, 1, 2)
    assert preset.methods == ("finetune:lr_factor=0.1", "finetune:lr_factor=1", "finetune:lr_factor=10",
                              "finetune:lr_factor=100", "lwf_mc:lr_factor=0.1", "lwf_mc:lr_factor=1",
                              "lwf_mc:lr_factor=10", "lwf_mc:lr_factor=100")
    text = (tmp_path / "record" / "selection.md").read_text()
    assert "Chosen (best mean): finetune:lr_factor=1 (40.00%), lwf_mc:lr_factor=10 (45.00%)" in text
    assert "{'finetune': {'lr_factor': 1}, 'lwf_mc': {'lr_factor': 10}}" in text
    assert "\nNo choice sits at the grid's edge.\n" in text
    # one value for both: the mean over both methods is best at 10 ((0.45 + 0.3667) / 2)
    assert "Shared (one value for every method, best mean over every method and seed): lr_factor=10 (40.83%)" in text
    rows = (tmp_path / "record" / "scores.csv").read_text().splitlines()
    assert rows[0] == "variant,seed,avg_incremental" and len(rows) == 1 + 8 * 3  # m2kd_fig4's selection_score
    # without --methods: every method of the table, each at every grid point of the same grid
    script.main(["m2kd_fig4", "--preset", "tiny", "--grid", "lr_factor=0.1:100:4", "--out", str(tmp_path / "r2"),
                 "--record", str(tmp_path / "rec2")])
    # a table method with its chosen factor in its name (m2kd:lam=0,lr_factor=31.6) is selected without it
    methods = list(dict.fromkeys(compared_method(m, ["lr_factor"]) for m in TABLES["m2kd_fig4"].methods()))
    assert {"finetune", "lwf", "ewc", "rwalk", "cumulative", "lwf_mc", "m2kd", "m2kd:lam=0"} <= set(methods)
    assert len(seen[-1].methods) == 4 * len(methods)
    for method in methods:
        sep = "," if ":" in method else ":"
        assert [v for v in seen[-1].methods if v.rsplit(",lr_factor=", 1)[0].rsplit(":lr_factor=", 1)[0] == method] \
            == [f"{method}{sep}lr_factor={f}" for f in ("0.1", "1", "10", "100")]


def test_at_grid_edge_names_the_choices_on_the_lowest_or_highest_grid_value():
    from avalanche_sst.experiments.selection import at_grid_edge

    grid = {"lr_factor": (1.0, 0.1, 10.0, 100.0), "lam": (0.01, 0.1, 1.0, 10.0)}
    chosen = {"a": {"lr_factor": 0.1}, "b": {"lr_factor": 100.0, "lam": 0.1}, "c": {"lr_factor": 1.0, "lam": 10.0},
              "d": {"lr_factor": 10.0}}
    assert at_grid_edge(chosen, grid) == ["a: lr_factor=0.1 (lowest)", "b: lr_factor=100 (highest)",
                                          "c: lam=10 (highest)"]
    assert at_grid_edge({"d": {"lr_factor": 10.0}}, grid) == []


def test_chosen_values_read_the_grid_keys_of_each_choice():
    best = {"m2kd:lam=0": ("m2kd:lam=0,lr_factor=3.16", 0.4), "ewc": ("ewc:lr_factor=0.316", 0.3)}
    from avalanche_sst.experiments.selection import chosen_values
    assert chosen_values(best, ["lr_factor"]) == {"m2kd:lam=0": {"lr_factor": 3.16}, "ewc": {"lr_factor": 0.316}}


def test_best_shared_keeps_the_point_best_on_average_over_every_method():
    from avalanche_sst.experiments.selection import best_shared

    scores = {  # lwf_mc alone would pick 1, m2kd alone 10; over both, 3.16 is best (mean 0.45)
        "lwf_mc:lr_factor=1": [0.6, 0.6, 0.6], "lwf_mc:lr_factor=3.16": [0.5, 0.5, 0.5],
        "lwf_mc:lr_factor=10": [0.1, 0.1, 0.1],
        "m2kd:lr_factor=1": [0.1, 0.1, 0.1], "m2kd:lr_factor=3.16": [0.4, 0.4, 0.4],
        "m2kd:lr_factor=10": [0.5, 0.5, 0.5],
    }
    point, mean = best_shared(scores, ["lr_factor"])
    assert point == {"lr_factor": 3.16} and mean == pytest.approx(0.45)
    assert {m: v for m, (v, _) in best_mean(scores, ["lr_factor"]).items()} == {
        "lwf_mc": "lwf_mc:lr_factor=1", "m2kd": "m2kd:lr_factor=10"}
    del scores["m2kd:lr_factor=10"]
    with pytest.raises(ValueError, match=r"lacks scores of \['m2kd'\]"):
        best_shared(scores, ["lr_factor"])


def test_readme_selection_names_the_argument_of_a_negative_exemplar_count(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "experiments" / "select_readme_m2kd.py"
    spec = importlib.util.spec_from_file_location("select_readme_m2kd", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit):
        script.main(["--exemplars", "-1", "--record", "unused"])
    assert "--exemplars must be >= 0 (0: exemplar-free M2KD), got -1" in capsys.readouterr().err


def test_fig4s_cpu_preset_runs_every_selected_method_at_its_records_choice():
    """Each method in the m2kd_fig4 selection record (its last line) runs in Fig. 4 at the lr_factor chosen
    there: a base method through the preset's method_kwargs, a variant (``m2kd:lam=0``) through its name
    in the table, else the base's factor."""
    import ast
    from pathlib import Path

    from avalanche_sst.experiments.registry import parse_variant

    record = Path(__file__).parents[1] / "docs" / "runs" / "selection" / "m2kd_fig4" / "selection.md"
    chosen = ast.literal_eval(record.read_text().rstrip().splitlines()[-1].strip())
    kwargs = TABLES["m2kd_fig4"].preset("cpu").method_kwargs
    in_table = {compared_method(name, ["lr_factor"]): name for name in TABLES["m2kd_fig4"].methods()}
    assert {"m2kd", "lwf_mc"} <= set(chosen) <= set(in_table)
    for method, values in chosen.items():
        base, overrides = parse_variant(in_table[method])
        factor = overrides.get("lr_factor", kwargs.get(base, {}).get("lr_factor", 1.0))
        assert factor == values["lr_factor"], method
