"""Converged presets from validation learning curves (issue 14, part 0).

METHOD.md ("Budgets"): the paper trains every phase 90-300 epochs, so each
method it compares is near convergence; a smaller preset keeps that
property only if its epochs come from validation learning curves. This
module measures those curves for fine-tuning (Avalanche's ``Naive`` built
exactly as the sweep's ``finetune``: the preset's SGD, batch size and, for
cosine runs, the project's :class:`StepwiseCosinePlugin`) from scratch on
part 1 and then on each later part of the same-class scenario, scoring the
part's validation slice (``benchmark.valid_stream``, never the test set)
after every epoch.

**Schedule.** The presets anneal the lr with a cosine over each step's
epochs, so the accuracy after epoch e of a 30-epoch cosine run is not what
an e-epoch run reaches (its lr is still high at e). Two ways to measure:

* ``"cosine"`` (default): one run per budget of a grid (e.g. 5, 10, 20, 30
  epochs), each with the preset's own cosine schedule; the curve is the
  *final* validation accuracy against the budget. It answers exactly the
  question a preset asks ("does a longer schedule still pay?") and costs the
  sum of the grid per step.
* ``"constant"``: one probe of ``max_epochs`` at the step's lr held
  constant; the curve is the accuracy after every epoch. It costs
  ``max_epochs`` per step (plus one cosine run at the chosen epochs, the
  next step's start) but measures a different schedule: a proxy, cheaper.

Every step starts from each seed's model after the previous step trained
with the preset's cosine schedule at the epochs chosen for that step, so a
later step's curve starts where the converged preset would.

**Plateau rule** (:func:`plateau_epoch`): the first point after which no
later point beats the best so far by more than ``min_delta``, provided the
curve continues at least ``patience`` epochs past it (else: not plateaued,
raise the budget). It is applied to the mean over seeds of each step's curve,
so every seed's next step starts from the same number of epochs, as in a
preset. Accuracy is a fraction in [0, 1].
"""

from __future__ import annotations

import csv
import json
import statistics
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from avalanche_sst.checkpoint import load_checkpoint, save_checkpoint
from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.registry import StrategyContext, common_kwargs
from avalanche_sst.metrics.validation import accuracy
from avalanche_sst.plugins.precision import keep_freed_memory
from avalanche_sst.plugins.schedule import StepwiseCosinePlugin

SCHEDULES = ("cosine", "constant")
CURVE_COLUMNS = ("preset", "seed", "step", "schedule", "budget", "epoch", "val_acc")
# The preset fields a curve depends on; one output folder holds curves of one set of values. Seeds,
# budgets and max_epochs may change between invocations (a run is keyed by seed, schedule, budget and
# the epochs chosen before it), and so may the preset's epochs, which the curves are there to set.
CURVE_FIELDS = ("dataset", "model", "scenario", "scenario_kwargs", "ratios", "train_fraction", "validation_fraction",
                "label_noise", "batch_size", "lr_scratch", "lr_finetune", "momentum", "weight_decay")


def plateau_epoch(epochs: Sequence[float], accs: Sequence[float], min_delta: float = 0.005,
                  patience: float = 5) -> Optional[float]:
    """The first epoch after which no later epoch beats the best so far by more than ``min_delta``.

    ``epochs`` are strictly increasing (every epoch of a probe, or a grid of
    budgets); ``accs`` the validation accuracy at each. The chosen epoch must be
    followed by at least ``patience`` epochs of curve (``epochs[-1] - epoch >=
    patience``); otherwise the curve has not shown a plateau and the result is
    None (raise ``max_epochs`` or the largest budget).
    """
    epochs, accs = [float(e) for e in epochs], [float(a) for a in accs]
    if not epochs or len(epochs) != len(accs):
        raise ValueError(f"epochs and accs must be non-empty and of equal length, got {len(epochs)} and {len(accs)}")
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError(f"epochs must be strictly increasing, got {epochs}")
    if min_delta < 0 or patience < 0:
        raise ValueError(f"min_delta and patience must be >= 0, got {min_delta} and {patience}")
    best = float("-inf")
    for i, (epoch, acc) in enumerate(zip(epochs, accs)):
        best = max(best, acc)
        later = max(accs[i + 1:], default=float("-inf"))
        if later <= best + min_delta:
            return epoch if epochs[-1] - epoch >= patience else None
    return None  # unreachable: the last point has no later one


def default_budgets(max_epochs: int) -> tuple[int, ...]:
    """A cosine grid up to ``max_epochs``: 1/6, 1/3, 1/2, 2/3 and all of it (30 -> 5, 10, 15, 20, 30)."""
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    return tuple(sorted({max(1, round(max_epochs * f)) for f in (1 / 6, 1 / 3, 1 / 2, 2 / 3, 1)}))


