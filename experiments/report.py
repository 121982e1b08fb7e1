"""Generate docs/results.md from the paper tables' outputs and docs/paper_numbers.csv.

    python experiments/report.py [--results results/paper] [--paper-numbers docs/paper_numbers.csv]
                                 [--out docs/results.md] [--archive docs/runs/paper]
                                 [--equal-compute SWEEP_DIR ...] [--framework sst sst_plus]
                                 [--options-ablation SWEEP_DIR] [--data-curve SWEEP_DIR ...]
                                 [--overview DIR ...] [--only-overview] [--tables TABLE ...]

For each table: our table, the paper's numbers, the command and seeds that
produced ours, the summed run seconds, and one generated sentence on whether
the paper's ordering held; tables without results are listed as not run yet,
with the command. See avalanche_sst.experiments.paper.write_report.

``--equal-compute`` appends the section "Does it pay at equal compute?"
(avalanche_sst.experiments.paper.equal_compute) made from those same-class sweep
folders (their ``runs.csv``: the framework, plain and compute-matched
fine-tuning, on the same seeds), with its accuracy-against-cost figure.
``--options-ablation`` appends the options beyond the paper judged on the
validation slices (avalanche_sst.experiments.paper.sst_options; a sweep run with
``evaluate_on=valid``); ``--data-curve`` the accuracy at step 4 against the
train fraction (avalanche_sst.experiments.paper.data_curve; one sweep per
fraction), with its figure.

``--tables T ...`` regenerates only those tables (after rerunning some of them):
every other table keeps its section and summary row from ``--out``, and the
header names the commit(s) of every table and which are older than commit
recording.

``--overview`` adds the cross-method view (avalanche_sst.experiments.overview):
per setting, every method's final score, training cost, memory beyond the
model and inference cost, and a figure of score against cost with the Pareto
front (``docs/fig/overview_<setting>.png``), from the sweep folders found
under the DIRs; sweeps whose runs lack cost or commit are listed, not used.
With ``--only-overview`` nothing else is regenerated: the overview section of
``--out`` is replaced (or appended).
Every table and sweep names the commit(s) of its runs (a run made outside a git
checkout, e.g. from an installed wheel, names ``no git checkout (avalanche-sst
<version>)`` instead); one whose runs lack their cost or any provenance is
refused with the command that regenerates it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from avalanche_sst.experiments.paper import PRESET_NAMES, archive_tables, write_report

#: The data curve's baselines besides the framework(s): plain and compute-matched fine-tuning.
CURVE_BASELINES = ("finetune", "finetune:budget=sst")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/paper")
    parser.add_argument("--paper-numbers", default="docs/paper_numbers.csv")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--archive", default="docs/runs/paper",
                        help="also copy each table's generated files (no checkpoints) here; '' to skip")
    parser.add_argument("--preset", default="cpu", choices=PRESET_NAMES,
                        help="preset named in the commands of tables not run yet")
    parser.add_argument("--equal-compute", nargs="+", default=None, metavar="SWEEP_DIR",
                        help="append the equal-compute section made from these sweep folders' runs.csv")
    parser.add_argument("--framework", nargs="+", default=["sst"],
                        help="the method(s) the equal-compute and data-curve sections test")
    parser.add_argument("--options-ablation", default=None, metavar="SWEEP_DIR",
                        help="append the options-beyond-the-paper section made from this validation sweep")
    parser.add_argument("--data-curve", nargs="+", default=None, metavar="SWEEP_DIR",
                        help="append the accuracy-against-data section made from these sweeps (one per fraction)")
    parser.add_argument("--overview", nargs="+", default=None, metavar="DIR",
                        help="add the cross-method overview made from the sweep folders under these folders")
    parser.add_argument("--tables", nargs="+", default=None, metavar="TABLE",
                        help="regenerate only these tables' sections (and archive only them); the others "
                             "keep theirs from --out")
    parser.add_argument("--only-overview", action="store_true",
                        help="only replace the overview section of --out; regenerate nothing else")
    args = parser.parse_args(argv)
    if args.only_overview:
        if not args.overview:
            parser.error("--only-overview needs --overview DIR ...")
        _write_overview(args.overview, Path(args.out), " ".join(["python experiments/report.py", *(
            argv if argv is not None else __import__("sys").argv[1:])]))
        print(f"wrote the overview section of {args.out}")
        return 0
    appended = [f"--{k.replace('_', '-')}" for k in ("options_ablation", "equal_compute", "data_curve")
                if getattr(args, k)]
    if args.tables and appended:
        parser.error(f"--tables keeps the report's other sections as they are; regenerate {appended} "
                     f"in a full run (without --tables)")
    figures = None
    if args.archive and Path(args.archive).resolve() != Path(args.results).resolve():
        copied = archive_tables(args.results, args.archive, only=args.tables)
        print(f"copied {len(copied)} generated files to {args.archive}")
        figures = args.archive  # link the committed copies, not the untracked run folders
    for section, dirs in (("options-ablation", [args.options_ablation] if args.options_ablation else []),
                          ("equal-compute", args.equal_compute or []), ("data-curve", args.data_curve or [])):
        for folder in dirs:  # refused before anything is written
            print(f"{section} {folder}: runs from commit(s) {check_sweep(folder, section)}")
    write_report(args.results, args.paper_numbers, args.out, preset_name=args.preset, figures_root=figures,
                 only=args.tables)
    if args.options_ablation:
        from avalanche_sst.experiments.paper.sst_options import option_ablation_section

        _append(Path(args.out), option_ablation_section([args.options_ablation]))
    if args.equal_compute:
        _append_equal_compute(args.equal_compute, Path(args.out), args.framework)
    if args.data_curve:
        from avalanche_sst.experiments.paper.data_curve import data_curve_section, plot_data_curve

        out = Path(args.out)
        figure = out.parent / "fig" / "data_curve.png"
        methods = [*args.framework, *CURVE_BASELINES]
        plot_data_curve(args.data_curve, figure, methods=methods)
        _append(out, data_curve_section(args.data_curve, frameworks=args.framework, methods=methods,
                                        figure_link=figure.relative_to(out.parent).as_posix()))
    if args.overview:
        _write_overview(args.overview, Path(args.out), "python experiments/report.py --overview "
                        + " ".join(args.overview) + " --only-overview")
    print(f"wrote {args.out}")
    return 0


def _write_overview(dirs: Sequence[str], out: Path, command: str) -> None:
    from avalanche_sst.experiments.overview import overview_section, replace_section

    section = overview_section(dirs, figure_dir=out.parent / "fig", link_from=out.parent, command=command)
    text = out.read_text() if out.exists() else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(replace_section(text, section) if text else section)


def check_sweep(folder: str, section: str) -> str:
    """The commit(s) of a sweep folder's runs; refused (naming its command) when any lacks its cost or commit."""
    from avalanche_sst.experiments.paper.formatting import read_runs_csv
    from avalanche_sst.experiments.overview import sweep_command
    from avalanche_sst.experiments.provenance import check_provenance, provenance_text

    path = Path(folder) / "runs.csv"
    if not path.exists():
        raise SystemExit(f"--{section}: {path} does not exist; pass sweep folders (each with a runs.csv)")
    runs = read_runs_csv(path)
    check_provenance(runs, f"{section} {folder}", sweep_command(folder))
    return provenance_text(runs)


def _append(out: Path, section: str) -> None:
    out.write_text(out.read_text().rstrip("\n") + "\n\n" + section)


def _append_equal_compute(sweep_dirs: Sequence[str], out: Path, framework: Sequence[str]) -> None:
    from avalanche_sst.experiments.paper.equal_compute import write_equal_compute

    write_equal_compute(sweep_dirs, out, figure=out.parent / "fig" / "equal_compute.png", append=True,
                        framework=framework)
    with open(out, "a") as f:
        f.write("\nSweeps: " + ", ".join(f"`{d}`" for d in sweep_dirs) + " (each folder's table.md names its command).\n")


if __name__ == "__main__":
    raise SystemExit(main())
