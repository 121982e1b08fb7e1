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
  Ada-QPacknet's ``capacity_fraction``.
* ``si``: Avalanche's ``SynapticIntelligence`` (Zenke et al., ICML 2017) with
  the common optimiser and schedule; ``si_lambda`` is not from the paper
  (untuned default 0.1). Its importances and trajectories are the method state.
"""

from __future__ import annotations

from typing import Optional, Sequence

from avalanche.models.packnet import PackNetModel, PackNetPlugin, WeightAndBiasPackNetModule
from avalanche.training import SynapticIntelligence
from avalanche.training.plugins import SynapticIntelligencePlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.experiments.method_state import params_to_tensors, plugin_of, tensors_to_params
from avalanche_sst.experiments.methods.ada_qpacknet import single_head_model
from avalanche_sst.experiments.registry import Method, StrategyContext, common_kwargs, register, sgd
from avalanche_sst.plugins.schedule import StepwiseCosinePlugin

__all__ = ["build_packnet", "build_si", "equal_share_prune_proportions", "packnet_capacity_fractions"]

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

def packnet_capacity_fractions(model: PackNetModel) -> list[float]:
    """Capacity of each trained task in the form of eq. 10 without quantization: its own
    weights at 32 bits plus one mask bit each, over the fp32 bits of all wrapped weights
    (the unit of ``AdaQPackNet``'s ``capacity_fraction``). Shared biases are not counted."""
    layers = [m for m in model.modules() if isinstance(m, WeightAndBiasPackNetModule)]
    total = 32 * sum(m.task_index.numel() for m in layers)
    return [sum(int((m.task_index == k).sum()) for m in layers) * 33 / total for k in range(int(model.task_count))]

def _packnet_state(strategy) -> dict:
    return {"capacity_fractions": packnet_capacity_fractions(strategy.model)}

def _packnet_load(strategy, state, done_exps) -> None:
    """``freeze_pruned`` turns off the biases' gradients, which no state dict records."""
    if done_exps:
        for m in strategy.model.modules():
            if isinstance(m, WeightAndBiasPackNetModule) and m.has_bias and m.wrappee.bias is not None:
                m.wrappee.bias.requires_grad = False

def build_si(ctx: StrategyContext, si_lambda: float = 0.1, eps: float = 1e-7) -> SupervisedTemplate:
    return SynapticIntelligence(model=ctx.model, si_lambda=si_lambda, eps=eps, **common_kwargs(ctx))

def _si_state(strategy) -> dict:
    si = plugin_of(strategy, SynapticIntelligencePlugin)
    return {"params": params_to_tensors(si.ewc_data[0]), "importance": params_to_tensors(si.ewc_data[1]),
            "syn": {name: params_to_tensors(group) for name, group in si.syn_data.items()}}

def _si_load(strategy, state, done_exps) -> None:
    si = plugin_of(strategy, SynapticIntelligencePlugin)
    si.ewc_data = (tensors_to_params(state["params"]), tensors_to_params(state["importance"]))
    si.syn_data = {name: tensors_to_params(group) for name, group in state["syn"].items()}

register(Method("packnet", build_packnet,
                "PackNet: iterative magnitude pruning, one frozen weight subset per task (Avalanche PackNetPlugin)",
                state_dict=_packnet_state, load_state_dict=_packnet_load, settings=("task_incremental",)))
register(Method("si", build_si, "Synaptic Intelligence (Avalanche SynapticIntelligence)", _si_state, _si_load,
                settings=("task_incremental",)))
