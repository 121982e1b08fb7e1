"""Wall time of one sweep with 1 and with more workers, in one invocation, as a ratio.

    python benchmarks/sweep_scaling.py                       # the quick preset, 1 then 2 workers
    python benchmarks/sweep_scaling.py --workers 1 2 4 --preset full --seeds 0
    python benchmarks/sweep_scaling.py --train-fraction 0.01 # a smoke test of the script itself

Each worker count trains the whole sweep from scratch in its own folder under
``--out`` (removed first), one torch thread per run, and the tables must come
out identical: every worker runs on this machine, so on one CPU path (a table
from another CPU path would differ in the last digits, see
``avalanche_sst.cpu_path``). Run it on an otherwise idle machine: other processes on the
cores change both times. The target on 2 cores is a speed-up of at least 1.6x.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from avalanche_sst.experiments.presets import PRESETS, get_preset
from avalanche_sst.experiments.sweep import load_dataset, run_sweep
from avalanche_sst.experiments.tables import machine_description
from avalanche_sst.experiments.versions import cpu_path, cpu_path_text, environment_versions, versions_text

TARGET_SPEEDUP = 1.6  # with 2 workers on 2 cores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="worker counts to time (first: the reference)")
    parser.add_argument("--train-fraction", type=float, default=None, help="override the preset's (smaller: quicker)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--out", default="results/sweep_scaling")
    args = parser.parse_args(argv)
    if any(w < 1 for w in args.workers):
        parser.error(f"--workers must all be >= 1, got {args.workers}")

    preset = get_preset(args.preset)
    changes = {k: v for k, v in {"train_fraction": args.train_fraction,
                                 "seeds": tuple(args.seeds) if args.seeds else None}.items() if v is not None}
    preset = preset.replace(**changes)
    data = load_dataset(preset.dataset, preset.data_root)  # once, outside the timings
    out = Path(args.out)
    times, tables = {}, {}
    for workers in args.workers:
        run_out = out / f"workers{workers}"
        shutil.rmtree(run_out, ignore_errors=True)
        t0 = time.perf_counter()
        run_sweep(preset, run_out, data=data, workers=workers, threads_per_run=1, log=lambda line: None,
                  progress=False)
        times[workers] = time.perf_counter() - t0
        tables[workers] = (run_out / "table.csv").read_text()
        print(f"{workers} worker(s): {times[workers]:.1f} s", file=sys.stderr, flush=True)

    ref = args.workers[0]
    runs = len(preset.methods) * len(preset.seeds)
    print(f"`python benchmarks/sweep_scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"))
    print(f"preset {preset.name}: {runs} runs ({', '.join(preset.methods)}; seeds {list(preset.seeds)}), "
          f"train fraction {preset.train_fraction}, 1 thread per run")
    print(f"machine: {machine_description()}")
    print(f"versions: {versions_text(environment_versions())}")
    print(f"CPU path: {cpu_path_text(cpu_path())}")
    print()
    print(f"{'workers':>7}  {'wall s':>8}  {'speed-up':>8}  same table")
    for workers in args.workers:
        same = "yes" if tables[workers] == tables[ref] else "NO"
        print(f"{workers:>7}  {times[workers]:>8.1f}  {times[ref] / times[workers]:>7.2f}x  {same}")
    if 2 in times and ref == 1:
        ratio = times[1] / times[2]
        status = "PASS" if ratio >= TARGET_SPEEDUP else "MISS"
        print(f"\n2 workers vs 1: {ratio:.2f}x (target >= {TARGET_SPEEDUP}x on 2 cores): {status}")
    return 0 if all(t == tables[ref] for t in tables.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
