"""Generate docs/results.md from the paper tables' outputs and docs/paper_numbers.csv.

    python experiments/report.py [--results results/paper] [--paper-numbers docs/paper_numbers.csv]
                                 [--out docs/results.md] [--archive docs/runs/paper]
                                 [--equal-compute docs/runs/equal_compute/quick_converged ...]

For each table: our table, the paper's numbers, the command and seeds that
produced ours, the summed run seconds, and one generated sentence on whether
the paper's ordering held; tables without results are listed as not run yet,
with the command. See avalanche_sst.experiments.paper.write_report.

``--equal-compute`` appends the section "Does it pay at equal compute?"
(avalanche_sst.experiments.paper.equal_compute) made from those same-class sweep
folders (their ``runs.csv``: the framework, plain and compute-matched
fine-tuning, on the same seeds), with its accuracy-against-cost figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from avalanche_sst.experiments.paper import PRESET_NAMES, archive_tables, write_report


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
    parser.add_argument("--framework", default="sst", help="the method the equal-compute section tests")
    args = parser.parse_args(argv)
    figures = None
    if args.archive and Path(args.archive).resolve() != Path(args.results).resolve():
        copied = archive_tables(args.results, args.archive)
        print(f"copied {len(copied)} generated files to {args.archive}")
        figures = args.archive  # link the committed copies, not the untracked run folders
    write_report(args.results, args.paper_numbers, args.out, preset_name=args.preset, figures_root=figures)
    if args.equal_compute:
        _append_equal_compute(args.equal_compute, Path(args.out), args.framework)
    print(f"wrote {args.out}")
    return 0


def _append_equal_compute(sweep_dirs: Sequence[str], out: Path, framework: str) -> None:
    from avalanche_sst.experiments.paper.equal_compute import write_equal_compute

    write_equal_compute(sweep_dirs, out, figure=out.parent / "fig" / "equal_compute.png", append=True,
                        framework=framework)
    with open(out, "a") as f:
        f.write("\nSweeps: " + ", ".join(f"`{d}`" for d in sweep_dirs) + " (each folder's table.md names its command).\n")


if __name__ == "__main__":
    raise SystemExit(main())
