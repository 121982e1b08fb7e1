"""Training and evaluation speed of each phase against a plain PyTorch loop.

One process times, on the default model (CIFAR ResNet-8, width 16) and a
fixed stratified subset of Fashion-MNIST (batch 128, SGD lr 0.1, momentum
0.9, weight decay 5e-4, as the ``full`` preset):

* ``plain``: a plain PyTorch loop (DataLoader over the same uint8 images with
  the same ``BatchCollate``, the same model, SGD and cross-entropy);
* ``naive``: Avalanche ``Naive`` on the same experience (``make_evaluator()``:
  accuracy and loss metrics, no loggers);
* ``sst``: the same ``SupervisedTemplate`` plus ``SSTPlugin``;
* ``msl``: ``SupervisedTemplate`` + ``MSLPlugin(update_teacher=True)`` (with
  the experience's validation slice) + ``SSTPlugin``, as the real phase;
* ``aod``: one epoch of ``AODStrategy`` (two students, two views);
* ``eval``: ``strategy.eval(test_stream)`` over the whole 10k test set with
  ``eval_mb_size`` 1000; ``eval_small``: the same with a cache-sized
  ``eval_mb_size`` (128); ``eval_plain``: a plain ``torch.no_grad`` loop.

Every training phase gets its own model (same initialisation) and runs one
epoch per repetition; the phases are interleaved per repetition (in a
rotating order) so that the noise of a shared machine spreads over all of
them; the first repetition is a warm-up and is not timed. Seconds are
medians over the repetitions; ratios are medians of the ratios taken within
each repetition (which cancels slow drifts of the machine's load). An epoch
of an Avalanche strategy is timed around ``_train_exp`` (every epoch
callback included; dataloader creation, AOD's student set-up and selection,
i.e. per-experience work, excluded). On a CPU that other processes already
keep busy, ``--threads auto`` (the default) uses one thread: there,
multi-threaded ops stall waiting for a descheduled thread.

``--model`` takes any name ``build_model`` knows (the flattening ``mlp-*``
get the image size; SST, MSL and AOD need BatchNorm: give an MLP ``--phases
plain naive eval eval_plain``); ``--data generated:CxHxW`` times on random
images of that shape (e.g. ResNet-32 on ``generated:3x32x32`` with ``--device
cuda``). The ``ms/it+`` column is each phase's time over the plain loop per
training iteration (``eval``: per evaluation batch over ``eval_plain``).

Usage::

    python benchmarks/speed.py [--device cpu|cuda] [--model NAME] [--data fashion-mnist|generated:CxHxW]
                               [--epochs N] [--train-samples N]
                               [--csv PATH] [--channels-last] [--bf16] [--threads N|auto]
                               [--profile [PHASE ...]] [--profile-ops]
    python benchmarks/speed.py --suite m2kd|ada_qpacknet|edge [that suite's options]

The table goes to stdout and to ``benchmarks/results/speed_<device>[_<model>][_<data>].csv``
(and ``.md``; the model and data only where they are not the defaults).

``--suite`` runs another method's rows instead of these: ``m2kd`` (M2KD's
epoch against Naive with 1, 2 and 4 snapshot teachers, and its memory
against iCaRL's exemplars), ``ada_qpacknet`` or ``edge``; every other option
goes to that suite's own ``main`` (``benchmarks/speed_<suite>.py``, whose
docstring lists them), e.g. ``--suite m2kd --reps 3 --samples 2048``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

_QUIET = ("reset_optimizer", "No loggers specified", "named (keyword) arguments only")
_showwarning = warnings.showwarning


def _showwarning_quiet(message, *args, **kwargs):
    # Avalanche re-enables its deprecation warnings itself, so filters do not hold them.
    if not any(q in str(message) for q in _QUIET):
        _showwarning(message, *args, **kwargs)


warnings.showwarning = _showwarning_quiet

from avalanche.training import Naive  # noqa: E402
from avalanche.training.templates import SupervisedTemplate  # noqa: E402

from avalanche_sst.benchmarks import BatchCollate, TensorImageDataset  # noqa: E402
from avalanche_sst.metrics import make_evaluator  # noqa: E402
from avalanche_sst.models import build_model  # noqa: E402
from avalanche_sst.plugins.msl import MSLPlugin  # noqa: E402
from avalanche_sst.experiments.presets import Preset  # noqa: E402
from avalanche_sst.experiments.tables import machine_description  # noqa: E402
from avalanche_sst.cpu_path import UnsafeCpuPathError, check_channels_last_safe  # noqa: E402
from avalanche_sst.plugins.precision import AutocastPlugin, ChannelsLastPlugin, keep_freed_memory  # noqa: E402
from avalanche_sst.plugins.sst import SSTPlugin  # noqa: E402
from avalanche_sst.strategies.aod import AODStrategy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # speed_report, next to this file
from speed_report import PHASES, format_table, make_rows, median, profile_epoch, profile_ops, write_csv  # noqa: E402
from speed_setup import load_average, load_data, machine_info, materialize  # noqa: E402


# --- set-up ---------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Span:
    """Wall-clock and process CPU seconds of a block (the device synchronised at both ends)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.wall = self.cpu = float("nan")

    def __enter__(self):
        sync(self.device)
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        return False

    @property
    def both(self) -> tuple[float, float]:
        return self.wall, self.cpu


