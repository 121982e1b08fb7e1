"""Preflight of a preset before a long run: every phase of every method for a few iterations.

For every (table, method, variant) of a paper preset (or every method of a
sweep preset) :func:`preflight_runs` builds the real scenario, the real model
and the method's real strategy on the chosen device, runs each of its phases
for a few iterations, interrupts the run after its first step and resumes it
from the checkpoint, so a wrong shape, a device mismatch, a missing dataset or
an out-of-memory shows up in minutes instead of hours into the run.

How "a few iterations" is reached without touching any method: the preset is
shrunk (:func:`preflight_preset`). Its training data are subsampled so that
the largest step holds about ``iterations`` batches, the test data to about
one evaluation batch per test experience, and every epoch count of the preset
(its own fields and the ``*epoch*`` keys of ``method_kwargs``/``sst_kwargs``)
is scaled down together so the largest becomes ``max_epochs`` (at least 1
each, so epoch orderings such as M2KD's "train epochs exceed fine-tuning
epochs" are kept). Every phase still runs, each for about ``iterations``
batches per epoch. Scenario shapes (image size, class count, steps, heads)
are the real ones. Because every step keeps a few samples of every class (a
stratified split fails otherwise), a dataset of 100-200 classes still holds
dozens of small batches per step; :class:`IterationCap` ends each of
Avalanche's training epochs after ``iterations`` batches, so the preflight's
cost does not grow with the class count. The full-size benchmark (only its
step sizes are read) is built once per sweep, for the shrinking and the
forecast alike.

When the real dataset is absent, :func:`standin_data` gives generated images
of the dataset's exact shape, class count and split sizes; every line printed
about such a run says so.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from avalanche.core import SupervisedPlugin

from avalanche_sst.experiments.peak_memory import peak_memory, reset_peak_memory
from avalanche_sst.experiments.presets import Preset

#: (channels, height, width, classes, train images, test images) of each dataset the loaders know.
DATASET_SHAPES = {
    "fashion_mnist": (1, 28, 28, 10, 60000, 10000),
    "cifar10": (3, 32, 32, 10, 50000, 10000),
    "cifar100": (3, 32, 32, 100, 50000, 10000),
    "tiny_imagenet": (3, 64, 64, 200, 100000, 10000),
}
STANDIN_LABEL = "STAND-IN DATA (generated, real shapes)"
#: The preset fields that count epochs of a phase.
EPOCH_FIELDS = ("epochs_scratch", "epochs_finetune", "sst_epochs", "aod_epochs")


def standin_data(dataset: str, seed: int = 0):
    """``(train, test)`` of generated uint8 images with ``dataset``'s exact shape, classes and sizes.

    Labels cycle through the classes (balanced). The pixels are one random image
    per split expanded without copying (a Tiny ImageNet stand-in would otherwise
    hold 1.2 GB); subsampling materialises only what a run uses.
    """
    from avalanche_sst.benchmarks import TensorImageDataset

    if dataset not in DATASET_SHAPES:
        raise ValueError(f"no stand-in for dataset {dataset!r}; choose from {sorted(DATASET_SHAPES)}")
    c, h, w, classes, n_train, n_test = DATASET_SHAPES[dataset]
    gen = torch.Generator().manual_seed(seed)
    names = [f"class{k}" for k in range(classes)]

    def split(n: int) -> TensorImageDataset:
        image = torch.randint(0, 256, (1, c, h, w), dtype=torch.uint8, generator=gen)
        return TensorImageDataset(image.expand(n, c, h, w), torch.arange(n) % classes, names)

    return split(n_train), split(n_test)


def load_or_standin(preset: Preset, data=None):
    """``(data, label)``: the given or real dataset (label ``""``), else the stand-in (``STANDIN_LABEL``)."""
    if data is not None:
        return data, ""
    from avalanche_sst.benchmarks.datasets import DatasetNotFoundError
    from avalanche_sst.experiments.sweep import load_dataset

    try:
        return load_dataset(preset.dataset, preset.data_root), ""
    except (DatasetNotFoundError, FileNotFoundError):
        return standin_data(preset.dataset), STANDIN_LABEL


def _scaled(value, factor: float):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return max(1, round(value * factor))
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return type(value)(max(1, round(v * factor)) for v in value)
    return value


def _epoch_values(kwargs: dict) -> list[int]:
    out = []
    for key, value in kwargs.items():
        if "epoch" in key and not isinstance(value, bool):
            out += [value] if isinstance(value, int) else [v for v in value if isinstance(v, int)] \
                if isinstance(value, (tuple, list)) else []
    return out


def epoch_factor(preset: Preset, max_epochs: int) -> float:
    """The factor that brings the largest epoch count of ``preset`` down to ``max_epochs`` (at most 1)."""
    nested = [preset.sst_kwargs, *preset.method_kwargs.values()]
    values = [getattr(preset, f) for f in EPOCH_FIELDS] + [v for kw in nested for v in _epoch_values(kw)]
    return min(1.0, max_epochs / max(values))


def scale_epochs(preset: Preset, max_epochs: int) -> Preset:
    """Every epoch count of ``preset`` times one factor, so the largest is ``max_epochs`` (each >= 1)."""
    factor = epoch_factor(preset, max_epochs)

    def scale_dict(kwargs: dict) -> dict:
        return {k: (_scaled(v, factor) if "epoch" in k else v) for k, v in kwargs.items()}

    return preset.replace(**{f: _scaled(getattr(preset, f), factor) for f in EPOCH_FIELDS},
                          sst_kwargs=scale_dict(preset.sst_kwargs),
                          method_kwargs={m: scale_dict(kw) for m, kw in preset.method_kwargs.items()})


def scale_variant(method: str, factor_of: Callable[[int], int]) -> str:
    """A variant's ``*epoch*`` arguments scaled as the preset's (``edge_kt:epochs_student=60``)."""
    from avalanche_sst.experiments.methods import parse_variant

    base, kwargs = parse_variant(method)
    if not any("epoch" in k for k in kwargs):
        return method
    items = [f"{k}={factor_of(v) if 'epoch' in k and isinstance(v, int) else v!r}" for k, v in kwargs.items()]
    return base + ":" + ",".join(i.replace("'", "") for i in items)


def preflight_preset(preset: Preset, data, iterations: int = 2, batch: Optional[int] = None,
                     max_epochs: int = 2, device: Optional[str] = None, full=None) -> Preset:
    """``preset`` shrunk to about ``iterations`` batches per epoch and at most ``max_epochs`` per phase.

    ``data`` is the ``(train, test)`` the preset runs on (real or stand-in);
    its sizes and the scenario's largest step set the subsampling. ``full``:
    ``preset``'s benchmark on ``data`` for its first seed, if already built.
    """
    from avalanche_sst.experiments.sweep import build_benchmark

    if iterations < 1:
        raise ValueError(f"preflight iterations must be >= 1, got {iterations}")
    if batch is not None and batch < 1:
        raise ValueError(f"preflight batch must be >= 1, got {batch}")
    pre = scale_epochs(preset, max_epochs).replace(seeds=preset.seeds[:1], device=device or preset.device)
    if batch is not None:
        pre = pre.replace(batch_size=batch)
    pre = pre.replace(eval_batch_size=min(pre.eval_batch_size, max(pre.batch_size, 2)))
    full = full if full is not None else build_benchmark(pre, pre.seeds[0], data)
    largest = max(len(exp.dataset) for exp in full.train_stream)
    train, test = data
    classes = len(set(train.targets)) if hasattr(train, "targets") else 1
    # every class keeps a few samples in every step, or a stratified split comes out empty
    floor = min(1.0, classes * (2 * len(pre.ratios) + 2) / (len(train) * pre.train_fraction))
    train_fraction = pre.train_fraction * min(1.0, max(iterations * pre.batch_size / largest, floor))
    n_test_exps = len(full.test_stream)
    test_fraction = pre.test_fraction * min(1.0, max(pre.eval_batch_size * n_test_exps / len(test),
                                                     2 * classes / len(test)))
    return pre.replace(train_fraction=train_fraction, test_fraction=test_fraction)


class _Interrupt(Exception):
    """Raised by :class:`InterruptAfterFirstStep` to stop a run as a crash would."""


class InterruptAfterFirstStep(SupervisedPlugin):
    """Stops the run when its second training step starts (after step 1's checkpoint is written)."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.armed = True

    def before_training(self, strategy, *args, **kwargs):
        self.calls += 1
        if self.armed and self.calls == 2:
            raise _Interrupt("preflight: interrupted after step 1 to test the resume")


class _FirstBatches:
    """The first ``n`` batches of a data loader; every other attribute is the loader's."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return min(self.n, len(self.loader))

    def __getattr__(self, name):
        return getattr(self.loader, name)


class IterationCap(SupervisedPlugin):
    """Every training epoch ends after ``iterations`` batches; every epoch of every phase still runs.

    It hands Avalanche's ``training_epoch`` the first ``iterations`` batches
    of the epoch's data loader (rather than raising the early-stop flag, which
    a method's own early stop may share). Loops a method writes itself (not
    Avalanche's ``training_epoch``) are not capped.
    """

    propagate_to_phases = True  # the framework's and edge KT's phases are strategies of their own

    def __init__(self, iterations: int):
        super().__init__()
        self.iterations = iterations

    def before_training_epoch(self, strategy, *args, **kwargs):
        if not isinstance(strategy.dataloader, _FirstBatches):
            strategy.dataloader = _FirstBatches(strategy.dataloader, self.iterations)


class TrainingClock(SupervisedPlugin):
    """Wall seconds spent inside ``strategy.train`` (evaluation excluded), summed over steps."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.seconds = 0.0
        self.device = device
        self._t0: Optional[float] = None

    def _sync(self):
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.synchronize(self.device)

    def before_training(self, strategy, *args, **kwargs):
        self._sync()
        self._t0 = time.perf_counter()

    def after_training(self, strategy, *args, **kwargs):
        self._sync()
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
        self._t0 = None


def run_with_resume(preset: Preset, method: str, benchmark, out: Path, plugins=(), log=lambda s: None):
    """``run_one`` interrupted when its second step starts, then resumed from the checkpoint.

    A one-step run is finished, then its ``done.json`` removed and the run started again:
    it restores everything from the last checkpoint (model, method state, clock) and has
    no step left to train. Returns the ``RunResult``.
    """
    from avalanche_sst.experiments.sweep import _run_dir, run_one

    interrupt = InterruptAfterFirstStep()
    try:
        run_one(preset, method, preset.seeds[0], benchmark, out, [interrupt, *plugins], log)
        (_run_dir(out, method, preset.seeds[0]) / "done.json").unlink()
    except _Interrupt:
        pass
    interrupt.armed = False
    return run_one(preset, method, preset.seeds[0], benchmark, out, [interrupt, *plugins], log)


@dataclass
class PreflightResult:
    table: str
    sweep: str
    method: str
    ok: bool
    sample_passes: float = 0.0  # measured by the run's CostMeter, all steps
    train_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    memory_kind: str = ""  # "cuda max allocated", "run peak RSS" or "process peak RSS" (not resettable)
    steps: int = 0
    error: str = ""
    command: str = ""
    data_label: str = ""
    batch_size: int = 0

    @property
    def seconds_per_sample_pass(self) -> Optional[float]:
        return self.train_seconds / self.sample_passes if self.sample_passes > 0 else None


def preflight_run(preset: Preset, method: str, data, out: Path, data_label: str = "",
                  log: Callable[[str], None] = print, iterations: Optional[int] = None) -> PreflightResult:
    """One method of a (preflight-shrunk) preset: step 1, an interruption, a resume to the last step;
    with ``iterations``, every training epoch stops after that many batches (:class:`IterationCap`)."""
    from avalanche_sst.experiments.sweep import build_benchmark

    device = torch.device(preset.device)
    seed = preset.seeds[0]
    result = PreflightResult("", "", method, ok=False, data_label=data_label, batch_size=preset.batch_size)
    reset = reset_peak_memory(device)
    benchmark = build_benchmark(preset, seed, data)
    clock = TrainingClock(device)
    cap = [IterationCap(iterations)] if iterations is not None else []
    done = run_with_resume(preset, method, benchmark, out, [*cap, clock], log)
    result.ok = True
    result.sample_passes = float(sum(done.costs))
    result.steps = len(done.accuracies)
    result.train_seconds = clock.seconds
    result.peak_memory_mb, result.memory_kind = peak_memory(device, reset)
    return result


def paper_sweeps(table_id: str, preset_name: str, preset_changes: Optional[dict] = None) -> list:
    """``[(sweep folder, preset with its methods)]`` of a paper table; Fig. 3 trains the framework (``sst``)."""
    from avalanche_sst.experiments.paper.specs import TABLES, sweep_dirname, sweep_groups

    spec = TABLES[table_id]
    preset = spec.preset(preset_name)
    if preset_changes:
        preset = preset.replace(**preset_changes)
    groups = sweep_groups(spec, preset_name) if spec.kind != "fig3" else {(): ("sst",)}
    return [(sweep_dirname(o), preset.replace(methods=m, **dict(o))) for o, m in groups.items()]


def preflight_device(device: Optional[str], presets) -> tuple[Optional[str], str]:
    """``(device, note)``: the device the preflight runs on, and the note every line carries when it is
    not the presets' own. A preset meant for a GPU (the paper presets) is checked on the CPU where no GPU
    is visible, so that a machine without one still finds shape, device-mixing and resume errors."""
    if device is not None:
        return device, ""
    wanted = sorted({str(p.device) for p in presets})
    if any(torch.device(w).type == "cuda" for w in wanted) and not torch.cuda.is_available():
        return "cpu", f"ON CPU (presets' {', '.join(wanted)} not available here; --device cuda on a GPU machine)"
    return None, ""


def preflight_sweep(name: str, sweep: str, preset: Preset, data, out: Path, iterations: int = 2,
                    batch: Optional[int] = None, device: Optional[str] = None, command: str = "",
                    log: Callable[[str], None] = print, label: str = "", full=None,
                    record: Callable[[PreflightResult], None] = lambda r: None) -> list:
    """:func:`preflight_run` for every method of one sweep on its ``data``; errors are collected, not raised.
    ``full``: the sweep's full-size benchmark, if already built; ``record`` is called with each result."""
    results = []
    shutil.rmtree(out / name / sweep, ignore_errors=True)  # a preflight always runs, never reuses
    for method in preset.methods:
        try:
            pre = preflight_preset(preset, data, iterations, batch, device=device, full=full)
            factor = epoch_factor(preset, 2)
            run_method = scale_variant(method, lambda v: max(1, round(v * factor)))
            r = preflight_run(pre, run_method, data, out / name / sweep, label, log=lambda s: None,
                              iterations=iterations)
        except Exception as err:  # collected: one broken run must not hide the others
            r = PreflightResult(name, sweep, method, ok=False, data_label=label,
                                error=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-4)}")
        r.table, r.sweep, r.method, r.command = name, sweep, method, command
        results.append(r)
        record(r)
        log(run_line(r))
    return results


