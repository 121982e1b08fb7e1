"""Provenance of every run (experiments.provenance), the refusal of stale runs, the HParams sessions."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.provenance import (StaleRunsError, check_provenance, code_provenance,
                                                  no_checkout_label, provenance_text)
from avalanche_sst.experiments.sweep import run_sweep
from avalanche_sst.experiments.versions import package_version

REPO = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_commit_of_this_checkout_whatever_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a repository: the package's own checkout is found
    prov = code_provenance(refresh=True)
    assert prov["git_commit"] == git(REPO, "rev-parse", "HEAD").strip()
    assert prov["git_dirty"] == bool(git(REPO, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                         ":(exclude,top)docs").strip())
    assert prov["package"] == "avalanche-sst"


def _package_repo(root: Path, track_package: bool = True) -> Path:
    """A repository with one commit, holding ``pkg/__init__.py`` (tracked or not)."""
    pkg = root / "pkg"
    pkg.mkdir(parents=True)
    (root / "README").write_text("r\n")
    git(root, "init", "-q")
    if track_package:
        (pkg / "__init__.py").write_text("x = 1\n")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    (pkg / "__init__.py").write_text("x = 1\n")
    return pkg


def test_dirty_flag_follows_tracked_changes_only(tmp_path):
    pkg = _package_repo(tmp_path)
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    assert code_provenance(pkg, refresh=True)["git_commit"] == head
    assert code_provenance(pkg, refresh=True)["git_dirty"] is False
    (tmp_path / "results.csv").write_text("untracked output\n")
    assert code_provenance(pkg, refresh=True)["git_dirty"] is False
    # a rewritten record under docs/ is an output of the commands, not code
    (tmp_path / "docs" / "runs").mkdir(parents=True)
    (tmp_path / "docs" / "runs" / "selection.md").write_text("v1\n")
    (tmp_path / "docs" / "notes.md").write_text("v1\n")
    git(tmp_path, "add", "docs")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "docs")
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    (tmp_path / "docs" / "runs" / "selection.md").write_text("v2\n")
    (tmp_path / "docs" / "notes.md").write_text("v2\n")
    assert code_provenance(pkg, refresh=True)["git_dirty"] is False
    (tmp_path / "README").write_text("changed\n")  # any other tracked file counts
    assert code_provenance(pkg, refresh=True)["git_dirty"] is True
    git(tmp_path, "checkout", "-q", "README")
    (pkg / "__init__.py").write_text("x = 2\n")
    assert code_provenance(pkg, refresh=True) | {"version": None} == {
        "package": "avalanche-sst", "version": None, "git_commit": head, "git_dirty": True}


def test_outside_a_checkout_or_when_untracked_the_version_is_named_instead_of_a_commit(tmp_path):
    outside = tmp_path / "wheel" / "pkg"
    outside.mkdir(parents=True)
    (outside / "__init__.py").write_text("")
    prov = code_provenance(outside, refresh=True)
    version = package_version("avalanche-sst")
    assert prov["git_commit"] == f"no git checkout (avalanche-sst {version})" and prov["git_dirty"] is None
    assert prov["version"] == version
    # an installed package inside some other repository (a venv in a checkout) is not that repository's code
    untracked = _package_repo(tmp_path / "repo", track_package=False)
    assert code_provenance(untracked, refresh=True)["git_commit"] == f"no git checkout (avalanche-sst {version})"
    assert no_checkout_label(None) == "no git checkout (avalanche-sst version unknown)"


def test_check_provenance_refuses_runs_without_cost_or_commit():
    good = [{"method": "a", "cost": 10.0, "git_commit": "abc"}]
    check_provenance(good, "t1", "python x.py")  # no error
    with pytest.raises(StaleRunsError, match=r"table 't1'.*training cost.*`python x.py`"):
        check_provenance([{"method": "a", "cost": None, "git_commit": "abc"}], "t1", "python x.py")
    with pytest.raises(StaleRunsError, match=r"table 't2'.*commit of the code.*`make it`"):
        check_provenance(good + [{"method": "b", "cost": 1.0}], "t2", "make it")
    with pytest.raises(StaleRunsError, match="any run"):
        check_provenance([], "t3", "c")
    assert provenance_text([{"git_commit": "0123456789abcdef", "git_dirty": False},
                            {"git_commit": "0123456789abcdef", "git_dirty": False},
                            {"git_commit": "fedcba9876543210", "git_dirty": True}]) == \
        "0123456789ab, fedcba987654 (uncommitted changes)"
    # a run made outside a git checkout names the package version: accepted, shown whole
    wheel = {"method": "a", "cost": 3.0, "git_commit": "no git checkout (avalanche-sst 0.1.0)", "git_dirty": None}
    check_provenance([wheel], "t4", "c")
    assert provenance_text([wheel, {"git_commit": "0123456789abcdef", "git_dirty": False}]) == \
        "no git checkout (avalanche-sst 0.1.0), 0123456789ab"
    with pytest.raises(StaleRunsError, match=r"table 't5'.*training cost"):
        check_provenance([wheel | {"cost": None}], "t5", "c")


# Run in a copy of the package and of experiments/report.py in a folder that is no git checkout,
# as a user who installed a wheel or sdist (or mutmut's scratch copy) runs them.
OUTSIDE_A_CHECKOUT = """
import sys
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, "experiments")
import report
from avalanche_sst.experiments.provenance import code_provenance
from avalanche_sst.experiments.tables import RUN_RECORD_COLUMNS, _provenance_cells
prov = code_provenance()
print("RECORDED", prov["git_commit"], prov["git_dirty"], prov["version"])
run = SimpleNamespace(memory=[0.0], inference=[5.0], provenance=prov)
header = ["method", "seed", "step", "top1", "seconds", "cost", *RUN_RECORD_COLUMNS]
for name, cost in (("fresh", "12.0"), ("nocost", "")):
    Path(name).mkdir()
    rows = [",".join(header), ",".join(["finetune", "0", "1", "0.5", "1.0", cost, *_provenance_cells(run, 0)])]
    Path(name, "runs.csv").write_text("\\n".join(rows) + "\\n")
