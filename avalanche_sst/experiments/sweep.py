"""Run several methods on the same benchmark and tabulate their scores per step.

The preset's scenario (``Preset.scenario``) fixes the continual-learning
setting and so what a step is scored by (:mod:`avalanche_sst.metrics.scores`).
Every run of one seed shares the split (seeded), the model initialisation
(the same ``torch.manual_seed`` before building it) and the evaluation on the
whole test stream after each step. Each run writes TensorBoard event files and
CSV logs (Avalanche's loggers) under ``<out>/<method>/seed<k>/``, plus our own
``steps.csv`` and a resumable ``checkpoint.pt`` after every finished step;
rerunning the same command skips finished runs and resumes unfinished ones
at their last finished step, scores, CSV logs and TensorBoard scalars as if
uninterrupted (:mod:`avalanche_sst.metrics.resume`). A run holds its folder's
lock while it runs (:mod:`avalanche_sst.experiments.run_lock`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from avalanche.models.dynamic_modules import avalanche_model_adaptation

from avalanche_sst.benchmarks import stratified_split
from avalanche_sst.benchmarks.same_class import RelabelledSubset
from avalanche_sst.checkpoint import load_checkpoint, save_checkpoint
from avalanche_sst.experiments.divergence import diverged, diverged_tail, weights_finite
from avalanche_sst.experiments.hparams import write_run_hparams
from avalanche_sst.experiments.methods import Method, StrategyContext, check_setting, get_method, parse_variant
from avalanche_sst.experiments.presets import (PRESETS, Preset, check_same_settings, get_preset, run_settings,
                                               validate_preset)
from avalanche_sst.experiments.provenance import code_provenance
from avalanche_sst.experiments.scenarios import get_scenario
from avalanche_sst.experiments.tables import write_tables
from avalanche_sst.metrics import make_evaluator
from avalanche_sst.experiments.run_lock import run_lock
from avalanche_sst.metrics.cost import CostMeter
from avalanche_sst.metrics.logging import LearningRateLogger, log_scalar
from avalanche_sst.metrics.resume import load_metric_state_dict, log_sizes, metric_state_dict
from avalanche_sst.metrics.inference import inference_flops, stream_input_shape
from avalanche_sst.metrics.memory import memory_beyond_model
from avalanche_sst.metrics.groups import ClassGroupPredictions
from avalanche_sst.metrics.scores import SETTING_SCORES, StepInfo, step_scores
from avalanche_sst.plugins.guard import NonFiniteLossError
from avalanche_sst.plugins.precision import keep_freed_memory

# Top-1 on the whole test stream in the same-class setting (its one test experience has task 0).
ACC_KEY = "Top1_Acc_Stream/eval_phase/test_stream/Task000"


@dataclass
class RunResult:
    method: str
    seed: int
    accuracies: list[float]  # the setting's primary score after each step, in [0, 1]
    seconds: float
    scores: list[dict] = field(default_factory=list)  # every score of the setting, per step
    costs: list[float] = field(default_factory=list)  # training sample-passes per step (metrics.cost)
    report: dict = field(default_factory=dict)  # Method.report of the finished run: {name: float}
    memory: list[float] = field(default_factory=list)  # bytes kept beyond the model after each step
    inference: list[float] = field(default_factory=list)  # FLOPs per image of the evaluated model, per step
    provenance: dict = field(default_factory=dict)  # the code that ran it (experiments.provenance)
    diverged_at: Optional[int] = None  # 1-based step at which it diverged; it and later steps score NaN


def load_dataset(name: str, root: Optional[str]):
    from avalanche_sst.benchmarks import datasets

    loaders = {
        "fashion_mnist": lambda: datasets.fashion_mnist(root),
        "cifar10": lambda: datasets.cifar10(root),
        "cifar100": lambda: datasets.cifar100(root),
        "tiny_imagenet": lambda: datasets.tiny_imagenet(root),
    }
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(loaders)}")
    return loaders[name]()


def _subsample(dataset, fraction: float, seed: int):
    if fraction >= 1.0:
        return dataset
    targets = torch.as_tensor(dataset.targets)
    keep, _ = stratified_split(targets, (fraction, 1 - fraction), torch.Generator().manual_seed(10_000 + seed))
    if hasattr(dataset, "images"):  # keep the fast tensor path
        from avalanche_sst.benchmarks import TensorImageDataset

        return TensorImageDataset(dataset.images[keep], targets[keep], dataset.classes)
    return RelabelledSubset(dataset, keep, targets[keep])


def build_benchmark(preset: Preset, seed: int, data=None):
    """The preset's scenario on its (subsampled) dataset; ``.setting`` names its setting."""
    scenario = get_scenario(preset.scenario)
    train, test = data if data is not None else load_dataset(preset.dataset, preset.data_root)
    train = _subsample(train, preset.train_fraction, seed)
    test = _subsample(test, preset.test_fraction, seed)
    benchmark = scenario.build(train, test, preset, seed)
    if getattr(benchmark, "setting", scenario.setting) != scenario.setting:
        raise RuntimeError(f"scenario {scenario.name!r} built a {benchmark.setting!r} benchmark")
    benchmark.setting = scenario.setting
    return benchmark