class Options:
    def __init__(self, args, device):
        self.device = device
        self.channels_last = args.channels_last
        self.bf16 = args.bf16
        self.batch_size = args.batch_size
        self.eval_batch_size = args.eval_batch_size
        self.lr, self.momentum, self.weight_decay = 0.1, 0.9, 5e-4

    def plugins(self) -> list:
        out = []
        if self.channels_last:
            out.append(ChannelsLastPlugin())
        if self.bf16:
            out.append(AutocastPlugin(torch.bfloat16))
        return out

    def autocast(self):
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def prepare_input(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model):
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def sgd(self, model):
        return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)


# --- the phases -----------------------------------------------------------------


class PlainLoop:
    """The reference: a plain PyTorch training loop and a plain eval loop."""

    def __init__(self, model, train_data: TensorImageDataset, collate: BatchCollate, opts: Options):
        self.opts = opts
        self.model = opts.prepare_model(model.to(opts.device))
        self.optimizer = opts.sgd(self.model)
        self.criterion = nn.CrossEntropyLoss()
        self.loader = DataLoader(train_data, batch_size=opts.batch_size, shuffle=True, collate_fn=collate,
                                 pin_memory=opts.device.type == "cuda")

    def epoch(self) -> tuple[float, float]:
        opts, model = self.opts, self.model
        model.train()
        span = Span(opts.device).__enter__()
        for x, y in self.loader:
            x = opts.prepare_input(x.to(opts.device, non_blocking=True))
            y = y.to(opts.device, non_blocking=True)
            self.optimizer.zero_grad()
            with opts.autocast():
                out = model(x)
            loss = self.criterion(out.float(), y)
            loss.backward()
            self.optimizer.step()
        span.__exit__()
        return span.both


def plain_eval(model, test_data: TensorImageDataset, collate: BatchCollate, opts: Options):
    """(wall, CPU) seconds of one no_grad pass over ``test_data``, and the accuracy."""
    was_training = model.training
    model.to(opts.device).eval()
    loader = DataLoader(test_data, batch_size=opts.eval_batch_size, shuffle=False, collate_fn=collate,
                        pin_memory=opts.device.type == "cuda")
    span = Span(opts.device).__enter__()
    correct = torch.zeros((), dtype=torch.long, device=opts.device)
    with torch.no_grad():
        for x, y in loader:
            x = opts.prepare_input(x.to(opts.device, non_blocking=True))
            y = y.to(opts.device, non_blocking=True)
            with opts.autocast():
                out = model(x)
            correct += (out.argmax(dim=1) == y).sum()
    acc = correct.item() / len(test_data)
    span.__exit__()
    model.train(was_training)
    return span.both, acc


def time_train_exp(strategy, device: torch.device) -> list[tuple[float, float]]:
    """Wrap ``strategy._train_exp`` (all epochs of one experience) with a timer: (wall, CPU) seconds."""
    times: list[tuple[float, float]] = []
    inner = strategy._train_exp

    def timed(*args, **kwargs):
        with Span(device) as span:
            inner(*args, **kwargs)
        times.append(span.both)

    strategy._train_exp = timed
    return times