def run_preflight(sweeps_by_name: dict, out: Path, iterations: int = 2, batch: Optional[int] = None,
                  device: Optional[str] = None, workers: Optional[int] = None, gpus_per_run: float = 0.0,
                  command: str = "", data=None, log: Callable[[str], None] = print, run: bool = True) -> list:
    """Preflight every ``{name: [(sweep, preset)]}``, then write ``<out>/preflight.md`` (the forecast)
    and ``preflight.json``; prints the failures, each with its command, at the end. Returns the results.

    ``run=False`` (``--forecast-only``): no run, the forecast's sample-passes and H100 estimate only.
    Each sweep's data are loaded, and its full-size benchmark built, once for its preflight and forecast.
    ``preflight.json`` is rewritten after every run, so a preflight stopped midway keeps what it found.
    """
    from avalanche_sst.experiments import forecast as F
    from avalanche_sst.experiments.sweep import build_benchmark, build_model

    out = Path(out)
    results, full, h100, seeds = [], {}, {}, {}
    device, device_note = preflight_device(device, [p for sweeps in sweeps_by_name.values() for _, p in sweeps])

    def record(result: PreflightResult) -> None:
        results.append(result)
        write_results_json(results, out / "preflight.json")

    for stale in ("preflight.md", "preflight.json"):  # an earlier preflight's, which a stopped one would leave
        (out / stale).unlink(missing_ok=True)

    for name, sweeps in sweeps_by_name.items():
        for sweep, preset in sweeps:
            seeds[name] = len(preset.seeds)
            sweep_data, label = load_or_standin(preset, data)
            bench = None
            try:
                bench = build_benchmark(preset, preset.seeds[0], sweep_data)
                train, valid = F.step_sizes(bench)
                model = build_model(preset, bench, preset.seeds[0])
                shape = tuple(bench.test_stream[0].dataset[0][0].shape)
                flops, ops = F.model_flops_and_ops(model, shape)
                h100[name, sweep] = F.h100_seconds_per_sample_pass(flops, ops, preset.batch_size)
                for method in preset.methods:
                    full[name, sweep, method] = F.run_sample_passes(method, preset, train, valid)
            except Exception as err:  # the forecast of a sweep that cannot even be built: its preflight says why
                log(f"[forecast {name}/{sweep}] not computed: {type(err).__name__}: {err}")
            if run:
                label = " | ".join(part for part in (label, device_note) if part)
                preflight_sweep(name, sweep, preset, sweep_data, out / "preflight", iterations, batch, device,
                                command, log, label, full=bench, record=record)
    rows = F.forecast_rows(results, full, h100, seeds)
    used = device or next(iter(next(iter(sweeps_by_name.values()))))[1].device
    w = workers or 1
    gpr = gpus_per_run if gpus_per_run > 0 else 1.0
    text = F.forecast_markdown(rows, F.table_totals(rows, w, gpr), str(used), w, gpr, command)
    if run:
        text += "\nRuns:\n\n" + "".join(f"- `{run_line(r)}`\n" for r in results)
    text += "\n" + (failures_text(results) if run else "Forecast only: nothing was run.") + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "preflight.md").write_text(text)
    write_results_json(results, out / "preflight.json")
    log(text)
    return results


