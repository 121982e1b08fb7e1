"""Fig. 3 of the SST paper: the filter scaling factors |gamma| of a pre-trained, a BST and an SST network.

Built directly from a ``SupervisedTemplate`` with ``SSTPlugin``: per seed, a
model is pre-trained on the first part, then BST and SST each train a copy of
it with the same lam, epochs and batches. :func:`run_fig3` writes the seeds'
statistics (``fig3_means.csv``), every |gamma| (``fig3_gammas.csv``), the
runs' Top-1 and seconds (``runs.csv``) and a histogram (``fig3.png``).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import torch

from avalanche_sst.experiments.presets import Preset
from avalanche_sst.experiments.tables import mean_std

FIG3_ROWS = ("Pre-trained", "BST", "SST")
FIG3_COLS = ("Top-1 (%)", "mean abs(gamma) (all)", "mean abs(gamma) (non-useless)", "abs(gamma) <= zero_tol (%)")
# each column's field in a seed's Fig. 3 statistics (fig3_means.csv) and its scale to the table
FIG3_KEYS = dict(zip(FIG3_COLS, (("top1", 100.0), ("mean_all", 1.0), ("mean_remaining", 1.0), ("fraction_zero", 100.0))))


def _abs_gammas(model) -> torch.Tensor:
    from avalanche_sst.models import scaling_factors

    return torch.cat([f.bn.weight.detach().abs().flatten().cpu() for f in scaling_factors(model)])


def gamma_stats(abs_gamma: torch.Tensor, target_ratio: float, zero_tol: float) -> dict:
    """Mean |gamma| of all factors and of the non-useless ones (all but the Target_r smallest)."""
    from avalanche_sst.functional.sparsity import num_selected

    values = torch.sort(abs_gamma.double()).values
    k = num_selected(target_ratio, len(values))
    return {
        "n": len(values),
        "mean_all": float(values.mean()),
        "mean_remaining": float(values[k:].mean()),
        "fraction_zero": float((values <= zero_tol).double().mean()),
    }


def _sst_args(preset: Preset) -> dict:
    from avalanche_sst.plugins.sst import DEFAULT_LAM, DEFAULT_ZERO_TOL
    from avalanche_sst.functional.sparsity import DEFAULT_CUT_FRACTION, DEFAULT_TARGET_RATIO

    kw = preset.sst_kwargs or {}
    return dict(target_ratio=kw.get("target_ratio", DEFAULT_TARGET_RATIO), lam=kw.get("lam", DEFAULT_LAM),
                cut_fraction=kw.get("cut_fraction", DEFAULT_CUT_FRACTION),
                zero_tol=kw.get("zero_tol", DEFAULT_ZERO_TOL))


def _fig3_seed(preset: Preset, seed: int, data, seed_dir: Path, log) -> dict:
    from avalanche.training.templates import SupervisedTemplate

    from avalanche_sst.experiments.provenance import code_provenance
    from avalanche_sst.experiments.sweep import ACC_KEY, build_benchmark, build_model
    from avalanche_sst.metrics import make_evaluator
    from avalanche_sst.metrics.cost import CostMeter
    from avalanche_sst.plugins.schedule import StepwiseCosinePlugin
    from avalanche_sst.plugins.sst import SSTPlugin

    device = torch.device(preset.device)
    bench = build_benchmark(preset, seed, data)
    exp = bench.train_stream[0]
    args = _sst_args(preset)

    def phase(model, name, lr, epochs, plugins):
        torch.manual_seed(seed * 1000 + 1)  # BST and SST see the same batches
        meter = CostMeter()
        strategy = SupervisedTemplate(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=preset.momentum,
                                                   weight_decay=preset.weight_decay),
            criterion=torch.nn.CrossEntropyLoss(), train_mb_size=preset.batch_size, train_epochs=epochs,
            eval_mb_size=preset.eval_batch_size, device=device, evaluator=make_evaluator(seed_dir / name),
            plugins=[StepwiseCosinePlugin(lrs=(lr,), epochs=(epochs,)), *plugins, meter], eval_every=-1,
        )
        t0 = time.perf_counter()
        strategy.train(exp, eval_streams=[])
        acc = float(strategy.eval(bench.test_stream)[ACC_KEY])
        for logger in getattr(strategy.evaluator, "loggers", []):
            if callable(getattr(logger, "close", None)):
                logger.close()
        return strategy.model, acc, time.perf_counter() - t0, meter.step_costs[-1]

    model = build_model(preset, bench, seed)
    pre, pre_acc, pre_s, pre_cost = phase(model, "pretrain", preset.lr_scratch, preset.epochs_scratch, [])
    out = {"Pre-trained": (pre, pre_acc, pre_s, pre_cost)}
    for name, selective in (("BST", False), ("SST", True)):
        plugin = SSTPlugin(selective=selective, log_prefix=name, **args)
        m, acc, secs, cost = phase(copy.deepcopy(pre), name.lower(), preset.lr_scratch, preset.sst_epochs, [plugin])
        out[name] = (m, acc, secs, pre_cost + cost)  # its cost includes the pre-training it starts from
    result = {"provenance": code_provenance()}
    for name, (m, acc, secs, cost) in out.items():
        g = _abs_gammas(m)
        result[name] = {"top1": acc, "seconds": secs, "cost": cost, "abs_gamma": g.tolist(),
                        **gamma_stats(g, args["target_ratio"], args["zero_tol"])}
        log(f"[fig3 seed {seed}] {name}: top-1 {100 * acc:.2f}%, mean |gamma| {result[name]['mean_all']:.4f}, "
            f"non-useless {result[name]['mean_remaining']:.4f}, at zero {100 * result[name]['fraction_zero']:.1f}%")
    return result


def run_fig3(spec, preset, out_dir, data, log):
    """Run (or resume: a seed with ``done.json`` is read back) Fig. 3's seeds and write its files.

    :returns: ``(cells, sweeps, models)`` as ``run_table`` records them, cells ``(mean, std, n)``.
    """
    (out_dir / "preset.json").write_text(json.dumps(preset.to_dict(), indent=2))
    if preset.num_threads:
        torch.set_num_threads(preset.num_threads)
    if preset.flush_denormal:
        torch.set_flush_denormal(True)
    per_seed = {}
    for seed in preset.seeds:
        seed_dir = out_dir / f"seed{seed}"
        done = seed_dir / "done.json"
        if done.exists():
            per_seed[seed] = json.loads(done.read_text())
            log(f"[fig3 seed {seed}] finished earlier")
            continue
        seed_dir.mkdir(parents=True, exist_ok=True)
        per_seed[seed] = _fig3_seed(preset, seed, data, seed_dir, log)
        done.write_text(json.dumps(per_seed[seed]))

    args = _sst_args(preset)
    runs = ["method,seed,step,top1,seconds,cost,git_commit,git_dirty"]  # cost, commit: seeds run before, blank
    stats = ["network,seed,n,top1,mean_all,mean_remaining,fraction_zero,target_ratio,zero_tol"]
    gammas = ["network,seed,abs_gamma"]
    for seed, res in per_seed.items():
        for name in FIG3_ROWS:
            r = res[name]
            prov = res.get("provenance", {})
            cost = f"{r['cost']:.1f}" if "cost" in r else ""
            dirty = "" if prov.get("git_dirty") is None else str(prov["git_dirty"])
            runs.append(f"{name},{seed},1,{r['top1']:.6f},{r['seconds']:.1f},{cost},{prov.get('git_commit') or ''},{dirty}")
            stats.append(f"{name},{seed},{r['n']},{r['top1']:.6f},{r['mean_all']:.6f},{r['mean_remaining']:.6f},"
                         f"{r['fraction_zero']:.6f},{args['target_ratio']},{args['zero_tol']}")
            gammas += [f"{name},{seed},{v:.6g}" for v in r["abs_gamma"]]
    (out_dir / "runs.csv").write_text("\n".join(runs) + "\n")
    (out_dir / "fig3_means.csv").write_text("\n".join(stats) + "\n")
    (out_dir / "fig3_gammas.csv").write_text("\n".join(gammas) + "\n")

    cells = {}
    for name in FIG3_ROWS:
        for col, (key, scale) in FIG3_KEYS.items():
            values = [scale * res[name][key] for res in per_seed.values()]
            cells[name, col] = (*mean_std(values), len(values))
    _plot_fig3(per_seed, args["target_ratio"], out_dir / "fig3.png", title=f"{preset.dataset} / {preset.model}")
    return cells, ["."], {".": preset.model}


def _plot_fig3(per_seed: dict, target_ratio: float, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avalanche_sst.experiments.figure_style import legend_outside, method_styles, save_figure
    from avalanche_sst.functional.sparsity import num_selected

    colors = {name: style["color"] for name, style in method_styles(FIG3_ROWS).items()}
    pooled, remaining = {}, {}
    for name in FIG3_ROWS:
        pooled[name] = [v for res in per_seed.values() for v in res[name]["abs_gamma"]]
        rem = []
        for res in per_seed.values():
            vals = sorted(res[name]["abs_gamma"])
            rem += vals[num_selected(target_ratio, len(vals)):]
        remaining[name] = rem
    top = max(max(v) for v in pooled.values()) or 1.0
    bins = [top * i / 40 for i in range(41)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].hist(pooled["Pre-trained"], bins=bins, color=colors["Pre-trained"], alpha=0.8, label="Pre-trained")
    axes[0].set_title("(a) pre-trained")
    for name in ("BST", "SST"):
        axes[1].hist(pooled[name], bins=bins, color=colors[name], alpha=0.55, label=name)
    axes[1].set_title("(b) after BST and SST")
    for name in FIG3_ROWS:
        axes[2].hist(remaining[name], bins=bins, color=colors[name], alpha=0.45, label=name)
        mean = statistics.fmean(remaining[name]) if remaining[name] else 0.0
        axes[2].axvline(mean, color=colors[name], linestyle="--", label=f"{name} mean {mean:.3f}")
    axes[2].set_title(f"(c) non-useless (all but the {target_ratio:g} smallest)")
    for ax in axes:
        ax.set_xlabel("|gamma|")
        ax.set_ylabel("factors")
        legend_outside(ax, where="below", fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)

