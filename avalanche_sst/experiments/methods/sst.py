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


register(Method("sst", build_sst, "the SST framework: multi-step SST + diverse re-init + AOD + MSL (Lee & Kim 2023)",
                lambda strategy: strategy.state_dict(),
                lambda strategy, state, done_exps: strategy.load_state_dict(state),
                accepted=_sst_arguments))
