"""Run the papers' tables in kind (SST, M2KD, Ada-QPacknet, edge KT) and write each in its paper's layout.

    python experiments/paper_tables.py table1 [--preset cpu|paper|tiny] [--seeds 0 1 2] [--out results/paper]
    python experiments/paper_tables.py all --preset cpu
    python experiments/paper_tables.py --list          # tables, presets and CPU-time estimates
    python experiments/paper_tables.py all --preset paper --preflight   # every run for 2 iterations + forecast
    python experiments/paper_tables.py m2kd_fig4 --preset paper --out results/paper-5cls \
        --set "scenario_kwargs={'classes_per_step': 5}"   # any preset field, as experiments/sweep.py's --set

Each table goes to ``<out>/<table>/`` (``<table>.md``, ``.csv``, ``.json`` and
the sweeps' own folders); rerunning resumes finished and unfinished runs.
``--set`` changes the preset's fields for every table named (parsed by
``Preset.with_settings``); give it a new ``--out``: a finished run is reused
only under the settings it ran with, and a changed setting stops with an error
naming it. See avalanche_sst.experiments.paper.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from avalanche_sst.experiments import paper as P
from avalanche_sst.experiments.executor import add_executor_arguments, executor_options, ray_session
from avalanche_sst.experiments.paper import PRESET_NAMES, TABLES, estimate_cpu_seconds, run_table
from avalanche_sst.experiments.paper.specs import TableSpec
from avalanche_sst.experiments.preflight import add_preflight_arguments, paper_sweeps, run_preflight
from avalanche_sst.experiments.tables import scenario_text


def set_changes(spec: TableSpec, preset_name: str, seeds: Optional[Sequence[int]],
                assignments: Sequence[str]) -> dict:
    """The preset fields ``--set FIELD=VALUE ...`` assigns, typed as ``Preset.with_settings`` parses them."""
    if not assignments:
        return {}
    changed = spec.preset(preset_name, seeds).with_settings(assignments)
    return {key: getattr(changed, key) for key in (a.partition("=")[0].strip() for a in assignments)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", help=f"table ids or 'all': {', '.join(TABLES)}")
    parser.add_argument("--preset", default="cpu", choices=PRESET_NAMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="override the preset's seeds")
    parser.add_argument("--out", default="results/paper")
    parser.add_argument("--data-root", default=None, help="override the preset's data_root")
    parser.add_argument("--device", default=None, help="override the preset's device (cpu, cuda)")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="set any preset field (after the table ids), e.g. "
                             "--set \"scenario_kwargs={'classes_per_step': 5}\"; use a new --out")
    parser.add_argument("--list", action="store_true", help="list the tables with their presets and estimates")
    add_preflight_arguments(parser)
    add_executor_arguments(parser)
    args = parser.parse_args(argv)

    def changes_for(spec) -> dict:
        try:
            return set_changes(spec, args.preset, args.seeds, args.set)
        except ValueError as err:
            parser.error(str(err))

    if args.list or not args.tables:
        for tid, spec in TABLES.items():
            p = spec.preset(args.preset, args.seeds).replace(**changes_for(spec))
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
    set_by_table = {tid: changes_for(TABLES[tid]) for tid in ids}  # bad --set fails before any work
    options = executor_options(args)
    if args.preflight:
        sweeps = {tid: paper_sweeps(tid, args.preset, {**set_by_table[tid], **changes}) for tid in ids}
        results = run_preflight(sweeps, args.out, args.preflight_iterations, args.preflight_batch, args.device,
                                args.workers, args.gpus_per_run, command.strip(), run=not args.forecast_only)
        return 0 if all(r.ok for r in results) else 1
    with ray_session(**options):  # one Ray instance for all the tables' sweeps
        for tid in ids:
            paths = run_table(tid, args.preset, args.out, seeds=args.seeds, command=command.strip(),
                              preset_changes={**set_by_table[tid], **changes} or None,
                              sweep_options=options)
            print(paths["md"].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
