"""The paper's tables (experiments/paper.py): every entry end to end at the tiny
preset, the paper-shaped writers, the report, the ordering comparison, and the
paper's numbers as data."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from avalanche_sst.experiments import paper as P
from avalanche_sst.experiments.methods import get_method

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "docs" / "paper_numbers.csv"
PAPER_TEXT = ROOT.parent / "shared" / "seeds" / "000_44087247977456f4.txt"
M2KD_TEXT = ROOT.parent / "shared" / "seeds" / "002_fdc4b0d55ed57d86.txt"
SEEDS_DIR = ROOT.parent / "shared" / "seeds"
SEEDS = {"table7_single": (0, 1), "fig3": (0, 1)}
T7_PAPER_COLUMNS = P.sst_tables.T7_METHODS[:4] + P.sst_tables.T7_METHODS[7:8]  # the paper's four and "Ours"  # two seeds where the std is checked
# Generated data: the whole of it (the tiny preset's fractions are for Fashion-MNIST).
TINY_CHANGES = dict(train_fraction=1.0, test_fraction=1.0, epochs_scratch=2)


def read_csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, make_data):
    out = tmp_path_factory.mktemp("paper")
    data = (make_data(40, seed=0), make_data(20, seed=1))
    results, logs = {}, []
    for table_id in (t for t, spec in P.TABLES.items() if spec.paper == "000"):  # 4-class data: the SST paper's
        results[table_id] = P.run_table(table_id, "tiny", out, data=data, seeds=SEEDS.get(table_id, (0,)),
                                        preset_changes=TINY_CHANGES, log=logs.append)
    return dict(out=out, data=data, results=results, logs=logs)


# --------------------------------------------------------------------------
# the specs
# --------------------------------------------------------------------------
def test_every_table_is_defined_with_three_presets():
    assert [t for t, spec in P.TABLES.items() if spec.paper == "000"] == [
        "table1", "table2", "table3", "table4", "table5", "table6", "table7_single", "table7_multi", "fig3"]
    assert [t for t, spec in P.TABLES.items() if spec.paper == "002"] == [
        "m2kd_fig4", "m2kd_table1", "m2kd_ladder", "m2kd_ladder_5_1"]
    assert [t for t, spec in P.TABLES.items() if spec.paper == "003"] == ["adaq_split", "adaq_permuted", "adaq_table4"]
    assert [t for t, spec in P.TABLES.items() if spec.paper == "004"] == ["edge_table1", "edge_table4", "edge_table7"]
    for tid, spec in P.TABLES.items():
        assert set(spec.presets) == {"cpu", "paper", "tiny"}, tid
        five = tid.startswith("m2kd_ladder")  # issue 21: the ablation ladder's paired tests over 5 seeds
        assert spec.presets["cpu"].dataset == "fashion_mnist" and spec.presets["cpu"].seeds == (
            (0, 1, 2, 3, 4) if five else (0, 1, 2))
        # the paper presets' data; Permuted MNIST in kind permutes Fashion-MNIST (no MNIST loader)
        assert spec.presets["paper"].dataset in ("cifar10", "cifar100", "tiny_imagenet") or tid == "adaq_permuted"
        for c in spec.cells:
            assert c.row in spec.rows and c.col in spec.columns, (tid, c)
            get_method(c.method)  # every variant name resolves
        if spec.kind == "sweep" and spec.paper in ("000", "002"):  # later papers' tables leave cells empty
            assert {(c.row, c.col) for c in spec.cells} == {(r, c) for r in spec.rows for c in spec.columns}, tid


def test_paper_presets_follow_the_paper():
    for spec in (s for s in P.TABLES.values() if s.paper == "000"):  # the SST paper's settings
        p = spec.presets["paper"]
        if p.dataset == "cifar100":
            assert (p.batch_size, p.weight_decay, p.epochs_scratch, p.sst_epochs) == (256, 5e-4, 300, 300)
        else:
            assert (p.batch_size, p.weight_decay, p.epochs_scratch, p.sst_epochs) == (64, 1e-4, 90, 90)
        assert (p.lr_scratch, p.lr_finetune, p.momentum) == (0.1, 0.001, 0.9)
    assert P.TABLES["table3"].presets["paper"].model == "resnet110"
    assert P.TABLES["table1"].presets["paper"].model == "resnet50"
    assert [dict(P.resolve_overrides(P.TABLES["table2"].cell(r, "0.3"), "paper"))["model"]
            for r in P.TABLES["table2"].rows] == ["resnet34", "resnet50", "resnet101"]


def test_table_variants_are_the_ablation_switches():
    t1 = P.TABLES["table1"]
    assert t1.cell("0.3", "E_max/3").method == f"sst:target_ratio=0.3,cut_fraction={1 / 3!r}"
    from avalanche_sst.experiments.methods import parse_variant

    assert parse_variant(t1.cell("0.5", "E_max/4").method) == ("sst", {"target_ratio": 0.5, "cut_fraction": 0.25})
    assert [c.method for c in P.TABLES["table3"].cells] == [
        "sst:use_kd=False,use_cr=False", "sst:adaptive_weights=False,use_cr=False", "sst:use_cr=False", "sst"]
    assert [c.method for c in P.TABLES["table4"].cells] == ["sst:new_data=finetune,reinit=False", "sst:reinit=False", "sst"]
    assert P.TABLES["table5"].methods() == ("sst:update_teacher=False", "sst")
    assert P.TABLES["table6"].methods() == ("sst:sparsity=bst,use_msl=False", "sst:sparsity=bst",
                                            "sst:use_msl=False", "sst")
    for tid in ("table7_single", "table7_multi"):
        assert P.TABLES[tid].methods() == ("finetune", "hpo", "dml", "lwm", "lwf", "ewc", "cumulative", "sst",
                                           "sst_plus", "finetune:budget=sst", "lwf:budget=sst", "ewc:budget=sst")
    for tid in ("table5", "table6", "table7_multi"):
        assert P.TABLES[tid].presets["cpu"].ratios == (1, 1, 1, 1)
    for tid in ("table1", "table2", "table3", "table4", "table7_single"):
        assert P.TABLES[tid].presets["cpu"].ratios == (1, 1)


def test_cpu_presets_are_estimated_under_an_hour():
    for tid, spec in P.TABLES.items():
        est = P.estimate_cpu_seconds(tid, "cpu")
        if spec.paper in ("003", "004") and est is None:  # MLPs and the edge methods: no cost model (measured)
            continue
        assert est is not None and 300 < est < 3600, (tid, est)
        assert P.estimate_cpu_seconds(tid, "paper") is None  # not CIFAR ResNet-(6n+2) models, or GPU-sized
    # the estimate scales with the seeds and the data
    assert P.estimate_cpu_seconds("table4", "cpu", seeds=(0,)) == pytest.approx(P.estimate_cpu_seconds("table4") / 3)


# --------------------------------------------------------------------------
# every table end to end at the tiny preset
# --------------------------------------------------------------------------
SST_TABLES = [t for t, spec in P.TABLES.items() if spec.paper == "000"]


@pytest.mark.parametrize("table_id", SST_TABLES)
def test_table_runs_and_is_written_in_the_paper_layout(outputs, table_id):
    spec = P.TABLES[table_id]
    res = outputs["results"][table_id]
    out_dir = outputs["out"] / table_id
    assert res["dir"] == out_dir
    for ext in ("md", "csv", "json"):
        assert (out_dir / f"{table_id}.{ext}").is_file()

    rows = read_csv_rows(out_dir / f"{table_id}.csv")
    header, body = rows[0], rows[1:]
    expected_header = [spec.corner, *spec.columns] + (["Gain(%)"] if spec.gain == "col" else [])
    assert header == expected_header
    expected_rows = list(spec.rows) + (["Gain(%)"] if spec.gain == "row" else [])
    assert [line[0] for line in body] == expected_rows
    for line in body[:len(spec.rows)]:
        for text in line[1:len(spec.columns) + 1]:
            parsed = P.parse_cell(text)
            assert parsed is not None, (table_id, text)
            assert re.fullmatch(r"-?\d+\.\d+ ± \d+\.\d+", text)
    if spec.gain == "row":
        gains = body[-1]
        assert gains[1] == "-"
        ref = P.parse_cell(body[0][1])[0]
        for text, cell in zip(gains[2:], body[0][2:]):
            assert float(text) == pytest.approx(P.parse_cell(cell)[0] - ref, abs=0.011)

    seeds = list(SEEDS.get(table_id, (0,)))
    md = (out_dir / f"{table_id}.md").read_text()
    assert "| " + " | ".join(expected_header) + " |" in md
    assert f"seeds {seeds}" in md
    command = P.default_command(table_id, "tiny", seeds, outputs["out"])
    assert f"`{command}`" in md
    meta = json.loads((out_dir / f"{table_id}.json").read_text())
    assert meta["seeds"] == seeds and meta["command"] == command and meta["preset"] == "tiny"


def _runs_by_cell(csv_path: Path) -> dict:
    per = defaultdict(list)
    for r in P.read_runs_csv(csv_path):
        per[r["method"], r["step"]].append(100 * r["top1"])
    return per


def test_cells_are_mean_and_std_of_the_runs_own_numbers(outputs):
    """table7_single ran two seeds: each cell is the mean ± sample std of runs.csv."""
    spec = P.TABLES["table7_single"]
    out_dir = outputs["out"] / "table7_single"
    per = _runs_by_cell(out_dir / "sweep" / "runs.csv")
    cells = outputs["results"]["table7_single"]["cells"]
    any_spread = False
    for c in spec.cells:
        values = per[c.method, c.step]
        assert len(values) == 2
        mean, std, n = cells[c.row, c.col]
        assert n == 2
        assert mean == pytest.approx(statistics.fmean(values)) and std == pytest.approx(statistics.stdev(values))
        any_spread |= std > 0
    assert any_spread, "both seeds agree everywhere: the std check proves nothing"
    _, written = P.read_table_csv(out_dir / "table7_single.csv")
    for key, (mean, std, _) in cells.items():
        assert written[key] == pytest.approx((mean, std), abs=0.006)


def test_table2_runs_one_sweep_per_model(outputs):
    out_dir = outputs["out"] / "table2"
    spec = P.TABLES["table2"]
    cells = outputs["results"]["table2"]["cells"]
    for row, model in zip(spec.rows, ("resnet8-w4", "resnet14-w4", "resnet20-w4")):
        sweep = out_dir / f"sweep_model={model}"
        preset = json.loads((sweep / "preset.json").read_text())
        assert preset["model"] == model
        assert preset["methods"] == ["sst:target_ratio=0.1", "sst:target_ratio=0.3", "sst:target_ratio=0.5"]
        per = _runs_by_cell(sweep / "runs.csv")
        for col in spec.columns:
            assert cells[row, col][0] == pytest.approx(per[f"sst:target_ratio={col}", 2][0])
    assert "resnet14-w4" in (out_dir / "table2.md").read_text()


def test_multi_step_tables_report_every_step(outputs):
    for tid in ("table5", "table6", "table7_multi"):
        spec = P.TABLES[tid]
        per = _runs_by_cell(outputs["out"] / tid / "sweep" / "runs.csv")
        assert {step for (_, step) in per} == {1, 2, 3, 4}
        assert {m for (m, _) in per} == set(spec.methods())  # variant names with commas included
        for c in spec.cells:
            assert outputs["results"][tid]["cells"][c.row, c.col][0] == pytest.approx(per[c.method, c.step][0])


def test_fig3_writes_histogram_and_means(outputs):
    out_dir = outputs["out"] / "fig3"
    assert (out_dir / "fig3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out_dir / "fig3_means.csv", newline="") as f:
        means = list(csv.DictReader(f))
    assert sorted((r["network"], r["seed"]) for r in means) == sorted(
        (n, str(s)) for n in P.FIG3_ROWS for s in SEEDS["fig3"])
    with open(out_dir / "fig3_gammas.csv", newline="") as f:
        gammas = list(csv.DictReader(f))
    for r in means:
        values = [float(g["abs_gamma"]) for g in gammas if (g["network"], g["seed"]) == (r["network"], r["seed"])]
        assert len(values) == int(r["n"]) > 0
        assert statistics.fmean(values) == pytest.approx(float(r["mean_all"]), rel=1e-4)
        assert float(r["mean_remaining"]) >= float(r["mean_all"]) - 1e-9
    cells = outputs["results"]["fig3"]["cells"]
    pre = [float(r["mean_remaining"]) for r in means if r["network"] == "Pre-trained"]
    assert cells["Pre-trained", P.FIG3_COLS[2]][0] == pytest.approx(statistics.fmean(pre))
    # BST and SST start from the same pre-trained model: the same count of factors
    assert len({r["n"] for r in means}) == 1
    # ... and differ once SST selects (SP_r < 1 from its second epoch)
    for seed in SEEDS["fig3"]:
        by_net = {n: [float(g["abs_gamma"]) for g in gammas if (g["network"], g["seed"]) == (n, str(seed))]
                  for n in P.FIG3_ROWS}
        assert by_net["BST"] != by_net["SST"] and by_net["BST"] != by_net["Pre-trained"]


def test_gamma_stats_excludes_the_target_ratio_smallest():
    import torch

    g = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    s = P.gamma_stats(g, target_ratio=0.3, zero_tol=0.01)
    assert s["n"] == 10 and s["mean_all"] == pytest.approx(1.0)
    assert s["mean_remaining"] == pytest.approx(10 / 7) and s["fraction_zero"] == pytest.approx(0.3)


def test_rerun_reuses_the_finished_runs(outputs, tmp_path):
    logs: list[str] = []
    again = P.run_table("table4", "tiny", outputs["out"], data=outputs["data"], seeds=(0,),
                        preset_changes=TINY_CHANGES, log=logs.append)
    assert logs and all("finished earlier" in line for line in logs)
    assert again["cells"] == outputs["results"]["table4"]["cells"]


def test_unknown_table_and_preset_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown table 'table9'"):
        P.run_table("table9", "tiny", tmp_path)
    with pytest.raises(ValueError, match="unknown preset 'gpu'"):
        P.TABLES["table1"].preset("gpu")


def test_cli_lists_tables_and_refuses_unknown_ones(capsys):
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("paper_tables_cli", ROOT / "experiments" / "paper_tables.py")
    cli = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(cli)
    assert cli.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for tid in P.TABLES:
        assert tid in listed
    assert "resnet8,resnet14,resnet20" in listed and "min CPU" in listed
    with pytest.raises(SystemExit):
        cli.main(["table9"])


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------
def test_report_shows_every_table_with_command_and_ordering(outputs, tmp_path):
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("report_cli", ROOT / "experiments" / "report.py")
    report_cli = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(report_cli)
    out = tmp_path / "results.md"
    archive = tmp_path / "archive"
    assert report_cli.main(["--results", str(outputs["out"]), "--paper-numbers", str(PAPER_CSV),
                            "--out", str(out), "--archive", str(archive)]) == 0
    text = out.read_text()
    # the archive holds the generated tables and run summaries, never checkpoints or event files
    for tid in SST_TABLES:
        assert {f"{tid}.md", f"{tid}.csv", f"{tid}.json"} <= {f.name for f in (archive / tid).iterdir()}
    assert (archive / "table2" / "sweep_model=resnet14-w4" / "runs.csv").exists()
    assert (archive / "fig3" / "fig3.png").exists()
    copied = [f for f in archive.rglob("*") if f.is_file()]
    assert all(f.suffix in {".md", ".csv", ".json", ".png"} for f in copied)
    assert not any("ckpt" in str(f) or "events" in f.name for f in copied)
    # figures are linked from the archive, relative to the report
    fig3 = text.split("## fig3:")[1]
    assert f"[fig3.png]({os.path.relpath(archive / 'fig3' / 'fig3.png', out.parent)})" in fig3
    assert "[sweep/accuracy.png](" in text.split("## table6:")[1].split("\n## ")[0]
    summary = text.split("## Summary")[1].split("\n## ")[0]
    rows = [l for l in summary.strip().splitlines()[2:] if l.startswith("| ")]
    assert [l.split(" | ")[0] for l in rows] == [f"| {t}" for t in SST_TABLES]
    # grouped by paper: the SST paper's tables, then M2KD's (not run here, so only their commands)
    assert text.index("# Paper 000") < text.index("# Paper 002")
    sections = [s for s in text.split("\n## ")[1:] if not s.startswith(("Summary", "Compared methods with"))]
    assert [s.split(":")[0] for s in sections] == list(P.TABLES)
    by_id = {s.split(":")[0]: s for s in sections}
    assert "Not run yet" in by_id["m2kd_table1"] and "paper_tables.py m2kd_table1 --preset" in by_id["m2kd_table1"]
    assert "Not run yet" in by_id["edge_table1"] and "paper_tables.py edge_table1 --preset" in by_id["edge_table1"]
    for tid, section in zip(SST_TABLES, sections):
        seeds = list(SEEDS.get(tid, (0,)))
        assert f"`{P.default_command(tid, 'tiny', seeds, outputs['out'])}`" in section
        assert f"seeds {seeds}" in section
        # (table4 was run twice by the resume test above)
        assert re.search(r"wall time \d+ s, \d+ runs? at a time, \d+ torch threads? each( over \d+ invocations)?; "
                         r"process CPU time \d+ s", section)
        ordering = [l for l in section.splitlines() if l.startswith("Ordering: ")]
        assert len(ordering) == 1 and ordering[0].count(". ") == 0, ordering  # one sentence
        assert "The paper's ordering held" in ordering[0] or "no ordering is compared" in ordering[0]
        assert "Not run yet" not in section
        if tid != "fig3":
            assert f"Paper ({P.TABLES[tid].paper_source}, {P.TABLES[tid].paper_setting}):" in section
    # the paper's own numbers appear next to ours
    assert "69.71 ± 0.19" in text and "61.35 ± 0.12" in text and "54.90 ± 0.12" in text


@pytest.mark.parametrize("table_id, n_sweeps", [("table2", 3), ("table6", 1), ("fig3", 1)])
def test_report_cpu_time_is_the_sum_of_run_seconds(outputs, table_id, n_sweeps):
    out_dir = outputs["out"] / table_id
    total, runs = 0.0, set()
    for path in out_dir.rglob("runs.csv"):
        header, *rows = read_csv_rows(path)
        k, sec = len(header) - 1, header.index("seconds") - len(header)  # from the right: names may hold commas
        per_run = {(path, ",".join(r[:-k]), r[-k]): float(r[sec]) for r in rows}
        runs |= set(per_run)
        total += sum(per_run.values())
    assert P.cpu_seconds(out_dir) == pytest.approx(total)
    assert len(list(out_dir.rglob("runs.csv"))) == n_sweeps
    spec = P.TABLES[table_id]
    n_runs = sum(len(m) for m in P._sweep_groups(spec, "tiny").values()) if spec.cells else len(P.FIG3_ROWS)
    assert len(runs) == n_runs * len(SEEDS.get(table_id, (0,)))


def test_rerunning_a_table_adds_its_invocation_to_the_times(tmp_path, make_data):
    data = (make_data(40, seed=0), make_data(20, seed=1))
    kw = dict(data=data, preset_changes=TINY_CHANGES, log=lambda m: None)
    first = json.loads(P.run_table("table4", "tiny", tmp_path, command="first", **kw)["json"].read_text())
    second = json.loads(P.run_table("table4", "tiny", tmp_path, command="second", **kw)["json"].read_text())
    assert [i["command"] for i in second["invocations"]] == ["first", "second"]
    assert second["invocations"][0] == first["invocations"][0]
    assert second["wall_seconds"] == pytest.approx(sum(i["wall_seconds"] for i in second["invocations"]), abs=0.11)
    assert second["cpu_seconds"] == pytest.approx(sum(i["cpu_seconds"] for i in second["invocations"]), abs=0.11)
    assert second["cells"] == first["cells"]  # the second one resumed every finished run
    # a table written before invocations were recorded counts as one invocation without CPU time
    meta_path = tmp_path / "table4" / "table4.json"
    old = {k: v for k, v in second.items() if k not in ("invocations", "cpu_seconds")}
    meta_path.write_text(json.dumps(old))
    third = json.loads(P.run_table("table4", "tiny", tmp_path, command="third", **kw)["json"].read_text())
    assert len(third["invocations"]) == 2 and "cpu_seconds" not in third
    assert "over 2 invocations" in P._time_text(third, tmp_path / "table4")


def test_report_lists_tables_not_run_yet(tmp_path):
    text = P.write_report(tmp_path / "empty", PAPER_CSV, tmp_path / "r.md")
    for tid in P.TABLES:
        section = text.split(f"## {tid}:")[1].split("\n## ")[0]
        assert "Not run yet" in section
        assert P.default_command(tid, "cpu", P.TABLES[tid].preset("cpu").seeds, tmp_path / "empty") in section


# --------------------------------------------------------------------------
# the ordering comparison
# --------------------------------------------------------------------------
def test_ordering_names_the_flipped_pair():
    ours = {"a": 1.0, "b": 2.0, "c": 3.0}
    paper = {"a": 1.0, "b": 3.0, "c": 2.0}
    res = P.compare_orderings(ours, paper)
    assert (res.pairs, res.agree) == (3, 2)
    assert [(hi, lo) for hi, lo, *_ in res.flipped] == [("b", "c")]
    sentence = P.ordering_sentence(res)
    assert "held in 2 of 3" in sentence and "b vs c" in sentence and "flipped" in sentence
    assert "a vs" not in sentence
    assert res.best_paper == [("b", "c")]


def test_ordering_all_agree_ties_and_groups():
    res = P.compare_orderings({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": 20, "c": 30})
    assert (res.pairs, res.agree, res.flipped) == (3, 3, [])
    assert P.ordering_sentence(res).startswith("The paper's ordering held: all 3 compared pair(s)")
    # equal paper values are not an ordering; equal ours are reported as tied
    res = P.compare_orderings({"a": 1, "b": 1, "c": 3}, {"a": 5, "b": 5, "c": 4})
    assert res.pairs == 2 and res.agree == 0 and len(res.flipped) == 2 and res.tied == []
    res = P.compare_orderings({"a": 2, "b": 2}, {"a": 5, "b": 4})
    assert res.tied and "tied" in P.ordering_sentence(res)
    # groups: pairs across groups are not compared; keys missing on one side are skipped
    ours = {("r1", "x"): 1, ("r1", "y"): 2, ("r2", "x"): 9, ("r2", "y"): 0, ("r2", "z"): 5}
    paper = {("r1", "x"): 2, ("r1", "y"): 1, ("r2", "x"): 1, ("r2", "y"): 0}
    res = P.compare_orderings(ours, paper, [[("r1", "x"), ("r1", "y")], [("r2", "x"), ("r2", "y"), ("r2", "z")]])
    assert (res.pairs, res.agree) == (2, 1)
    assert "r1: x vs y" in P.ordering_sentence(res)
    assert P.ordering_sentence(P.compare_orderings({"a": 1}, {"b": 2})).startswith("No pair")


def test_seed_test_pairs_cells_that_share_seeds():
    # b - a per seed = 1, 1.5, 1: mean 7/6, sd 0.2887, se 1/6 -> t = 7 on 2 df; p = 1 - t / sqrt(2 + t^2)
    a, b = {0: 10.0, 1: 11.0, 2: 12.0}, {0: 11.0, 1: 12.5, 2: 13.0}
    stats = {"a": (11.0, 1.0, 3), "b": (P.mean_std(list(b.values()))[0], P.mean_std(list(b.values()))[1], 3)}
    paired = P.seed_test(stats, {"a": a, "b": b})
    assert paired("b", "a") == pytest.approx(1 - 7 / math.sqrt(51), rel=1e-6)  # 0.0198
    # the same means and spreads without the pairing (Welch): t = 1.40, not significant
    welch = P.seed_test(stats)
    assert welch("b", "a") > 0.2
    res = P.compare_orderings({"a": 11.0, "b": stats["b"][0]}, {"a": 1.0, "b": 2.0}, p_value=paired)
    assert (res.agree, res.agree_significant) == (1, 1)
    assert "significant at 0.05 over the seeds: 1 of the 1 agreeing and 0 of the 0 flipped" in P.ordering_sentence(res)
    res = P.compare_orderings({"a": 11.0, "b": stats["b"][0]}, {"a": 1.0, "b": 2.0}, p_value=welch)
    assert (res.agree, res.agree_significant) == (1, 0)
    # identical runs (Table 6's shared step 1) are never significant; a flip can be
    same = P.seed_test({"x": (5.0, 1.0, 3), "y": (5.0, 1.0, 3)}, {"x": a, "y": dict(a)})
    assert math.isnan(same("x", "y"))
    res = P.compare_orderings({"a": 11.0, "b": stats["b"][0]}, {"a": 2.0, "b": 1.0}, p_value=paired)
    assert (len(res.flipped), res.flipped_significant) == (1, 1)
    # one seed, or means without spreads: no test
    assert P.seed_test({"a": (1.0, 0.0, 1), "b": (2.0, 0.0, 1)}) is None
    assert P.seed_test({"a": 1.0, "b": 2.0}) is None


def test_report_reads_each_cells_seeds_back_from_the_runs(outputs):
    spec = P.TABLES["table6"]
    per_seed = P.seed_values(spec, outputs["out"] / "table6", "tiny")
    assert set(per_seed) == {(c.row, c.col) for c in spec.cells}
    rows = P.read_runs_csv(outputs["out"] / "table6" / "sweep" / "runs.csv")
    top1 = {(r["method"], r["seed"], r["step"]): 100 * r["top1"] for r in rows}
    for c in spec.cells:
        assert per_seed[c.row, c.col] == {s: top1[c.method, s, c.step] for s in SEEDS.get("table6", (0,))}
    cells = P.our_cells(spec, outputs["out"] / "table6")
    for key, values in per_seed.items():
        assert cells[key][0] == pytest.approx(sum(values.values()) / len(values))
    fig = P.seed_values(P.TABLES["fig3"], outputs["out"] / "fig3", "tiny")
    assert set(fig) == {(r, c) for r in P.FIG3_ROWS for c in P.FIG3_COLS}


def test_table_ordering_uses_the_paper_numbers_of_the_table():
    numbers = P.load_paper_numbers(PAPER_CSV)
    spec = P.TABLES["table4"]
    ours = {("Acc.(%)", "w/ FT"): (80.0, 0.1), ("Acc.(%)", "w/ AOD"): (81.0, 0.1), ("Acc.(%)", "w/ AOD&Dri"): (79.0, 0.1)}
    res, sentence = P.table_ordering(spec, ours, numbers)
    assert (res.pairs, res.agree) == (3, 1)
    assert "Acc.(%): w/ AOD&Dri vs w/ FT" in sentence and "Acc.(%): w/ AOD&Dri vs w/ AOD" in sentence
    # Table 1 compares all nine cells; the paper's best is (0.3, E_max/3)
    spec = P.TABLES["table1"]
    ours = {(r, c): float(i) for i, (r, c) in enumerate((r, c) for r in spec.rows for c in spec.columns)}
    res, _ = P.table_ordering(spec, ours, numbers)
    assert res.pairs == 36 and res.best_paper == [(("0.3", "E_max/3"), ("0.5", "E_max/4"))]
    # fig3: the paper's stated ordering, SST above BST in the non-useless mean
    col = P.FIG3_COLS[2]
    res, sentence = P.table_ordering(P.TABLES["fig3"], {("SST", col): 0.9, ("BST", col): 0.5}, numbers)
    assert (res.pairs, res.agree) == (1, 1) and "held: all 1" in sentence


# --------------------------------------------------------------------------
# the paper's numbers as data
# --------------------------------------------------------------------------
def test_paper_numbers_cover_every_table_and_cite_it():
    numbers = P.load_paper_numbers(PAPER_CSV)
    for n in numbers:
        assert n.source.startswith(n.table), n
    for tid, spec in P.TABLES.items():
        if spec.kind == "fig3" or tid == "m2kd_fig4":  # figures: the papers print no numbers
            continue
        cells = P.paper_cells(numbers, spec)
        if spec.paper != "000" and tid != "m2kd_table1":
            # the other papers print only some of the rows we run (our baselines, our thresholds)
            assert cells or spec.paper_claims, (tid, "neither the paper's numbers nor its stated claims")
            assert set(cells) <= {(c.row, c.col) for c in spec.cells}, (tid, set(cells))
            continue
        for c in spec.cells:
            if tid.startswith("table7") and c.col not in {label for label, _ in T7_PAPER_COLUMNS}:
                continue  # Avalanche's baselines and the issue-14 columns: not in the paper
            assert (c.row, c.col) in cells, (tid, c.row, c.col)
    by = {(n.table, n.setting, n.row, n.column): n for n in numbers}
    # METHOD.md's "Paper figures" lines
    expect = {
        ("CIFAR-100 ResNet32 multi-step", "Baseline (fine-tuning)"): [51.00, 54.53, 57.06, 58.62],
        ("CIFAR-100 ResNet32 multi-step", "Ours"): [None, 58.04, 60.54, 60.90],
        ("CIFAR-100 ResNet110 multi-step", "Baseline (fine-tuning)"): [53.45, 56.48, 59.19, 60.66],
        ("CIFAR-100 ResNet110 multi-step", "Ours"): [53.45, 59.80, 63.18, 65.27],
        ("Tiny-ImageNet ResNet50 multi-step", "Baseline (fine-tuning)"): [39.59, 44.63, 46.28, 48.48],
        ("Tiny-ImageNet ResNet50 multi-step", "Ours"): [39.59, 48.61, 52.68, 54.90],
    }
    for (setting, col), values in expect.items():
        for k, v in enumerate(values, 1):
            if v is not None:
                assert by["Table 7", setting, f"Data{k}", col].value == v
    single = {"Baseline (fine-tuning)": 65.90, "HPO": 66.02, "DML": 66.11, "LwM": 66.48, "Ours": 69.71}
    for col, v in single.items():
        assert by["Table 7", "CIFAR-100 ResNet110 single-step", "New", col].value == v


@pytest.mark.skipif(not PAPER_TEXT.exists(), reason="the paper text is not beside this checkout")
def test_paper_numbers_appear_in_the_paper_text():
    """Every number in docs/paper_numbers.csv is printed in its paper (seeds 000 and 002)."""
    text = PAPER_TEXT.read_text()
    start = text.index("IV. EXPERIMENTS")
    body = text[start:]
    numbers_in_text = set(re.findall(r"\d+\.\d+", body))
    m2kd_text = M2KD_TEXT.read_text()
    for n in P.load_paper_numbers(PAPER_CSV):
        if n.paper == "002":  # M2KD's Table 1 prints one decimal, row by row
            row = next(l for l in m2kd_text.splitlines() if l.startswith(n.row + "\t"))
            assert row.split("\t")[int(n.column)] == f"{n.value:.1f}", n
            continue
        if n.paper in ("003", "004"):  # printed as the paper prints them (93.5, 160, 0.00)
            other = SEEDS_DIR.glob(f"{n.paper}_*.txt")
            printed = set(re.findall(r"\d+(?:\.\d+)?", next(other).read_text()))
            assert {f"{n.value:g}", f"{n.value:.2f}"} & printed, n
            continue
        assert f"{n.value:.2f}" in numbers_in_text, n
        if n.std is not None:
            assert f"{n.std:.2f}" in numbers_in_text, n


def test_ordering_lists_the_most_certain_flips_first():
    ours = {"a": 1.0, "b": 2.0, "c": 3.0}
    paper = {"a": 3.0, "b": 2.0, "c": 1.0}  # all three pairs flipped
    p = {("a", "b"): 0.3, ("a", "c"): 0.001, ("b", "c"): float("nan")}
    res = P.compare_orderings(ours, paper, p_value=lambda hi, lo: p[hi, lo])
    sentence = P.ordering_sentence(res, max_listed=2)
    assert res.flipped_significant == 1
    assert sentence.index("a vs c") < sentence.index("a vs b") and "b vs c" not in sentence
    assert "p = 0.001" in sentence and "p = 0.3" in sentence and "and 1 more" in sentence


def test_m2kd_table_runs_on_ten_classes(tmp_path, make_data):
    """M2KD's Table 1 in kind (5 steps x 2 classes) end to end at the tiny size."""
    data = (make_data(12, seed=0, classes=10), make_data(4, seed=1, classes=10))
    result = P.run_table("m2kd_table1", "tiny", tmp_path, data=data, seeds=(0,),
                         preset_changes=dict(train_fraction=1.0, test_fraction=1.0), log=lambda s: None)
    header, *rows = read_csv_rows(result["csv"])
    assert [r[0] for r in rows] == list(P.TABLES["m2kd_table1"].rows)
    assert len(header) == 6  # the row label and steps 1-5
    md = Path(result["md"]).read_text()
    assert "scenario class_incremental" in md and "all classes seen so far" in md


def test_table_records_how_its_runs_shared_the_machine(outputs):
    from avalanche_sst.experiments.paper.report import time_text

    table = outputs["out"] / "table1"
    meta = json.loads((table / "table1.json").read_text())
    assert (meta["workers"], meta["threads_per_run"]) == (1, 1) and "threads" not in meta
    assert meta["invocations"][-1]["workers"] == 1
    assert time_text(meta, table).startswith(f"wall time {meta['wall_seconds']:.0f} s, 1 run at a time, "
                                             "1 torch thread each; ")
    # tables written before the executor was recorded keep their wording
    old = {"wall_seconds": 970.0, "threads": 2, "invocations": [{}]}
    assert time_text(old, table / "none").startswith("wall time 970 s on 2 thread(s)")
    # with Ray workers the table process's CPU time leaves the runs out, and says so
    assert "process CPU time 3 s; " in time_text({"cpu_seconds": 3.0, "workers": 1}, table / "none") + "; "
    assert time_text({"cpu_seconds": 3.0, "workers": 2}, table / "none") == (
        "process CPU time 3 s (the table process only: its runs ran in Ray workers)")
