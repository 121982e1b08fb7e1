"""Generate docs/results.md from the paper tables' outputs and docs/paper_numbers.csv.

    python experiments/report.py [--results results/paper] [--paper-numbers docs/paper_numbers.csv]
                                 [--out docs/results.md] [--archive docs/runs/paper]

For each table: our table, the paper's numbers, the command and seeds that
produced ours, the summed run seconds, and one generated sentence on whether
the paper's ordering held; tables without results are listed as not run yet,
with the command. See avalanche_sst.experiments.paper.write_report.
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
    args = parser.parse_args(argv)
    figures = None
    if args.archive and Path(args.archive).resolve() != Path(args.results).resolve():
        copied = archive_tables(args.results, args.archive)
        print(f"copied {len(copied)} generated files to {args.archive}")
        figures = args.archive  # link the committed copies, not the untracked run folders
    write_report(args.results, args.paper_numbers, args.out, preset_name=args.preset, figures_root=figures)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
