"""The compared methods of Lee & Kim (2023, Table 7) that Avalanche lacks.

* ``hpo``: fine-tuning with the learning rate searched per step on the
  step's validation slice at momentum 0 (Li et al., ICLR 2020),
  :class:`~avalanche_sst.strategies.hpo.HPOStrategy`;
* ``dml``: two students with deep mutual learning, the better on the
  validation slice kept (Zhang et al., CVPR 2018),
  :class:`~avalanche_sst.strategies.dml.DMLStrategy`;
* ``lwm``: fine-tuning plus logit and Grad-CAM attention distillation from
  the previous step's model (Dhar et al., CVPR 2019),
  :class:`~avalanche_sst.plugins.lwm.LwMPlugin` on a SupervisedTemplate.

Each uses the common optimiser, per-step lr/epochs schedule and evaluator of
the other methods (``registry.common_kwargs``), and saves what lives outside
the model (DML's peer, LwM's teacher, HPO's chosen lrs) for resuming a sweep.

Optional ``Preset`` fields (read with ``getattr``; defaults in brackets):
``hpo_lrs`` [the effective rate of the preset's fine-tuning (``lr_finetune``
at ``momentum``) and 0.3, 0.1, 0.03 times it, at ``hpo_momentum``: ``elr_grid``],
``hpo_momentum`` [0.0],
``hpo_weight_decay`` [None: the preset's weight_decay],
``dml_temperature`` [1.0], ``dml_kl_weight`` [1.0],
``lwm_beta`` [1.0], ``lwm_gamma`` [1.0], ``lwm_temperature`` [1.0],
``lwm_layer`` [None: the last feature block].
"""

from __future__ import annotations

from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.experiments.method_state import plugin_of
from avalanche_sst.experiments.registry import Method, StrategyContext, common_kwargs, register
from avalanche_sst.plugins.lwm import LwMPlugin
from avalanche_sst.strategies.dml import DMLStrategy
from avalanche_sst.strategies.hpo import HPOStrategy, elr_grid

__all__ = ["build_dml", "build_hpo", "build_lwm"]


def _cfg(ctx: StrategyContext, name: str, default):
    return getattr(ctx.config, name, default)


def build_hpo(ctx: StrategyContext) -> HPOStrategy:
    return HPOStrategy(
        model=ctx.model,
        valid_stream=ctx.valid_stream,
        lrs=tuple(_cfg(ctx, "hpo_lrs", None) or elr_grid(ctx.config.lr_finetune, ctx.config.momentum,
                                                        _cfg(ctx, "hpo_momentum", 0.0))),
        momentum=_cfg(ctx, "hpo_momentum", 0.0),
        weight_decay=_cfg(ctx, "hpo_weight_decay", None),
        **common_kwargs(ctx),
    )


def build_dml(ctx: StrategyContext) -> DMLStrategy:
    return DMLStrategy(
        model=ctx.model,
        valid_stream=ctx.valid_stream,
        temperature=_cfg(ctx, "dml_temperature", 1.0),
        kl_weight=_cfg(ctx, "dml_kl_weight", 1.0),
        **common_kwargs(ctx),
    )


def build_lwm(ctx: StrategyContext) -> SupervisedTemplate:
    kwargs = common_kwargs(ctx)
    plugin = LwMPlugin(
        beta=_cfg(ctx, "lwm_beta", 1.0),
        gamma=_cfg(ctx, "lwm_gamma", 1.0),
        temperature=_cfg(ctx, "lwm_temperature", 1.0),
        layer=_cfg(ctx, "lwm_layer", None),
    )
    kwargs["plugins"] = [plugin, *kwargs["plugins"]]
    return SupervisedTemplate(model=ctx.model, **kwargs)


register(Method("hpo", build_hpo,
                "HPO: fine-tuning, lr searched per step on validation data at momentum 0 (Li et al. 2020)",
                lambda s: s.hpo_state_dict(), lambda s, state, done: s.load_hpo_state_dict(state)))
register(Method("dml", build_dml,
                "DML: two students, CE + mutual KL, the better on validation kept (Zhang et al. 2018)",
                lambda s: s.dml_state_dict(), lambda s, state, done: s.load_dml_state_dict(state)))
register(Method("lwm", build_lwm,
                "LwM: logit + Grad-CAM attention distillation from the previous model (Dhar et al. 2019)",
                lambda s: plugin_of(s, LwMPlugin).state_dict(),
                lambda s, state, done: plugin_of(s, LwMPlugin).load_state_dict(state, s.model)))