def decision_curve(rows: Sequence[dict], step: int, schedule: str) -> tuple[list[int], list[float], int]:
    """The curve the rule reads at ``step``: (epochs, mean over seeds, number of seeds).

    Cosine: the final accuracy of each budget run; constant: every epoch of the probe.
    """
    points: dict[int, list[float]] = {}
    for r in rows:
        if int(r["step"]) != step or r["schedule"] != schedule:
            continue
        if schedule == "cosine" and int(r["epoch"]) != int(r["budget"]):
            continue
        points.setdefault(int(r["epoch"]), []).append(float(r["val_acc"]))
    xs = sorted(points)
    seeds = min((len(points[x]) for x in xs), default=0)
    return xs, [statistics.fmean(points[x]) for x in xs], seeds


def choose_epochs(rows: Sequence[dict], step: int, schedule: str, min_delta: float = 0.005,
                  patience: float = 5) -> tuple[int, bool]:
    """(epochs for ``step``, whether the curve plateaued); the largest epoch measured when it did not."""
    xs, means, _ = decision_curve(rows, step, schedule)
    if not xs:
        raise ValueError(f"no {schedule} curve for step {step} in the rows")
    chosen = plateau_epoch(xs, means, min_delta, patience)
    return (int(chosen), True) if chosen is not None else (xs[-1], False)


class ValidationCurve(SupervisedPlugin):
    """Top-1 on a validation dataset after every training epoch (the model's mode is restored)."""

    def __init__(self, dataset, batch_size: int = 1000):
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size
        self.values: list[float] = []

    def after_training_epoch(self, strategy, *args, **kwargs):
        self.values.append(accuracy(strategy.model, self.dataset, strategy.device, self.batch_size))