def build_model(preset: Preset, benchmark, seed: int) -> torch.nn.Module:
    from avalanche_sst.models import build_model as build

    image = benchmark.test_stream[0].dataset[0][0]
    torch.manual_seed(seed)  # same initialisation for every method of this seed
    multi = getattr(benchmark, "setting", None) == "task_incremental" and preset.multi_head
    return build(preset.model, num_classes=benchmark.num_classes, in_channels=int(image.shape[0]),
                 image_size=int(image.shape[-1]), multi_head=multi)


def method_for(preset: Preset, name: str) -> Method:
    """Method ``name`` with the preset's ``method_kwargs`` for its base name (checked now, not at its run)."""
    return get_method(name, preset.method_kwargs.get(parse_variant(name)[0]))


def check_methods(preset: Preset) -> None:
    """Fail before any training: unknown methods, variant typos, methods outside the preset's setting."""
    setting = get_scenario(preset.scenario).setting
    for name in preset.methods:
        check_setting(method_for(preset, name), setting)


def eval_stream(preset: Preset, benchmark):
    """The stream every step is scored on: the test stream, or (``evaluate_on="valid"``,
    for choosing hyperparameters) the validation slices held out of training."""
    if preset.evaluate_on == "test":
        return benchmark.test_stream
    if preset.evaluate_on != "valid":
        raise ValueError(f"evaluate_on must be 'test' or 'valid', got {preset.evaluate_on!r}")
    if getattr(benchmark, "valid_stream", None) is None:
        raise ValueError("evaluate_on='valid' needs validation slices: --set validation_fraction=0.1")
    return benchmark.valid_stream


def _run_dir(out: Path, method: str, seed: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._=+-]+", "_", method)  # variants: "sst:use_msl=False" -> "sst_use_msl=False"
    return out / safe / f"seed{seed}"