Path("old").mkdir()
Path("old", "runs.csv").write_text("method,seed,step,top1,seconds,cost\\nfinetune,0,1,0.5,1.0,12.0\\n")
print("ACCEPTED", report.check_sweep("fresh", "equal-compute"))
for refused in ("nocost", "old"):
    try:
        report.check_sweep(refused, "equal-compute")
    except ValueError as error:
        print("REFUSED", error)
"""


def test_outside_a_checkout_report_accepts_runs_naming_the_version_and_refuses_stale_ones(tmp_path):
    import shutil
    import sys

    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "avalanche_sst", tmp_path / "src" / "avalanche_sst", ignore=ignore)
    (tmp_path / "experiments").mkdir()
    shutil.copy(REPO / "experiments" / "report.py", tmp_path / "experiments" / "report.py")
    assert subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True).returncode != 0
    done = subprocess.run([sys.executable, "-c", OUTSIDE_A_CHECKOUT], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    version = package_version("avalanche-sst")
    label = f"no git checkout (avalanche-sst {version})"
    assert f"RECORDED {label} None {version}" in lines
    assert f"ACCEPTED {label}" in lines
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert len(refused) == 2
    assert "'equal-compute nocost': its runs lack the training cost (column `cost`)" in refused[0]
    assert "the commit of the code that ran them" not in refused[0]
    assert "'equal-compute old': its runs lack the commit of the code that ran them (column `git_commit`)" in refused[1]


def test_published_runs_name_a_commit_not_a_copy_outside_a_checkout():
    """docs/ stays strict: a run made outside a git checkout is fine for a user, not for a published table."""
    from avalanche_sst.experiments.paper.formatting import read_runs_csv

    published = sorted((REPO / "docs" / "runs").rglob("runs.csv"))
    assert published
    outside = [str(p.relative_to(REPO)) for p in published
               if any(str(r.get("git_commit") or "").startswith("no git checkout") for r in read_runs_csv(p))]
    assert outside == [], f"rerun these from a git checkout before publishing them: {outside}"
    assert "no git checkout" not in (REPO / "docs" / "results.md").read_text()


# --- a sweep records them --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, make_data):
    out = tmp_path_factory.mktemp("prov")
    preset = Preset(name="prov", model="resnet8-w4", methods=("finetune", "lwf:alpha=0.5"), ratios=(1, 1),
                    seeds=(0,), epochs_scratch=1, epochs_finetune=1, batch_size=16, eval_batch_size=64,
                    validation_fraction=0.2, num_threads=1)
    results = run_sweep(preset, out, data=(make_data(40, seed=0), make_data(20, seed=1)), log=lambda s: None)
    return dict(out=out, results=results, preset=preset)


def test_sweep_writes_provenance_everywhere(sweep):
    out, expected = sweep["out"], code_provenance()
    assert expected["git_commit"]  # the suite runs from a checkout
    assert json.loads((out / "preset.json").read_text())["provenance"] == expected
    assert json.loads((out / "finetune" / "seed0" / "done.json").read_text())["provenance"] == expected
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {(r["git_commit"], r["git_dirty"]) for r in rows} == {(expected["git_commit"], str(expected["git_dirty"]))}
    from avalanche_sst.experiments.paper.formatting import read_runs_csv

    parsed = read_runs_csv(out / "runs.csv")
    assert parsed[0]["git_commit"] == expected["git_commit"] and parsed[0]["git_dirty"] is expected["git_dirty"]
    check_provenance(parsed, "sweep", "c")  # a fresh sweep passes the report's rule


def read_hparams(run_hparams_dir: Path) -> tuple[dict, dict]:
    """The hparams and the metric scalars of an HParams session, read back from its event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_hparams_dir), size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hparams = {}
    for name, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[name] = getattr(value, kind)
    declared = {m.name.tag for m in experiment.experiment.metric_infos}
    metrics = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
    assert set(metrics) == declared
    return hparams, metrics


