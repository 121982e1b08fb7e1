"""Ada-QPacknet's baselines that Avalanche offers and the other method modules
do not register: ``packnet`` and ``si`` (task-incremental).

* ``packnet``: Avalanche's ``PackNetPlugin`` on a ``PackNetModel`` (Mallya &
  Lazebnik, CVPR 2018). It needs a BatchNorm-free network (``--set model=mlp``
  or ``cnn``) with one head shared by the tasks (labels restart at 0 in each
  task) and no weight decay (decay would move frozen weights). By default every
  task keeps an equal share of the weights: task k of n prunes
  ``1 - 1 / (n - k)`` of the weights still free (the last task prunes none).
  Every task trains ``epochs`` epochs (the preset's ``epochs_scratch``), the
  last ``post_prune_epochs`` (half) after pruning, lr ``lr_scratch`` with
  cosine annealing. Resuming: the masks live in the model's buffers; the
  frozen biases are frozen again on load. The method state records each
  task's capacity (:func:`packnet_capacity_fractions`), comparable with
  Ada-QPacknet's ``capacity_fraction``; the run's report
  (:func:`packnet_report`) gives ``capacity_total`` and ``capacity_mean`` in
  % as ``adaqpacknet_report`` does.
* ``si``: Avalanche's ``SynapticIntelligencePlugin`` (Zenke et al., ICML 2017)
  with the common optimiser and schedule, through :class:`CopyingSIPlugin`,
  which fixes Avalanche 0.6.0's snapshots on a CPU model (see there);
  ``si_lambda`` is Avalanche's default 0.1, not from the paper (the tables
  choose it on validation). Its importances and trajectories are the method state.
"""

from __future__ import annotations

from typing import Optional, Sequence

from avalanche.models.packnet import PackNetModel, PackNetPlugin, WeightAndBiasPackNetModule
from avalanche.training.plugins import SynapticIntelligencePlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.experiments.method_state import params_to_tensors, plugin_of, tensors_to_params
from avalanche_sst.experiments.methods.ada_qpacknet import single_head_model
from avalanche_sst.experiments.registry import Method, StrategyContext, common_kwargs, register, sgd
from avalanche_sst.plugins.schedule import StepwiseCosinePlugin

__all__ = ["CopyingSIPlugin", "build_packnet", "build_si", "equal_share_prune_proportions",
           "packnet_capacity_fractions", "packnet_report"]

def equal_share_prune_proportions(n_tasks: int) -> list[float]:
    """Task k prunes ``1 - 1/(n - k)`` of its free weights, so each task keeps 1/n of the layer."""
    if int(n_tasks) < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    return [1.0 - 1.0 / (n_tasks - k) for k in range(n_tasks)]