def build_strategies(model_fn: Callable[[], nn.Module], benchmark, opts: Options, phases=("naive",)) -> dict:
    """The strategies of ``phases`` (Naive always: eval runs on it); SST's need BatchNorm, an MLP has none."""
    common = dict(criterion=nn.CrossEntropyLoss(), train_mb_size=opts.batch_size, train_epochs=1,
                  eval_mb_size=opts.eval_batch_size, device=opts.device, eval_every=-1)

    def template(cls=SupervisedTemplate, plugins=(), **kwargs):
        model = model_fn()
        return cls(model=model, optimizer=opts.sgd(model), evaluator=make_evaluator(),
                   plugins=[*opts.plugins(), *plugins], **common, **kwargs)

    factories = {
        "naive": lambda: template(Naive),
        "sst": lambda: template(plugins=[SSTPlugin()]),
        "msl": lambda: template(plugins=[MSLPlugin(update_teacher=True, valid_stream=benchmark.valid_stream),
                                         SSTPlugin()]),
        "aod": lambda: template(AODStrategy, valid_stream=benchmark.valid_stream, eval_students=False),
    }
    return {name: make() for name, make in factories.items() if name == "naive" or name in phases}


# --- main -----------------------------------------------------------------------


SUITES = ("core", "m2kd", "ada_qpacknet", "edge", "methods")


def default_result_name(args, device: torch.device) -> str:
    """``speed_<device>.csv`` for the default model and data, else with the model and data in the name."""
    suffix = "" if args.model == "resnet8" else f"_{args.model}"
    if args.data != "fashion-mnist":
        suffix += "_" + args.data.replace(":", "-")
    return f"speed_{device.type}{suffix}.csv"


