"""Run the paper's tables (Lee & Kim 2023, Tables 1-7 and Fig. 3) and write them in its layout.

    python experiments/paper_tables.py table1 [--preset cpu|paper|tiny] [--seeds 0 1 2] [--out results/paper]
    python experiments/paper_tables.py all --preset cpu
    python experiments/paper_tables.py --list          # tables, presets and CPU-time estimates

Each table goes to ``<out>/<table>/`` (``<table>.md``, ``.csv``, ``.json`` and
the sweeps' own folders); rerunning resumes finished and unfinished runs.
See avalanche_sst.experiments.paper.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from avalanche_sst.experiments import paper as P
from avalanche_sst.experiments.executor import add_executor_arguments, executor_options, ray_session
from avalanche_sst.experiments.paper import PRESET_NAMES, TABLES, estimate_cpu_seconds, run_table
from avalanche_sst.experiments.tables import scenario_text


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", help=f"table ids or 'all': {', '.join(TABLES)}")
    parser.add_argument("--preset", default="cpu", choices=PRESET_NAMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="override the preset's seeds")
    parser.add_argument("--out", default="results/paper")
    parser.add_argument("--data-root", default=None, help="override the preset's data_root")
    parser.add_argument("--device", default=None, help="override the preset's device (cpu, cuda)")
    parser.add_argument("--list", action="store_true", help="list the tables with their presets and estimates")
    add_executor_arguments(parser)
    args = parser.parse_args(argv)

    if args.list or not args.tables:
        for tid, spec in TABLES.items():
            p = spec.preset(args.preset, args.seeds)
            est = estimate_cpu_seconds(tid, args.preset, args.seeds)
            est_text = f"~{est / 60:.0f} min CPU" if est is not None else "no CPU estimate (GPU preset)"
            models = list(dict.fromkeys(dict(P.resolve_overrides(c, args.preset)).get("model", p.model)
                                        for c in spec.cells)) or [p.model]
            print(f"{tid:14s} {p.dataset}/{','.join(models)} {scenario_text(p)} train_fraction {p.train_fraction} "
                  f"seeds {list(p.seeds)}: {est_text}  -- {spec.title}")
        return 0
    ids = list(TABLES) if args.tables == ["all"] else args.tables
    unknown = [t for t in ids if t not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {unknown}; choose from {list(TABLES)} or 'all'")
    changes = {k: v for k, v in {"data_root": args.data_root, "device": args.device}.items() if v is not None}
    command = "python experiments/paper_tables.py " + " ".join(argv)
    options = executor_options(args)
    with ray_session(**options):  # one Ray instance for all the tables' sweeps
        for tid in ids:
            paths = run_table(tid, args.preset, args.out, seeds=args.seeds, command=command.strip(),
                              preset_changes=changes or None, sweep_options=options)
            print(paths["md"].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