def train_curve(preset: Preset, model: torch.nn.Module, experience, valid_dataset, lr: float, epochs: int,
                schedule: str, device: torch.device) -> list[float]:
    """Fine-tune ``model`` in place on ``experience`` for ``epochs`` at ``lr``; validation accuracy per epoch.

    Built as the sweep's ``finetune`` (``registry.common_kwargs``: optimizer, criterion, batch sizes,
    cosine per iteration) with a fresh optimizer; ``"constant"`` drops the cosine plugin.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    config = preset.replace(lr_scratch=lr, epochs_scratch=int(epochs), epochs_finetune=int(epochs))
    with warnings.catch_warnings():  # no metrics and no loggers is the point: the curve is ours
        warnings.filterwarnings("ignore", message="No loggers specified")
        evaluator = EvaluationPlugin(loggers=[])
    ctx = StrategyContext(model=model, config=config, evaluator=evaluator, device=device)
    kwargs = common_kwargs(ctx)
    if schedule == "constant":
        kwargs["plugins"] = [p for p in kwargs["plugins"] if not isinstance(p, StepwiseCosinePlugin)]
    curve = ValidationCurve(valid_dataset, preset.eval_batch_size)
    kwargs["plugins"].append(curve)
    Naive(model=model, **kwargs).train(experience, eval_streams=[])
    return curve.values


def _run_path(out: Path, seed: int, step: int, schedule: str, budget: int, before: Sequence[int]) -> Path:
    """A run's file, keyed by the epochs chosen for the earlier steps (its start): a changed choice
    (e.g. after adding a seed) trains new runs instead of reusing ones that started elsewhere."""
    start = "from_" + "-".join(str(e) for e in before) if before else "from_scratch"
    return out / "runs" / f"seed{seed}" / f"step{step}" / start / f"{schedule}{budget}.pt"


def _check_config(out: Path, config: dict) -> None:
    """Refuse to mix curves measured under other settings into one folder."""
    path = out / "config.json"
    config = json.loads(json.dumps(config))  # tuples -> lists, as read back
    if path.exists():
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if changed:
            raise ValueError(f"{out} holds curves measured with other settings ({', '.join(changed)} differ); "
                             "use another --out or delete that folder")
    path.write_text(json.dumps(config, indent=2))


def run_curves(preset: Preset, out: str | Path, seeds: Optional[Sequence[int]] = None, max_epochs: int = 30,
               schedule: str = "cosine", budgets: Optional[Sequence[int]] = None, min_delta: float = 0.005,
               patience: float = 5, data=None, command: str = "", log: Callable[[str], None] = print) -> dict:
    """Measure the curves of every step for ``seeds``, write curves.csv / .png / .md under ``out``.

    Resumable: every finished run (seed, step, schedule, budget) is a file under ``out/runs``
    (validation accuracies and final weights, loaded with ``weights_only=True``) and is reused.

    :returns: ``{"chosen": [epochs per step], "plateaued": [bool per step], "trained": [runs trained now],
        "rows": curve rows}``.
    """
    from avalanche_sst.experiments.sweep import build_benchmark, build_model, load_dataset

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if preset.scenario != "same_class":
        raise ValueError(f"learning curves are measured on the same-class scenario; preset {preset.name!r} "
                         f"has scenario={preset.scenario!r} (use --set scenario=same_class)")
    if preset.validation_fraction <= 0:
        raise ValueError("the curves score the validation slices; set validation_fraction > 0 in the preset")
    seeds = tuple(int(s) for s in (seeds if seeds is not None else preset.seeds))
    grid = tuple(sorted({int(b) for b in budgets})) if budgets else default_budgets(max_epochs)
    if schedule == "cosine" and grid[0] < 1:
        raise ValueError(f"budgets must be >= 1 epoch, got {grid}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, {f"preset.{k}": getattr(preset, k) for k in CURVE_FIELDS})
    if preset.num_threads:
        torch.set_num_threads(preset.num_threads)
    if preset.flush_denormal:
        torch.set_flush_denormal(True)
    if preset.keep_freed_memory:
        keep_freed_memory(True)
    data = data if data is not None else load_dataset(preset.dataset, preset.data_root)
    device = torch.device(preset.device)
    benchmarks = {s: build_benchmark(preset, s, data) for s in seeds}
    models = {s: build_model(preset, benchmarks[s], s) for s in seeds}
    starts = {s: {k: v.clone() for k, v in models[s].state_dict().items()} for s in seeds}
    n_steps = len(benchmarks[seeds[0]].train_stream)
    rows: list[dict] = []
    trained: list[tuple] = []
    chosen: list[int] = []
    plateaued: list[bool] = []

    def run(seed: int, step: int, kind: str, epochs: int) -> dict:
        path = _run_path(out, seed, step, kind, epochs, chosen[:step - 1])
        state = load_checkpoint(path)
        if state is None:
            bench, model = benchmarks[seed], models[seed]
            model.load_state_dict(starts[seed])
            torch.manual_seed(seed * 1_000_003 + step * 1009 + epochs * 2 + (kind == "constant"))
            lr = preset.lr_scratch if step == 1 else preset.lr_finetune
            values = train_curve(preset, model, bench.train_stream[step - 1],
                                 bench.valid_stream[step - 1].dataset, lr, epochs, kind, device)
            # a copy: the same module trains the next run
            state = {"val_acc": values, "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                     "lr": lr}
            save_checkpoint(path, state)
            trained.append((seed, step, kind, epochs))
            log(f"[seed {seed} step {step}] {kind} {epochs} epochs: val acc {100 * values[-1]:.2f}%")
        rows.extend({"preset": preset.name, "seed": seed, "step": step, "schedule": kind, "budget": epochs,
                     "epoch": e + 1, "val_acc": a} for e, a in enumerate(state["val_acc"]))
        return state

    for step in range(1, n_steps + 1):
        finals: dict[tuple, dict] = {}
        for seed in seeds:
            for budget in (grid if schedule == "cosine" else (int(max_epochs),)):
                finals[seed, budget] = run(seed, step, schedule, budget)
        epochs, ok = choose_epochs(rows, step, schedule, min_delta, patience)
        chosen.append(epochs)
        plateaued.append(ok)
        log(f"step {step}: {epochs} epochs" + ("" if ok else " (no plateau: the largest measured)"))
        if step < n_steps:  # the next step starts after the preset's cosine schedule at the chosen epochs
            for seed in seeds:
                state = finals[seed, epochs] if schedule == "cosine" else run(seed, step, "cosine", epochs)
                starts[seed] = state["model"]
        write_outputs(rows, out, preset.name, chosen, plateaued, schedule, command, min_delta, patience,
                      current=(preset.epochs_scratch, preset.epochs_finetune))
    return {"chosen": chosen, "plateaued": plateaued, "trained": trained, "rows": rows}


def write_outputs(rows: Sequence[dict], out: Path, preset_name: str, chosen: Sequence[int],
                  plateaued: Sequence[bool], schedule: str, command: str, min_delta: float, patience: float,
                  current: Optional[tuple[int, int]] = None) -> None:
    """curves.csv, curves.png and curves.md (the chosen epochs, the preset fields, the command)."""
    out = Path(out)
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, CURVE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "val_acc": f"{float(r['val_acc']):.6f}"} for r in rows)
    plot_curves(rows, out / "curves.png", chosen, schedule, title=f"preset {preset_name}: validation accuracy")
    (out / "curves.md").write_text(summary_markdown(rows, preset_name, chosen, plateaued, schedule, command,
                                                    min_delta, patience, current))


def summary_markdown(rows: Sequence[dict], preset_name: str, chosen: Sequence[int], plateaued: Sequence[bool],
                     schedule: str, command: str, min_delta: float, patience: float,
                     current: Optional[tuple[int, int]] = None) -> str:
    seeds = sorted({int(r["seed"]) for r in rows})
    what = ("final validation accuracy of one cosine run per budget" if schedule == "cosine"
            else "validation accuracy after every epoch at a constant lr")
    lines = [f"Learning curves of fine-tuning, preset `{preset_name}`, seeds {seeds}: {what}, mean over seeds.",
             f"Plateau rule: the first epoch after which no later point beats the best so far by more than "
             f"{100 * min_delta:g} points, with at least {patience:g} epochs of curve after it.", "",
             "| step | lr | epochs chosen | plateaued | val acc there (%) | best val acc (%) |",
             "|---|---|---|---|---|---|"]
    for step, (epochs, ok) in enumerate(zip(chosen, plateaued), start=1):
        xs, means, _ = decision_curve(rows, step, schedule)
        at = means[xs.index(epochs)] if epochs in xs else float("nan")
        lines.append(f"| {step} | {'scratch' if step == 1 else 'finetune'} | {epochs} | {'yes' if ok else 'NO'} "
                     f"| {100 * at:.2f} | {100 * max(means):.2f} |")
    later = max(chosen[1:], default=None)
    lines += ["", "Preset fields (the later steps share one value, the largest, so each is converged): "
              f"`epochs_scratch={chosen[0]}`" + (f", `epochs_finetune={later}`" if later is not None else "")
              + f"; per step: {list(chosen)}."
              + (f" The preset now has `epochs_scratch={current[0]}`, `epochs_finetune={current[1]}`."
                 if current else "")]
    if not all(plateaued):
        lines.append("Some step did not plateau within the measured epochs: rerun with a larger --max-epochs "
                     "(finished runs are reused).")
    if command:
        lines += ["", f"Produced by `{command}`."]
    return "\n".join(lines) + "\n"


def plot_curves(rows: Sequence[dict], path: Path, chosen: Sequence[int], schedule: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = sorted({int(r["step"]) for r in rows})
    fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.2), squeeze=False, sharey=True)
    for ax, step in zip(axes[0], steps):
        for seed in sorted({int(r["seed"]) for r in rows}):
            seed_rows = [r for r in rows if int(r["seed"]) == seed]
            xs, ys, _ = decision_curve(seed_rows, step, schedule)
            ax.plot(xs, [100 * y for y in ys], marker="o" if schedule == "cosine" else None, alpha=0.6,
                    label=f"seed {seed}")
        xs, means, _ = decision_curve(rows, step, schedule)
        ax.plot(xs, [100 * m for m in means], color="black", linewidth=2, label="mean")
        if step - 1 < len(chosen):
            ax.axvline(chosen[step - 1], color="red", linestyle="--", label="chosen")
        ax.set_title(f"step {step}")
        ax.set_xlabel("cosine budget (epochs)" if schedule == "cosine" else "epoch (constant lr)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy (%)")
    from avalanche_sst.experiments.figure_style import legend_outside, save_figure

    legend_outside(axes[0][-1], fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python experiments/learning_curves.py``: see that script's docstring."""
    import argparse
    import sys

    from avalanche_sst.experiments.presets import PRESETS, get_preset

    parser = argparse.ArgumentParser(description="Validation learning curves of fine-tuning, to choose a "
                                                 "preset's epochs (issue 14, part 0).")
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the preset's seeds")
    parser.add_argument("--max-epochs", type=int, default=30,
                        help="constant: the probe's length; cosine: the largest budget of the default grid")
    parser.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                        help="cosine: one run per budget with the preset's schedule (exact); "
                             "constant: one probe per step at a constant lr (cheaper proxy)")
    parser.add_argument("--budgets", nargs="+", type=int, default=None,
                        help="cosine grid of epochs (default: 1/6, 1/3, 1/2, 2/3 and all of --max-epochs)")
    parser.add_argument("--min-delta", type=float, default=0.005, help="gain (a fraction) that still counts")
    parser.add_argument("--patience", type=float, default=5, help="epochs of curve needed after the plateau")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", help="override preset fields")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None, help="default: results/curves/<preset>")
    args = parser.parse_args(argv)
    changes = {k: v for k, v in {"data_root": args.data_root, "device": args.device}.items() if v is not None}
    preset = get_preset(args.preset).replace(**changes).with_settings(args.set)
    command = "python experiments/learning_curves.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = run_curves(preset, args.out or f"results/curves/{preset.name}", seeds=args.seeds,
                        max_epochs=args.max_epochs, schedule=args.schedule, budgets=args.budgets,
                        min_delta=args.min_delta, patience=args.patience, command=command.strip())
    print(f"chosen epochs per step: {result['chosen']} (plateaued: {result['plateaued']})")
    return 0
