"""Ada-QPacknet (Pietron et al., ECAI 2023) as a sweep method: ``adaqpacknet``.

Task-incremental only. The builder's keyword arguments are
:class:`~avalanche_sst.strategies.ada_qpacknet.AdaQPackNet`'s, with the
paper's defaults (P_S = 16, sparsity in [0.45, 0.85], alpha 0.9, beta 0.1,
delta 1 point, 5 search and 50 full epochs, 2..8 bits, k-means, Adam
0.01 -> 1e-4); a preset scales them through ``method_kwargs["adaqpacknet"]``.
The paper's Table 4 ablations are variants:

* ``adaqpacknet:quantize=False``: adaptive pruning only (fp32 values, 32 bits a position);
* ``adaqpacknet:prune=False``: quantization only (every free position, no search).

The model is the preset's network with one head sized for a task's classes
(a multi-head model built by the sweep is rebuilt single-headed: the head is
per task inside the quantized model). Resuming needs no rebuild step: the
quantized model's ``load_state_dict`` creates the task slots it finds; the
per-task reports (bits, capacity, accuracies) are the method state.
"""

from __future__ import annotations

from typing import Optional

from torch import nn
from avalanche.models import MultiTaskModule

from avalanche_sst.experiments.registry import Method, StrategyContext, register
from avalanche_sst.strategies.ada_qpacknet import AdaQPackNet

__all__ = ["build_adaqpacknet", "single_head_model"]


def single_head_model(ctx: StrategyContext) -> nn.Module:
    """``ctx.model``, or the preset's network rebuilt with one plain head if the sweep made it multi-head."""
    if not isinstance(ctx.model, MultiTaskModule):
        return ctx.model
    from avalanche_sst.models import build_model

    bench = ctx.benchmark
    if bench is None:
        raise ValueError("a multi-head ctx.model needs ctx.benchmark to rebuild a single-head network; "
                         "set the preset's multi_head=False")
    image = bench.test_stream[0].dataset[0][0]
    return build_model(ctx.config.model, num_classes=bench.num_classes, in_channels=int(image.shape[0]),
                       image_size=int(image.shape[-1]))


def build_adaqpacknet(ctx: StrategyContext, population: int = 16, v_min: float = 0.45, v_max: float = 0.85,
                      alpha: float = 0.9, beta: float = 0.1, delta: float = 1.0, search_epochs: int = 5,
                      full_epochs: int = 50, start_bits: int = 2, max_bits: int = 8, quantizer: str = "kmeans",
                      prune: bool = True, quantize: bool = True, lr: float = 0.01, lr_min: float = 1e-4,
                      head: Optional[str] = None) -> AdaQPackNet:
    return AdaQPackNet(
        model=single_head_model(ctx), valid_stream=ctx.valid_stream, population=population, v_min=v_min,
        v_max=v_max, alpha=alpha, beta=beta, delta=delta, search_epochs=search_epochs, full_epochs=full_epochs,
        start_bits=start_bits, max_bits=max_bits, quantizer=quantizer, prune=prune, quantize=quantize, lr=lr,
        lr_min=lr_min, head=head, seed=ctx.seed,
        unseen_tasks="zeros",  # the sweep evaluates the whole test stream and scores the seen tasks only
        train_mb_size=ctx.config.batch_size,
        eval_mb_size=ctx.config.eval_batch_size, device=ctx.device, evaluator=ctx.evaluator,
        plugins=list(ctx.plugins), eval_every=-1,
    )


def _state(strategy: AdaQPackNet) -> dict:
    return strategy.method_state()


def _load(strategy: AdaQPackNet, state: dict, done_exps) -> None:
    strategy.load_method_state(state)


def adaqpacknet_report(strategy: AdaQPackNet) -> dict:
    """Tables 2-4's capacity: the share (%) of the fp32 model's bits each task holds (eq. 10), their
    sum (``capacity_total``, Table 2) and their mean over the tasks trained (``capacity_mean``, Table 4);
    per task also the bits chosen, the mean density kept, and validation accuracy (%) before and after
    quantization."""
    total = 100.0 * sum(r["capacity_fraction"] for r in strategy.task_reports)
    # Table 4's unit: the mean share of one task
    out = {"capacity_total": total, "capacity_mean": total / max(len(strategy.task_reports), 1)}
    for i, r in enumerate(strategy.task_reports, start=1):
        out[f"capacity/task{i}"] = 100.0 * r["capacity_fraction"]
        out[f"bits/task{i}"] = r["bits"]
        out[f"density/task{i}"] = sum(r["density"]) / max(len(r["density"]), 1)
        out[f"accuracy_fp32/task{i}"] = 100.0 * r["accuracy_fp32"]
        out[f"accuracy_quantized/task{i}"] = 100.0 * r["accuracy_quantized"]
    return out


register(Method(
    "adaqpacknet", build_adaqpacknet,
    "Ada-QPacknet: adaptive lottery-ticket pruning + k-means quantization, forget-free (Pietron et al. 2023)",
    _state, _load, settings=("task_incremental",), report=adaqpacknet_report, lr_args=("lr", "lr_min"),
))