def run_suite(name: str, argv) -> int:
    """``benchmarks/speed_<name>.py``'s ``main(argv)`` (loaded from its file: ``benchmarks`` is no package)."""
    import importlib.util

    path = Path(__file__).resolve().parent / f"speed_{name}.py"
    spec = importlib.util.spec_from_file_location(f"speed_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its spawned workers pickle functions by module name
    spec.loader.exec_module(module)
    return module.main(list(argv)) or 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--suite", choices=SUITES, default="core")
    suite, argv = pre.parse_known_args(argv)
    if suite.suite != "core":
        return run_suite(suite.suite, argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=SUITES, default="core",
                   help="core: these phases (default); m2kd, ada_qpacknet, edge: benchmarks/speed_<suite>.py's rows, "
                        "the other options going to that script")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs per phase, after one warm-up (default 5)")
    p.add_argument("--train-samples", type=int, default=4000,
                   help="stratified Fashion-MNIST training subset; 10%% of it is the validation slice (default 4000)")
    p.add_argument("--test-samples", type=int, default=0, help="evaluate on this many test samples (0: all 10k)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--small-eval-batch-size", type=int, default=128,
                   help="the eval_small row: strategy.eval with this eval_mb_size (0: no such row)")
    p.add_argument("--model", default="resnet8",
                   help="any name build_model takes (resnet8, resnet8-w4, resnet32, mlp-400-400, cnn-8-16, ...)")
    p.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist (default) or generated:CxHxW, random uint8 images of 10 classes (e.g. "
                        "generated:3x32x32, the CIFAR shape, for --device cuda where no CIFAR copy is at hand)")
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time the ratios and targets use: wall-clock (default) or this process's CPU time, "
                        "which on a shared machine leaves out the time other processes held the cores")
    p.add_argument("--csv", default=None, help="default benchmarks/results/speed_<device>.csv")
    p.add_argument("--channels-last", action="store_true", help="channels-last model and inputs (ChannelsLastPlugin)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast of the forward pass (AutocastPlugin)")
    p.add_argument("--threads", default="auto",
                   help="torch.set_num_threads: a number, 0 for torch's default, or 'auto' (default): torch's "
                        "default, but 1 when other processes already keep every core busy (load average >= "
                        "cores), where multi-threaded ops stall waiting for a descheduled thread")
    defaults = Preset()
    p.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction,
                   default=getattr(defaults, "flush_denormal", True),
                   help="torch.set_flush_denormal (default: the presets' setting)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction,
                   default=getattr(defaults, "keep_freed_memory", False),
                   help="glibc keeps large freed blocks instead of unmapping them (keep_freed_memory(); "
                        "default: the presets' setting, if they have one)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--profile", nargs="*", default=None, choices=PHASES,
                   help="after timing, cProfile one more epoch of these phases (all if none named)")
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--profile-sort", choices=("tottime", "cumulative"), default="tottime",
                   help="cProfile order: own time (default) or cumulative (which call, with what it calls, costs what)")
    p.add_argument("--profile-ops", action="store_true", help="--profile with torch.profiler (ops) instead of cProfile")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch.cuda.is_available() is False")
    if args.channels_last and device.type == "cpu":
        try:  # before any work: on a crashing CPU path the first channels-last backward kills Python
            check_channels_last_safe("--channels-last")
        except UnsafeCpuPathError as e:
            p.error(str(e))
    threads_note = ""
    if args.threads == "auto":
        load = load_average()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if load is not None and device.type == "cpu" and load >= cores and torch.get_num_threads() > 1:
            torch.set_num_threads(1)
            threads_note = f" (auto: load average {load:.1f} >= {cores} cores, so 1 thread; --threads 0 for torch's default)"
    elif int(args.threads):
        torch.set_num_threads(int(args.threads))
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    if args.keep_freed_memory and not keep_freed_memory(True):
        print("note: --keep-freed-memory has no effect here (not glibc)")
    phases = [ph for ph in PHASES if ph in args.phases]
    if "naive" not in phases and ({"sst", "msl", "aod"} & set(phases)):  # their reference
        phases.insert(phases.index("plain") + 1 if "plain" in phases else 0, "naive")
    t_start = time.perf_counter()

    info = machine_info(device)
    print(f"machine: {info['cpu']}, {info['cores']} cores available; torch {info['torch']}, "
          f"{info['threads']} threads{threads_note}; python {info['python']}"
          + (f"; GPU {info['gpu']}" if "gpu" in info else ""))
    load = load_average()
    if load is not None and device.type == "cpu" and load > 0.5:
        print(f"note: load average {load:.1f} on {info['cores']} cores before the run: other processes share the "
              "CPU, so absolute timings are pessimistic and noisy; the ratios are measured in the same run")
    benchmark, _ = load_data(args.train_samples, 0.1, args.data_root, args.data, args.test_samples)
    exp = benchmark.train_stream[0]
    train_plain = materialize(exp.dataset)
    collate = exp.dataset.collate_fn
    eval_collate = BatchCollate(collate.mean, collate.std, augment=False)
    test_stream = benchmark.test_stream
    test_plain = materialize(test_stream[0].dataset)
    if args.test_samples:
        test_plain = TensorImageDataset(test_plain.images[: args.test_samples],
                                        test_plain.targets[: args.test_samples])
        from avalanche.benchmarks.scenarios import benchmark_from_datasets, with_task_labels
        from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_classification_dataset

        data = _make_taskaware_classification_dataset(test_plain, task_labels=0, targets=test_plain.targets,
                                                      collate_fn=eval_collate)
        test_stream = with_task_labels(benchmark_from_datasets(test=[data])).test_stream
    args.n_train, args.n_test = len(train_plain), len(test_plain)
    opts = Options(args, device)
    print(f"model {args.model}, data {args.data}, {args.n_train} training samples (+{len(benchmark.valid_stream[0].dataset)} "
          f"validation), {args.n_test} test samples, batch {args.batch_size}, eval batch {args.eval_batch_size}, "
          f"device {device}, channels_last={args.channels_last}, bf16={args.bf16}, "
          f"flush_denormal={args.flush_denormal}, keep_freed_memory={args.keep_freed_memory}")

    in_channels = int(train_plain.images.shape[1])

    def model_fn():
        torch.manual_seed(0)
        return build_model(args.model, num_classes=benchmark.num_classes, in_channels=in_channels,
                           image_size=int(train_plain.images.shape[-1]))

    times: dict[str, list[float]] = {ph: [] for ph in phases}  # wall-clock seconds per repetition
    cpu_times: dict[str, list[float]] = {ph: [] for ph in phases}  # process CPU seconds
    runners: dict[str, Callable[[], tuple[float, float]]] = {}
    if "plain" in phases:
        plain = PlainLoop(model_fn(), train_plain, collate, opts)
        runners["plain"] = plain.epoch
    strategies = build_strategies(model_fn, benchmark, opts, phases)
    epoch_times = {}
    for name in ("naive", "sst", "msl", "aod"):
        if name in phases:
            strat = strategies[name]
            epoch_times[name] = time_train_exp(strat, device)

            def run(strat=strat, name=name):
                torch.manual_seed(len(epoch_times[name]))
                strat.train(exp, eval_streams=[])
                return epoch_times[name][-1]

            runners[name] = run
    naive = strategies["naive"]
    if {"eval", "eval_small"} & set(phases):
        def run_eval():
            with Span(device) as span:
                naive.eval(test_stream)
            return span.both

        if "eval" in phases:
            runners["eval"] = run_eval
    if "eval_small" in phases and args.small_eval_batch_size:
        def run_eval_small():
            big = naive.eval_mb_size
            naive.eval_mb_size = args.small_eval_batch_size
            try:
                return run_eval()
            finally:
                naive.eval_mb_size = big

        runners["eval_small"] = run_eval_small
    if "eval_plain" in phases:
        runners["eval_plain"] = lambda: plain_eval(naive.model, test_plain, eval_collate, opts)[0]

    order = [ph for ph in phases if ph in runners]
    for rep in range(args.epochs + 1):
        k = rep % len(order)
        for ph in order[k:] + order[:k]:  # rotate, so no phase always runs right after the same one
            wall, cpu = runners[ph]()
            if rep > 0:
                times[ph].append(wall)
                cpu_times[ph].append(cpu)
        label = "warm-up" if rep == 0 else f"repetition {rep}/{args.epochs}"
        print(f"  {label}: " + ", ".join(f"{ph} {times[ph][-1]:.2f}s" if rep else ph for ph in order)
              + (f"  (CPU: {', '.join(f'{cpu_times[ph][-1]:.2f}' for ph in order)})" if rep else ""), flush=True)

    iters = -(-args.n_train // args.batch_size)
    rows = make_rows({k: v for k, v in times.items() if v}, {k: v for k, v in cpu_times.items() if v},
                     args.n_train, args.n_test, args.clock, train_iterations=iters,
                     eval_iterations=-(-args.n_test // args.eval_batch_size))
    print()
    print(format_table(rows))
    print(f"(s/epoch: wall-clock median of {args.epochs} epochs after a warm-up; cpu s: the same in process CPU "
          f"seconds, which leave out the time other processes held the cores; x plain, x naive: median of the "
          f"ratios within each repetition, on {args.clock} time, as the targets; ms/it+: the phase's time minus the "
          f"plain loop's per training iteration of {args.batch_size} ({iters} per epoch), in milliseconds, median "
          f"within repetitions, on {args.clock} time (eval: per batch of {args.eval_batch_size}, minus eval_plain); "
          f"eval rows: seconds per pass over the "
          f"{args.n_test} test samples; eval = strategy.eval, eval_mb_size {args.eval_batch_size}; "
          f"eval_small = the same with eval_mb_size {args.small_eval_batch_size}; eval_plain = a plain no_grad "
          f"loop, batch {args.eval_batch_size}; x plain of the eval rows is relative to eval_plain)")
    if times.get("plain") and times.get("naive"):
        for name, t in (("wall", times), ("CPU", cpu_times)):
            extra = median([a - b for a, b in zip(t["naive"], t["plain"])])
            print(f"Avalanche Naive minus plain loop ({name} time, median within repetitions): {extra:+.3f} s/epoch, "
                  f"{extra / iters * 1e3:+.2f} ms per iteration ({iters} iterations of {args.batch_size}, "
                  f"{median(t['plain']) / iters * 1e3:.1f} ms each in the plain loop)")
    csv_path = Path(args.csv) if args.csv else REPO / "benchmarks" / "results" / default_result_name(args, device)
    write_csv(csv_path, rows, info, args)
    md_path = csv_path.with_suffix(".md")
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    md_path.write_text(
        f"`{command.strip()}` on {machine_description()}, device {device.type}, model {args.model}, "
        f"data {args.data}, {args.n_train} training / {args.n_test} test samples, median of {args.epochs} epochs after a warm-up:\n\n"
        "```\n" + format_table(rows) + "\n```\n")
    print(f"written {csv_path} and {md_path}")

    if args.profile is not None:
        for ph in args.profile or [ph for ph in order if ph != "eval_plain"]:
            if ph in runners:
                print(profile_ops(ph, runners[ph], args.profile_top) if args.profile_ops
                      else profile_epoch(ph, runners[ph], args.profile_top, args.profile_sort))
    load = load_average()
    print(f"total {time.perf_counter() - t_start:.0f} s" + (f"; load average now {load:.1f}" if load is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