def build_packnet(ctx: StrategyContext, prune_proportion: Optional[float | Sequence[float]] = None,
                  epochs: Optional[int] = None, post_prune_epochs: Optional[int] = None) -> SupervisedTemplate:
    try:
        model = PackNetModel(single_head_model(ctx))
    except ValueError as err:
        raise ValueError(f"packnet needs a BatchNorm-free model (--set model=mlp or model=cnn): {err}") from None
    epochs = int(ctx.config.epochs_scratch if epochs is None else epochs)
    post = max(1, epochs // 2) if post_prune_epochs is None else int(post_prune_epochs)
    if not 1 <= post < epochs:
        raise ValueError(f"packnet needs 1 <= post_prune_epochs < epochs, got {post} and {epochs}; "
                         f"raise epochs (>= 2)")
    if prune_proportion is None:
        if ctx.benchmark is None:
            raise ValueError("packnet's default prune_proportion needs ctx.benchmark (the number of tasks)")
        prune_proportion = equal_share_prune_proportions(len(ctx.benchmark.train_stream))
    proportions = [float(prune_proportion)] if isinstance(prune_proportion, (int, float)) else \
        [float(p) for p in prune_proportion]
    if not proportions or any(not 0.0 <= p <= 1.0 for p in proportions):
        raise ValueError(f"prune_proportion must be in [0, 1] (one value, or one per task), got {prune_proportion}")

    def proportion_of_current_task(_exp_counter: int) -> float:
        # keyed by the tasks the model has frozen, not by the strategy's clock, so a resumed
        # run prunes its next task by the right share whatever its clock says
        return proportions[min(int(model.task_count), len(proportions) - 1)]

    kwargs = common_kwargs(ctx)
    kwargs["optimizer"] = sgd(ctx, model.parameters(), weight_decay=0.0)
    kwargs["train_epochs"] = epochs
    # PackNetPlugin replaces the optimizer in before_training_exp: it runs first, so the
    # schedule then anneals the new optimizer.
    kwargs["plugins"] = [PackNetPlugin(post_prune_epochs=post, prune_proportion=proportion_of_current_task),
                         StepwiseCosinePlugin(lrs=(ctx.config.lr_scratch,), epochs=(epochs,)), *ctx.plugins]
    return SupervisedTemplate(model=model, **kwargs)

#: Eq. 10's bits per kept weight at b = 32 with no codebook: the fp32 value and its mask bit.
PACKNET_BITS_PER_WEIGHT = 32 + 1

def packnet_capacity_fractions(model: PackNetModel) -> list[float]:
    """Capacity of each trained task, eq. 10 (Pietron et al. 2023) at b = 32 without codebooks:
    33 bits per weight the task owns (fp32 value + mask bit), over the fp32 bits of every wrapped
    Conv2d/Linear weight, head included (the unit of ``AdaQPackNet``'s ``capacity_fraction``,
    whose ``model_bits`` counts the same weights). The biases, which PackNet trains with the first
    task and freezes, are that task's fp32 tensors, as Ada-QPacknet's per-task biases are."""
    layers = [m for m in model.modules() if isinstance(m, WeightAndBiasPackNetModule)]
    total = 32 * sum(m.task_index.numel() for m in layers)
    biases = sum(m.wrappee.bias.numel() for m in layers if m.has_bias and m.wrappee.bias is not None)
    return [(sum(int((m.task_index == k).sum()) for m in layers) * PACKNET_BITS_PER_WEIGHT
             + (32 * biases if k == 0 else 0)) / total for k in range(int(model.task_count))]

def packnet_report(strategy) -> dict:
    """Table 2's ``capacity_total`` (%, summed over the trained tasks), Table 4's ``capacity_mean``
    (% per task) and ``capacity/task<i>``, in the unit of ``adaqpacknet_report``; ``owned_weights``
    is the % of the weights the tasks own (no mask or bias bits)."""
    caps = [100.0 * c for c in packnet_capacity_fractions(strategy.model)]
    layers = [m for m in strategy.model.modules() if isinstance(m, WeightAndBiasPackNetModule)]
    n_tasks = int(strategy.model.task_count)
    owned = sum(int((m.task_index < n_tasks).sum()) for m in layers)
    out = {"capacity_total": sum(caps), "capacity_mean": sum(caps) / max(len(caps), 1),
           "owned_weights": 100.0 * owned / sum(m.task_index.numel() for m in layers)}
    out.update({f"capacity/task{i}": c for i, c in enumerate(caps, start=1)})
    return out

def _packnet_state(strategy) -> dict:
    return {"capacity_fractions": packnet_capacity_fractions(strategy.model)}

def _packnet_load(strategy, state, done_exps) -> None:
    """``freeze_pruned`` turns off the biases' gradients, which no state dict records."""
    if done_exps:
        for m in strategy.model.modules():
            if isinstance(m, WeightAndBiasPackNetModule) and m.has_bias and m.wrappee.bias is not None:
                m.wrappee.bias.requires_grad = False

class CopyingSIPlugin(SynapticIntelligencePlugin):
    """Avalanche's SI plugin whose weight snapshots are copies.

    Avalanche 0.6.0 snapshots weights as ``param.detach().cpu().flatten()``: on a
    CPU model that is a view of the live parameter, so the optimiser step moves
    the "old" weights too. Every path-integral term ``g * (theta_new - theta_old)``
    (Zenke et al. eq. 3), hence every importance ``Omega`` (eq. 5) and the
    penalty, is then exactly 0 and SI trains as fine-tuning. (On CUDA ``.cpu()``
    copies and the bug does not show.) The two snapshots that must outlive an
    optimiser step are copied: the experience's start point (the anchor
    ``theta~`` of eq. 4 and the ``Delta`` of eq. 5) and each iteration's start.
    """

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        _own_storage(self.ewc_data[0])

    def before_training_iteration(self, strategy, **kwargs):
        super().before_training_iteration(strategy, **kwargs)
        _own_storage(self.syn_data["old_theta"])

def _own_storage(params: dict) -> None:
    for p in params.values():
        p.data = p.data.clone()

def build_si(ctx: StrategyContext, si_lambda: float = 0.1, eps: float = 1e-7) -> SupervisedTemplate:
    if float(si_lambda) < 0:
        raise ValueError(f"si_lambda must be >= 0, got {si_lambda}")
    kwargs = common_kwargs(ctx)
    kwargs["plugins"] = [*kwargs["plugins"], CopyingSIPlugin(si_lambda=float(si_lambda), eps=float(eps))]
    return SupervisedTemplate(model=ctx.model, **kwargs)

def _si_state(strategy) -> dict:
    si = plugin_of(strategy, SynapticIntelligencePlugin)
    return {"params": params_to_tensors(si.ewc_data[0]), "importance": params_to_tensors(si.ewc_data[1]),
            "syn": {name: params_to_tensors(group) for name, group in si.syn_data.items()}}

def _si_load(strategy, state, done_exps) -> None:
    si = plugin_of(strategy, SynapticIntelligencePlugin)
    # Avalanche's SI keeps its state on the CPU on purpose (``.cpu()`` on write, ``.to(device)`` on use)
    si.ewc_data = (tensors_to_params(state["params"], "cpu"), tensors_to_params(state["importance"], "cpu"))
    si.syn_data = {name: tensors_to_params(group, "cpu") for name, group in state["syn"].items()}

register(Method("packnet", build_packnet,
                "PackNet: iterative magnitude pruning, one frozen weight subset per task (Avalanche PackNetPlugin)",
                state_dict=_packnet_state, load_state_dict=_packnet_load, settings=("task_incremental",),
                report=packnet_report))
register(Method("si", build_si, "Synaptic Intelligence (Avalanche SynapticIntelligence)", _si_state, _si_load,
                settings=("task_incremental",)))