def run_line(r: PreflightResult) -> str:
    """One run's preflight outcome, as printed and as listed in ``preflight.md``."""
    tag = f"[preflight {r.table}/{r.sweep} {r.method}{' | ' + r.data_label if r.data_label else ''}]"
    if not r.ok:
        return f"{tag} FAILED: {r.error.splitlines()[0] if r.error else ''}"
    return (f"{tag} passed: {r.steps} steps, checkpoint resumed, {r.sample_passes:.0f} sample-passes in "
            f"{r.train_seconds:.1f} s, peak {r.peak_memory_mb:.0f} MB ({r.memory_kind}), batch {r.batch_size}")


def read_results_json(path: Path) -> list:
    """The results :func:`write_results_json` wrote."""
    from dataclasses import fields

    known = {f.name for f in fields(PreflightResult)}  # files from older versions may hold more
    return [PreflightResult(**{k: v for k, v in d.items() if k in known}) for d in json.loads(Path(path).read_text())]


def failures_text(results: list) -> str:
    """Every failed run with its error and the command that reproduces it, for the end of the output."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return f"preflight: all {len(results)} runs passed."
    lines = [f"preflight: {len(failed)} of {len(results)} runs FAILED:"]
    for r in failed:
        lines += [f"- {r.table}/{r.sweep} {r.method}{' (' + r.data_label + ')' if r.data_label else ''}",
                  f"  reproduce: {r.command}", *("  " + s for s in r.error.rstrip().splitlines())]
    return "\n".join(lines)


def add_preflight_arguments(parser) -> None:
    """``--preflight``, ``--preflight-iterations``, ``--preflight-batch`` for a sweep command."""
    group = parser.add_argument_group("preflight (every phase of every run for a few iterations, then a forecast)")
    group.add_argument("--preflight", action="store_true",
                       help="run every method's phases for a few iterations, one checkpoint and resume, and "
                            "write <out>/preflight.md with the forecast of the full runs; trains nothing else")
    group.add_argument("--preflight-iterations", type=_positive_int, default=2,
                       help="batches per epoch in the preflight (default 2)")
    group.add_argument("--forecast-only", action="store_true",
                       help="with --preflight: run nothing, write the forecast's sample-passes and H100 estimate")
    group.add_argument("--preflight-batch", type=_positive_int, default=None,
                       help="batch size of the preflight (default: the preset's); smaller for big models on a CPU")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def write_results_json(results: list, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{**r.__dict__} for r in results], indent=1, default=str))