def run_one(
    preset: Preset,
    method_name: str,
    seed: int,
    benchmark,
    out: Path,
    extra_plugins: Sequence = (),
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train (or resume, or reuse) one run, holding its folder's lock (one writer per run)."""
    with run_lock(_run_dir(out, method_name, seed), log, f"[{method_name} seed {seed}]"), ExitStack() as cleanup:
        return _run_one_locked(preset, method_name, seed, benchmark, out, extra_plugins, log, cleanup)


def _run_one_locked(preset: Preset, method_name: str, seed: int, benchmark, out: Path,
                    extra_plugins: Sequence, log: Callable[[str], None], cleanup: ExitStack) -> RunResult:
    run_dir = _run_dir(out, method_name, seed)
    done_file = run_dir / "done.json"
    settings = run_settings(preset, method_name)
    if done_file.exists():
        done = json.loads(done_file.read_text())
        check_same_settings(done_file, done.get("settings"), settings, method_name)
        finished = _done_result(done, method_name, seed)
        log(f"[{method_name} seed {seed}] finished earlier: {_fmt(finished.accuracies)}")
        return finished

    method = method_for(preset, method_name)
    setting = getattr(benchmark, "setting", "same_class")
    check_setting(method, setting)
    device = torch.device(preset.device)
    model = build_model(preset, benchmark, seed)
    meter = CostMeter()
    ckpt_path = run_dir / "checkpoint.pt"
    state = load_checkpoint(ckpt_path)
    if state is not None:  # checked before the loggers open their files: a resume continues them
        check_same_settings(ckpt_path, json.loads(state["settings"]) if "settings" in state else None, settings,
                            method_name)
    evaluator = make_evaluator(run_dir, resume_logs=(state or {}).get("evaluator", {}).get("logs"))
    # class-incremental steps also record where the predictions go (accuracy and share per class group)
    groups = [ClassGroupPredictions()] if setting == "class_incremental" else []
    ctx = StrategyContext(model=model, config=preset, evaluator=evaluator, device=device,
                          plugins=[*extra_plugins, meter, LearningRateLogger(), *groups],
                          valid_stream=getattr(benchmark, "valid_stream", None),
                          benchmark=benchmark, seed=seed, cache_dir=out / "_cache")
    strategy = method.build(ctx)
    # Also when interrupted: closing flushes what an unfinished step logged now, so a resume
    # (even in this process) cuts it off and no writer left behind appends after that.
    cleanup.callback(_close_loggers, strategy)
    train_stream = list(benchmark.train_stream)
    scored = eval_stream(preset, benchmark)
    test_sizes = [len(exp.dataset) for exp in scored]

    scores: list[dict] = []
    memory: list[float] = []
    inference: list[float] = []
    seconds = 0.0
    start_step = 0
    diverged_at: Optional[int] = None  # the 1-based step at which training diverged (experiments.divergence)
    if state is not None:
        start_step = int(state["step"])
        scores = [dict(s) for s in state["scores"]]
        memory = [float(m) for m in state.get("memory", [])]
        inference = [float(f) for f in state.get("inference", [])]
        seconds = float(state["seconds"])
        _replay_adaptation(strategy.model, train_stream[:start_step], scored)
        if method.rebuild_model is not None:
            method.rebuild_model(strategy, state["method"])
        strategy.model.load_state_dict(state["model"])
        method.load_state_dict(strategy, state["method"], train_stream[:start_step])
        meter.load_state_dict(state.get("cost", {}))
        # The clock's counters too: some plugins (e.g. Avalanche's RWalk) count global iterations.
        for name, value in state.get("clock", {"train_exp_counter": start_step}).items():
            setattr(strategy.clock, name, int(value))
        if "evaluator" in state:  # forgetting's first accuracies, the last trained experience
            load_metric_state_dict(strategy.evaluator, state["evaluator"]["metrics"])
        log(f"[{method_name} seed {seed}] resuming after step {start_step}")

    for step in range(start_step, len(train_stream)):
        torch.manual_seed(seed * 1000 + step)  # shuffling/augmentation identical on resume
        t0 = time.perf_counter()
        # Fresh optimizer state per step (each step restarts its lr schedule anyway), so a
        # resumed run equals an uninterrupted one: momentum is not in the checkpoint.
        try:
            strategy.train(train_stream[step], eval_streams=[], reset_optimizer_state=True)
            if not weights_finite(strategy.model):
                raise NonFiniteLossError("the step ended with non-finite weights")
            memory.append(_step_memory(method, strategy))
            result = strategy.eval(scored)
        except Exception as err:
            if not diverged(err, strategy):
                raise
            seconds += time.perf_counter() - t0
            diverged_at = step + 1
            log(f"[{method_name} seed {seed}] DIVERGED in step {step + 1} ({type(err).__name__}: {str(err)[:160]}): "
                "it and the later steps score NaN; lower the learning rate (lr_factor) to train it")
            break
        seconds += time.perf_counter() - t0
        scores.append({**step_scores(setting, result, StepInfo(step, scores, test_sizes)),
                       **(groups[0].last if groups else {})})
        inference.append(float(inference_flops(strategy.model, stream_input_shape(scored))))
        save_checkpoint(ckpt_path, {
            "step": step + 1,
            "scores": scores,
            "seconds": seconds,
            "model": strategy.model.state_dict(),
            "method": method.state_dict(strategy),
            "clock": {k: v for k, v in vars(strategy.clock).items() if isinstance(v, int)},
            "cost": meter.state_dict(),
            "evaluator": evaluator_checkpoint(strategy.evaluator),
            "memory": memory,
            "inference": inference,
            "settings": json.dumps(settings),
        })
        primary = next(iter(scores[-1]))
        log(f"[{method_name} seed {seed}] step {step + 1}/{len(train_stream)}: "
            f"{primary} {100 * scores[-1][primary]:.2f}%  ({seconds:.0f} s, {meter.step_costs[-1]:.0f} sample-passes)")

    _close_loggers(strategy)
    costs = list(meter.step_costs)
    if diverged_at is not None:
        scores, costs, memory, inference = diverged_tail(SETTING_SCORES[setting].names, len(train_stream),
                                                         diverged_at, meter.current, scores, costs, memory, inference)
    names = list(scores[0]) if scores else []
    (run_dir / "steps.csv").write_text(
        ",".join(["step", *names, "cost"]) + "\n"
        + "".join(",".join([str(i + 1), *(f"{s[n]:.6f}" for n in names), f"{c:.1f}"]) + "\n"
                  for i, (s, c) in enumerate(zip(scores, costs)))
    )
    report = run_report(method, strategy)
    result = RunResult(method_name, seed, [next(iter(s.values())) for s in scores], seconds, scores, costs, report,
                       memory, inference, code_provenance(), diverged_at)
    done_file.write_text(json.dumps({"accuracies": result.accuracies, "seconds": seconds, "scores": scores,
                                     "costs": costs, "report": report, "memory": memory, "inference": inference,
                                     "provenance": result.provenance, "settings": settings,
                                     **({"diverged_at_step": diverged_at} if diverged_at is not None else {})}))
    write_run_hparams(run_dir, preset, method_name, result)
    return result


def evaluator_checkpoint(evaluator) -> dict:
    """The evaluator's part of a checkpoint: its metrics' memory and its log files' lengths."""
    return {"metrics": metric_state_dict(evaluator), "logs": log_sizes(evaluator)}


def _step_memory(method: Method, strategy) -> float:
    """Bytes kept beyond the evaluated model after a step (metrics.memory), logged to TensorBoard too."""
    value = float(memory_beyond_model(method, strategy))
    log_scalar(strategy, "memory/bytes_beyond_model", value)
    return value


def _read_done(done_file: Path, method: str = "", seed: int = 0) -> RunResult:
    return _done_result(json.loads(done_file.read_text()), method, seed)


def _done_result(d: dict, method: str, seed: int) -> RunResult:
    """The RunResult of a parsed done.json."""
    scores = d.get("scores") or [{"top1": a} for a in d["accuracies"]]  # runs finished before scores existed
    return RunResult(method, seed, d["accuracies"], d["seconds"], scores, d.get("costs", []), d.get("report", {}),
                     d.get("memory", []), d.get("inference", []), d.get("provenance", {}), d.get("diverged_at_step"))


def run_report(method, strategy) -> dict:
    """``method.report(strategy)`` checked to be flat ``{str: number}`` (it goes into done.json and tables)."""
    if method.report is None:
        return {}
    report = method.report(strategy)
    bad = {k: v for k, v in report.items() if not isinstance(k, str) or isinstance(v, bool)
           or not isinstance(v, (int, float))}
    if bad:
        raise TypeError(f"method {method.name!r}: report() must return {{str: number}}, got {bad}")
    return {k: float(v) for k, v in report.items()}


def _replay_adaptation(model, done_train, test_stream) -> None:
    """Shape before weights: Avalanche's dynamic modules (multi-head, incremental
    classifiers) grow at each training experience (in training mode) and at each
    evaluation (a head per task of the test stream); replay both, in the run's order.
    The model's train/eval flag is left as it was (LwF copies it, flag included)."""
    was_training = model.training
    for exp in done_train:
        model.train()
        avalanche_model_adaptation(model, exp)
        model.eval()
        for test_exp in test_stream:
            avalanche_model_adaptation(model, test_exp)
    model.train(was_training)


def _close_loggers(strategy) -> None:
    for logger in getattr(strategy.evaluator, "loggers", []):
        close = getattr(logger, "close", None)
        if callable(close):
            close()


def _fmt(accs: Sequence[float]) -> str:
    return " ".join(f"{100 * a:.2f}" for a in accs)


def run_sweep(
    preset: Preset,
    out: str | Path,
    data=None,
    extra_plugins: Callable[[str, int], Sequence] = lambda method, seed: (),
    log: Callable[[str], None] = print,
    command: Optional[str] = None,
    workers: Optional[int] = 1,
    address: Optional[str] = None,
    gpus_per_run: float = 0.0,
    threads_per_run: Optional[int] = None,
    progress: Optional[bool] = None,
    progress_file=None,
) -> list[RunResult]:
    """Run every method of ``preset`` for every seed; write the tables.

    Each (method, seed) run is one task of :func:`~avalanche_sst.experiments.executor.make_executor`
    (``workers=1``: in this process; more, or ``address``: Ray tasks), with
    ``threads_per_run`` torch threads (default: ``preset.num_threads``, else 1) in every executor,
    so any executor gives the same table. ``progress`` draws the live bars on ``progress_file``
    (default: only when stderr is a terminal).
    """
    from avalanche_sst.experiments.executor import longest_first, make_executor
    from avalanche_sst.experiments.progress import ProgressDisplay
    from avalanche_sst.experiments.versions import cpu_path, environment_versions

    validate_preset(preset)  # every field, before any folder, data or worker
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = threads_per_run or preset.num_threads or 1
    executor = make_executor(workers, address, gpus_per_run, threads)  # bad arguments fail before any work
    check_methods(preset)
    # Two tables can share a folder (adaq_table4 reuses adaq_split's runs): the other table's finished
    # runs stay in this folder's preset.json, table and runs.csv.
    kept = _finished_runs_of_other_methods(preset, out)
    listed = preset.replace(methods=tuple(dict.fromkeys([*(r.method for r in kept), *preset.methods])))
    (out / "preset.json").write_text(json.dumps(
        {**listed.to_dict(), "versions": environment_versions(), "cpu_path": cpu_path(),
         "provenance": code_provenance(),
         "executor": {"workers": executor.workers, "address": address, "gpus_per_run": gpus_per_run,
                      "threads_per_run": threads}}, indent=2))
    if data is None:
        data = load_dataset(preset.dataset, preset.data_root)
    jobs = [(name, seed) for seed in preset.seeds for name in preset.methods]
    run_root = out.resolve()  # a worker's working folder need not be ours

    def run(job, data, ctx):  # in the worker: its process settings, its own benchmark, one run
        name, seed = job
        if preset.flush_denormal:
            torch.set_flush_denormal(True)
        if preset.keep_freed_memory:
            keep_freed_memory(True)
        benchmark = build_benchmark(preset, seed, data)  # seeded: the same split in every worker
        plugins = [*extra_plugins(name, seed), ctx.progress_plugin(len(benchmark.train_stream))]
        return run_one(preset, name, seed, benchmark, run_root, plugins, ctx.log)

    t0 = time.perf_counter()
    with ProgressDisplay(len(jobs), file=progress_file, enabled=progress, log=log) as display:
        results = executor.map(run, jobs, [f"{name} seed {seed}" for name, seed in jobs], shared=data,
                               report=display, order=longest_first(preset, [name for name, _ in jobs]))
    write_tables([*results, *kept], out, listed, command=command, wall_seconds=time.perf_counter() - t0,
                 threads_per_run=threads, workers=executor.workers)
    return results


def _finished_runs_of_other_methods(preset: Preset, out: Path) -> list[RunResult]:
    """The finished runs (every seed of ``preset``) of the methods an earlier sweep in ``out`` ran and
    ``preset`` does not, when that sweep's preset was ``preset`` but for its methods; else none."""
    path = out / "preset.json"
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    ours = json.loads(json.dumps(preset.to_dict()))
    if any(earlier.get(k) != v for k, v in ours.items() if k not in ("methods", "seeds", "name")):
        return []
    others = [m for m in earlier.get("methods", []) if m not in preset.methods]
    finished, missing = collect_finished(preset.replace(methods=tuple(others)), out)
    incomplete = {text.rsplit(" seed ", 1)[0] for text in missing}
    return [r for r in finished if r.method not in incomplete]


def collect_finished(preset: Preset, out: str | Path) -> tuple[list[RunResult], list[str]]:
    """Results of the runs of ``preset`` that have finished, and the names of those that have not."""
    out = Path(out)
    finished, missing = [], []
    for seed in preset.seeds:
        for name in preset.methods:
            done = _run_dir(out, name, seed) / "done.json"
            if done.exists():
                finished.append(_read_done(done, name, seed))
            else:
                missing.append(f"{name} seed {seed}")
    return finished, missing


def main(argv: Optional[Sequence[str]] = None) -> int:
    from avalanche_sst.experiments.executor import add_executor_arguments, executor_options
    from avalanche_sst.experiments.preflight import add_preflight_arguments, run_preflight

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--out", default=None, help="output folder (default: results/<preset>)")
    parser.add_argument("--methods", nargs="+", default=None, help="override the preset's methods")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--dataset", default=None, choices=["fashion_mnist", "cifar10", "cifar100", "tiny_imagenet"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="set any preset field, e.g. --set ratios=1,2,3,4 label_noise=0.1 scenario=class_incremental")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the runs that have finished and list the others")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (by default a mistake prints one line)")
    add_executor_arguments(parser)
    add_preflight_arguments(parser)
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    changes = {k: v for k, v in {
        "methods": tuple(args.methods) if args.methods else None,
        "seeds": tuple(args.seeds) if args.seeds else None,
        "model": args.model, "dataset": args.dataset, "data_root": args.data_root, "device": args.device,
    }.items() if v is not None}
    preset = preset.replace(**changes).with_settings(args.set)
    validate_preset(preset)
    check_methods(preset)
    out = Path(args.out or f"results/{preset.name}")
    command = "python experiments/sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.preflight:
        results = run_preflight({preset.name: [("sweep", preset)]}, out, args.preflight_iterations,
                                args.preflight_batch, args.device, args.workers, args.gpus_per_run, command.strip(),
                                run=not args.forecast_only)
        return 0 if all(r.ok for r in results) else 1
    if args.report_only:
        finished, missing = collect_finished(preset, out)
        if not finished:
            raise SystemExit(f"no finished runs under {out}")
        write_tables(finished, out, preset, command=command.replace(" --report-only", "").strip())
        if missing:
            with open(out / "table.md", "a") as f:
                f.write(f"\nNot finished yet (rerun the command to resume them): {', '.join(missing)}.\n")
        print((out / "table.md").read_text())
        return 0
    run_sweep(preset, out, command=command.strip(), **executor_options(args))
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
