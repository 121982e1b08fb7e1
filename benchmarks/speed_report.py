"""Tables, CSV and profiles of ``benchmarks/speed.py`` (kept apart so that script stays short).

Every number is computed from timings of one run: medians over the
repetitions, ratios and overheads paired within each repetition.
"""

from __future__ import annotations

import cProfile
import csv
import io
import pstats
import statistics
from pathlib import Path
from typing import Callable

import torch

TRAIN_PHASES = ("plain", "naive", "sst", "msl", "aod")
EVAL_PHASES = ("eval", "eval_small", "eval_plain")
PHASES = TRAIN_PHASES + EVAL_PHASES
#: (reference phase, maximal ratio) per phase; eval has an absolute target in seconds.
TARGETS = {"naive": ("plain", 1.05), "sst": ("naive", 1.05), "msl": ("naive", 1.5), "aod": ("naive", 4.2)}
#: Naive's framework overhead over the plain loop, per training iteration.
NAIVE_OVERHEAD_MS = 0.5
EVAL_TARGET_S = 2.0


def splice_into_doc(doc: Path, marker: str, body: str) -> None:
    """Replace the text between ``<!-- marker:start/end -->`` of ``doc`` with ``body`` (update_readme's rule)."""
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("update_readme", Path(__file__).resolve().parent.parent / "experiments" / "update_readme.py")
    update_readme = module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    doc.write_text(update_readme.splice(doc.read_text(), marker, body))


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def paired_ratio(times: dict, phase: str, ref: str) -> float:
    """Median over repetitions of ``phase / ref`` timed in the same repetition.

    Pairing cancels the slow drift of a shared machine's load, which a ratio
    of medians does not.
    """
    if phase not in times or ref not in times:
        return float("nan")
    return median([a / b for a, b in zip(times[phase], times[ref])])


def paired_overhead_ms(times: dict, phase: str, ref: str, iterations: int) -> float:
    """Median over repetitions of ``(phase - ref) / iterations`` in milliseconds (paired as the ratios)."""
    if phase not in times or ref not in times or not iterations:
        return float("nan")
    return median([(a - b) / iterations * 1e3 for a, b in zip(times[phase], times[ref])])


def make_rows(times: dict, cpu_times: dict, n_train: int, n_test: int, clock: str = "wall",
              train_iterations: int = 0, eval_iterations: int = 0) -> list[dict]:
    """One row per phase: wall-clock and CPU medians; ratios, overheads and targets on ``clock`` time.

    ``ms_per_it``: the phase's extra time over the plain loop per training
    iteration (``eval``: per evaluation batch over ``eval_plain``, same batch
    size; ``eval_small`` batches differently, so it has none).
    """
    wall = {k: median(v) for k, v in times.items()}
    cpu = {k: median(v) for k, v in cpu_times.items()}
    ref_times = cpu_times if clock == "cpu" else times
    rows = []
    for phase in PHASES:
        if phase not in wall:
            continue
        evaluation = phase in EVAL_PHASES
        n = n_test if evaluation else n_train
        row = {"phase": phase, "samples_per_s": n / wall[phase], "seconds_per_epoch": wall[phase],
               "cpu_seconds": cpu.get(phase, float("nan")),
               "vs_plain": paired_ratio(ref_times, phase, "eval_plain" if evaluation else "plain"),
               "vs_naive": float("nan") if evaluation else paired_ratio(ref_times, phase, "naive"),
               "ms_per_it": (paired_overhead_ms(ref_times, phase, "plain", train_iterations) if not evaluation
                             else paired_overhead_ms(ref_times, phase, "eval_plain", eval_iterations)
                             if phase == "eval" else float("nan")),
               "target": "", "status": "", "runs": len(times[phase])}
        if phase in TARGETS and TARGETS[phase][0] in wall:
            ref, limit = TARGETS[phase]
            row["target"] = f"<= {limit:.2f}x {ref}"
            ok = row[f"vs_{ref}"] <= limit
            if phase == "naive":
                row["target"] += f", +{NAIVE_OVERHEAD_MS} ms/it"
                ok = ok and row["ms_per_it"] <= NAIVE_OVERHEAD_MS
            row["status"] = "PASS" if ok else "MISS"
        elif phase in ("eval", "eval_small"):
            seconds = cpu[phase] if clock == "cpu" else wall[phase]
            row["target"] = f"< {EVAL_TARGET_S:.0f} s"
            row["status"] = "PASS" if seconds < EVAL_TARGET_S else "MISS"
        elif phase == "plain":
            row["status"] = "ref"
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'phase':<11} {'samples/s':>10} {'s/epoch':>9} {'cpu s':>8} {'x plain':>8} {'x naive':>8} "
            f"{'ms/it+':>7}  {'target':<29} status")
    lines = [head, "-" * len(head)]

    def ratio(v):
        return "-" if v != v else f"{v:.3f}"  # NaN -> "-"

    for r in rows:
        lines.append(f"{r['phase']:<11} {r['samples_per_s']:>10.1f} {r['seconds_per_epoch']:>9.3f} "
                     f"{r['cpu_seconds']:>8.3f} "
                     f"{ratio(r['vs_plain']):>8} {ratio(r['vs_naive']):>8} "
                     f"{'-' if r['ms_per_it'] != r['ms_per_it'] else format(r['ms_per_it'], '+.2f'):>7}  "
                     f"{r['target']:<29} {r['status']}")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict], info: dict, args) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"device": args.device, "model": args.model, "data": args.data, "clock": args.clock, "channels_last": int(args.channels_last), "bf16": int(args.bf16),
             "train_samples": args.n_train, "test_samples": args.n_test, "batch_size": args.batch_size,
             "eval_batch_size": args.eval_batch_size, "flush_denormal": int(args.flush_denormal),
             "keep_freed_memory": int(args.keep_freed_memory), "threads_arg": args.threads,
             **info}
    fields = ["phase", "samples_per_s", "seconds_per_epoch", "cpu_seconds", "vs_plain", "vs_naive", "ms_per_it",
              "target", "status", "runs",
              *extra]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}, **extra})


def profile_ops(name: str, run: Callable[[], object], top: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, record_shapes=True) as prof:
        run()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=top, max_name_column_width=40,
                                                               max_shapes_column_width=60)
    return f"--- torch.profiler of one '{name}' epoch (ops by self time, grouped by input shapes) ---\n{table}"


def profile_epoch(name: str, run: Callable[[], object], top: int, sort: str = "tottime") -> str:
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats(sort).print_stats(top)
    order = "own time" if sort == "tottime" else "cumulative time"
    return f"--- cProfile of one '{name}' epoch (sorted by {order}) ---\n" + out.getvalue()