def test_every_run_has_an_hparams_session_with_its_metrics(sweep):
    out = sweep["out"]
    by_method = {r.method: r for r in sweep["results"]}
    for method, folder in (("finetune", "finetune"), ("lwf:alpha=0.5", "lwf_alpha=0.5")):
        hparams, metrics = read_hparams(out / folder / "seed0" / "hparams")
        run = by_method[method]
        assert hparams["method"] == method and hparams["seed"] == 0 and hparams["setting"] == "same_class"
        assert hparams["model"] == "resnet8-w4" and hparams["ratios"] == "(1, 1)"
        assert hparams["lr_finetune"] == pytest.approx(sweep["preset"].lr_finetune)
        assert metrics["final/top1"] == pytest.approx(run.accuracies[-1])
        assert metrics["cost/total_sample_passes"] == pytest.approx(sum(run.costs))
        assert metrics["memory/bytes_beyond_model"] == run.memory[-1]
        assert metrics["inference/flops_per_image"] == run.inference[-1]
    lwf, _ = read_hparams(out / "lwf_alpha=0.5" / "seed0" / "hparams")
    assert lwf["method_base"] == "lwf" and lwf["variant/alpha"] == 0.5
    assert "variant/alpha" not in read_hparams(out / "finetune" / "seed0" / "hparams")[0]


# --- experiments/report.py refuses stale tables ----------------------------------------------


