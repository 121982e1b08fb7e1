"""The SST framework of Lee & Kim (2023) as a sweep method: ``sst``."""

from __future__ import annotations

from avalanche_sst.experiments.registry import Method, StrategyContext, register


def build_sst(ctx: StrategyContext, **overrides):
    """``MultiStepSST`` with the preset's phases; ``overrides`` are MultiStepSST keyword arguments."""
    from avalanche_sst.strategies import MultiStepSST

    cfg = ctx.config
    kwargs = dict(
        valid_stream=ctx.valid_stream,
        num_experiences=len(ctx.benchmark.train_stream) if ctx.benchmark is not None else len(cfg.ratios),
        epochs_scratch=cfg.epochs_scratch, epochs_sst=cfg.sst_epochs, epochs_aod=cfg.aod_epochs,
        lr_scratch=cfg.lr_scratch, lr_sst=cfg.lr_scratch, lr_aod=cfg.lr_finetune,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        train_mb_size=cfg.batch_size, eval_mb_size=cfg.eval_batch_size,
        device=ctx.device, evaluator=ctx.evaluator, plugins=ctx.plugins,
        seed=ctx.seed,  # each seed its own re-init draws (issue 14)
    )
    kwargs.update(cfg.sst_kwargs)
    kwargs.update(overrides)
    return MultiStepSST(model=ctx.model, **kwargs)


# Set from the run's context, not by a variant.
_FROM_CONTEXT = {"model", "device", "evaluator", "plugins", "phase_plugins", "valid_stream"}


def _sst_arguments() -> set[str]:
    import inspect

    from avalanche_sst.strategies import MultiStepSST

    return {p.name for p in inspect.signature(MultiStepSST.__init__).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in _FROM_CONTEXT}


def build_sst_plus(ctx: StrategyContext, **overrides):
    """``build_sst`` with ``SST_PLUS_OPTIONS`` (the options kept on validation); ``overrides`` win."""
    from avalanche_sst.strategies import SST_PLUS_OPTIONS

    return build_sst(ctx, **{**SST_PLUS_OPTIONS, **overrides})


def _save(strategy):
    return strategy.state_dict()


def _load(strategy, state, done_exps):
    strategy.load_state_dict(state)


register(Method("sst", build_sst, "the SST framework: multi-step SST + diverse re-init + AOD + MSL (Lee & Kim 2023)",
                _save, _load, accepted=_sst_arguments))
register(Method("sst_plus", build_sst_plus, "the SST framework with the options beyond the paper kept on the "
                "validation slices (SST_PLUS_OPTIONS: proximal SST step, per-layer re-init range)",
                _save, _load, accepted=_sst_arguments))