def _write_runs(folder: Path, commit: bool, cost: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = ["method", "seed", "step", "top1", "seconds", "cost", "git_commit"]
    rows = [["sst:target_ratio=0.1,cut_fraction=0.5", 0, s, 0.5, 1.0, 100 if cost else "", "abc" if commit else ""]
            for s in (1, 2)]
    with open(folder / "runs.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_paper_report_refuses_a_table_whose_runs_lack_provenance(tmp_path):
    from avalanche_sst.experiments.paper.report import checked_commits, write_report

    table = tmp_path / "results" / "table1"
    command = "python experiments/paper_tables.py table1 --preset cpu"
    (table / "sweep").mkdir(parents=True)
    (table / "table1.csv").write_text("Method,Top-1\nsst,50.00 ± 0.00\n")
    meta = {"command": command, "sweeps": ["sweep"], "seeds": [0]}
    (table / "table1.json").write_text(json.dumps(meta))
    _write_runs(table / "sweep", commit=False)
    with pytest.raises(StaleRunsError, match=rf"table 'table1'.*commit of the code.*`{command}`"):
        write_report(tmp_path / "results", REPO / "docs" / "paper_numbers.csv", tmp_path / "r.md")
    _write_runs(table / "sweep", commit=True, cost=False)
    with pytest.raises(StaleRunsError, match=r"table 'table1'.*training cost"):
        write_report(tmp_path / "results", REPO / "docs" / "paper_numbers.csv", tmp_path / "r.md")
    _write_runs(table / "sweep", commit=True)
    assert checked_commits("table1", table, meta, command) == "abc"


def _fixture_table(results: Path, table_id: str, commit: str) -> None:
    table = results / table_id
    (table / "sweep").mkdir(parents=True, exist_ok=True)
    (table / f"{table_id}.csv").write_text("Method,Top-1\nsst,50.00 ± 0.00\n")
    (table / f"{table_id}.json").write_text(json.dumps(
        {"command": f"python experiments/paper_tables.py {table_id}", "sweeps": ["sweep"], "seeds": [0]}))
    _write_runs(table / "sweep", commit=True)
    rows = (table / "sweep" / "runs.csv").read_text().replace(",abc", f",{commit}" if commit else ",")
    (table / "sweep" / "runs.csv").write_text(rows)


def test_paper_report_regenerates_only_the_named_tables_and_keeps_the_others(tmp_path):
    from avalanche_sst.experiments.paper.report import write_report

    results, out, numbers = tmp_path / "results", tmp_path / "r.md", REPO / "docs" / "paper_numbers.csv"
    with pytest.raises(ValueError, match=r"only: .*r\.md does not exist.*whole report first"):
        write_report(results, numbers, out, only=["table1"])
    _fixture_table(results, "table1", "abc")
    _fixture_table(results, "table2", "abc")
    write_report(results, numbers, out)
    assert "Code: table1, table2 from commit(s) abc." in out.read_text()
    out.write_text(out.read_text() + "\n## Overview: appended by --overview\n\nkept as it is\n")
    # table1 rerun by newer code; table2's runs replaced by stale ones that a full report refuses
    _fixture_table(results, "table1", "def")
    _fixture_table(results, "table2", "")
    with pytest.raises(StaleRunsError, match="table 'table2'"):
        write_report(results, numbers, out, only=["table2"])
    text = write_report(results, numbers, out, only=["table1"])
    assert "Code: table1 from commit(s) def; table2 from commit(s) abc." in text
    sections = text.split("\n## ")
    table1 = next(s for s in sections if s.startswith("table1: "))
    table2 = next(s for s in sections if s.startswith("table2: "))
    assert "Code: commit(s) def." in table1 and "Code: commit(s) abc." in table2
    assert text.count("| table1 |") == 1 and text.count("| table2 |") == 1  # one summary row each
    assert text.endswith("## Overview: appended by --overview\n\nkept as it is\n")
    assert "Not run yet" in next(s for s in sections if s.startswith("table3: "))
    with pytest.raises(ValueError, match=r"only: unknown table\(s\) \['tabel1'\]"):
        write_report(results, numbers, out, only=["tabel1"])


def test_report_cli_refuses_a_stale_equal_compute_sweep(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_cli", REPO / "experiments" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    sweep = tmp_path / "sweep"
    _write_runs(sweep, commit=False)
    (sweep / "table.md").write_text("x\nProduced by `python experiments/sweep.py --preset quick` in 1 s.\n")
    out = tmp_path / "results.md"
    with pytest.raises(StaleRunsError, match=r"equal-compute .*`python experiments/sweep.py --preset quick`"):
        report.main(["--results", str(tmp_path / "none"), "--archive", "", "--out", str(out),
                     "--equal-compute", str(sweep)])
    assert not out.exists()  # refused before anything is written
