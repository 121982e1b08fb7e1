"""Avalanche's own strategies as sweep methods: fine-tuning (Naive), LwF, EWC,
RWalk, Cumulative and Replay, with the state each keeps outside the model
saved for resuming a sweep (LwF's teacher, EWC's and RWalk's importances,
Replay's buffer, Cumulative's concatenation)."""

from __future__ import annotations

import copy

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import EWC, Cumulative, LwF, Naive, Replay
from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin, RWalkPlugin
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import ParamData

from avalanche_sst.experiments.method_state import params_to_tensors, plugin_of, tensors_to_params
from avalanche_sst.experiments.registry import SETTINGS, Method, StrategyContext, common_kwargs, register



# --- fine-tuning ----------------------------------------------------------------


BUDGETS = ("preset", "sst")


def step_epochs(ctx: StrategyContext, method: str, budget: str, epochs) -> tuple | None:
    """Per-step epochs: explicit ``epochs``, the framework's cost (``budget="sst"``,
    :func:`~avalanche_sst.experiments.budget.preset_matched_epochs`), or the preset's (None)."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}; e.g. finetune:budget=sst")
    if epochs is not None and budget != "preset":
        raise ValueError("give either epochs=(...) or budget='sst', not both")
    if epochs is not None:
        return tuple(int(e) for e in (epochs if isinstance(epochs, (tuple, list)) else (epochs,)))
    if budget == "sst":
        from avalanche_sst.experiments.budget import preset_matched_epochs

        return preset_matched_epochs(ctx.config, ctx.benchmark.train_stream, ctx.valid_stream, method)
    return None


def build_finetune(ctx: StrategyContext, epochs: tuple | None = None, budget: str = "preset") -> Naive:
    """``epochs``: per-step epochs instead of the preset's; ``budget="sst"``: the
    framework's cost per step (a compute-matched baseline)."""
    return Naive(model=ctx.model, **common_kwargs(ctx, step_epochs(ctx, "finetune", budget, epochs)))


# --- LwF: the previous model is the teacher ---------------------------------------


def build_lwf(ctx: StrategyContext, alpha: float | None = None, temperature: float | None = None,
              epochs: tuple | None = None, budget: str = "preset") -> LwF:
    cfg = ctx.config
    return LwF(model=ctx.model, alpha=cfg.lwf_alpha if alpha is None else alpha,
               temperature=cfg.lwf_temperature if temperature is None else temperature,
               **common_kwargs(ctx, step_epochs(ctx, "lwf", budget, epochs)))


def _lwf_state(strategy) -> dict:
    lwf = plugin_of(strategy, LwFPlugin).lwf
    state = {"expcount": lwf.expcount}
    if lwf.prev_model is not None:
        state["prev_model"] = lwf.prev_model.state_dict()
    state["prev_classes"] = {int(t): sorted(int(c) for c in cs) for t, cs in lwf.prev_classes_by_task.items()}
    return state


def _lwf_load(strategy, state, done_exps) -> None:
    lwf = plugin_of(strategy, LwFPlugin).lwf
    lwf.expcount = int(state["expcount"])
    if "prev_model" in state:
        # on the strategy's device: the model being resumed is still on the CPU here, and
        # Avalanche moves only the trained model, never the teacher
        lwf.prev_model = copy.deepcopy(strategy.model).to(strategy.device)
        # The teacher was copied before the step's evaluation grew heads for later
        # tasks: those extra heads are never distilled from, the rest must match.
        result = lwf.prev_model.load_state_dict(state["prev_model"], strict=False)
        if result.unexpected_keys or any(".classifiers." not in k and "active_units" not in k
                                         for k in result.missing_keys):
            raise RuntimeError(f"LwF teacher does not fit the model: {result}")
    lwf.prev_classes_by_task.clear()
    for t, cs in state["prev_classes"].items():
        lwf.prev_classes_by_task[int(t)] = set(cs)


# --- EWC: saved parameters and Fisher importances per experience -----------------


def build_ewc(ctx: StrategyContext, ewc_lambda: float | None = None, epochs: tuple | None = None,
              budget: str = "preset") -> EWC:
    lam = ctx.config.ewc_lambda if ewc_lambda is None else ewc_lambda
    return EWC(model=ctx.model, ewc_lambda=lam, **common_kwargs(ctx, step_epochs(ctx, "ewc", budget, epochs)))


def _ewc_state(strategy) -> dict:
    ewc = plugin_of(strategy, EWCPlugin)
    return {"saved_params": {int(t): params_to_tensors(ps) for t, ps in ewc.saved_params.items()},
            "importances": {int(t): params_to_tensors(ps) for t, ps in ewc.importances.items()}}


def _ewc_load(strategy, state, done_exps) -> None:
    ewc = plugin_of(strategy, EWCPlugin)
    for name in ("saved_params", "importances"):
        target = getattr(ewc, name)
        target.clear()
        # Avalanche computes them on the strategy's device (zerolike_params_dict of the model)
        target.update({int(t): tensors_to_params(ps, strategy.device) for t, ps in state[name].items()})


# --- RWalk (Chaudhry et al. 2018): Avalanche's RWalkPlugin with two guards -------


def rwalk_penalties(importance: dict, scores: dict) -> dict:
    """RWalk's per-weight penalty (Chaudhry et al. 2018, eq. 8): F / max F + relu(s) / max s.

    As Avalanche's ``RWalkPlugin.after_training_exp`` (each term scaled into
    [0, 1] by its largest value over all weights, ``max s`` taken before the
    relu), except that a term whose largest value is not positive adds 0
    instead of 0/0 = NaN: the scores stay 0 when a step ends before its first
    ``delta_t`` checkpoint, the importances when no gradient reached a weight.
    ``importance``, ``scores``: ``{name: tensor}`` of equal shapes per name;
    only names in both get a penalty.
    """
    names = [k for k in scores if k in importance]
    max_imp = max((float(importance[k].max()) for k in names), default=0.0)
    max_score = max((float(scores[k].max()) for k in names), default=0.0)
    out = {}
    for k in names:
        imp = importance[k] / max_imp if max_imp > 0 else torch.zeros_like(importance[k])
        score = torch.relu(scores[k]) / max_score if max_score > 0 else torch.zeros_like(scores[k])
        out[k] = imp + score
    return out


class GuardedRWalkPlugin(RWalkPlugin):
    """Avalanche's RWalkPlugin, unchanged except for two bugs of avalanche-lib 0.6.0.

    * ``_update_grad`` (the gradient for the importances, before every
      iteration) puts the model in eval mode and leaves it there, so the
      whole step trained in eval mode: BatchNorm normalised with its initial
      running statistics and never updated them. From scratch at lr 0.1 this
      made ResNet-8's loss NaN within 6 iterations of step 1 in the sweep's
      ``m2kd_fig4`` cpu preset; the model's mode is restored here.
    * the penalties' normalisation divides by the largest score, 0 when the
      step had fewer iterations than ``delta_t`` (0/0 = NaN in every later
      loss): :func:`rwalk_penalties` gives that term 0 instead.
    """

    def _update_grad(self, strategy):
        was_training = strategy.model.training
        try:
            super()._update_grad(strategy)
        finally:
            strategy.model.train(was_training)

    def after_training_exp(self, strategy, *args, **kwargs):
        super().after_training_exp(strategy, *args, **kwargs)
        # Recomputed from the same terms (shapes already expanded by super), without the 0/0.
        imp = {k: p.data for k, p in self.exp_importance.items()}
        scores = {k: p.expand(imp[k].shape) for k, p in self.exp_scores.items() if k in imp}
        self.exp_penalties = {k: ParamData(k, device=v.device, init_tensor=v)
                              for k, v in rwalk_penalties(imp, scores).items()}


def build_rwalk(ctx: StrategyContext, ewc_lambda: float = 0.1, ewc_alpha: float = 0.9,
                delta_t: int = 10) -> SupervisedTemplate:
    """Avalanche's RWalk defaults (``ewc_lambda`` 0.1, ``ewc_alpha`` 0.9, ``delta_t`` 10), no replay."""
    kwargs = common_kwargs(ctx)
    kwargs["plugins"] = [GuardedRWalkPlugin(ewc_lambda=ewc_lambda, ewc_alpha=ewc_alpha, delta_t=delta_t),
                         *kwargs["plugins"]]
    return SupervisedTemplate(model=ctx.model, **kwargs)


# What a later step reads: the EWC++ running importance (continued across steps) and
# the last step's parameters, scores and penalties. The checkpoint_* and iter_* rest
# are reset at ``before_training`` or rewritten before they are read.
_RWALK_STATE = ("iter_importance", "exp_params", "exp_scores", "exp_penalties")


def _rwalk_state(strategy) -> dict:
    rwalk = plugin_of(strategy, RWalkPlugin)
    return {name: params_to_tensors(getattr(rwalk, name)) for name in _RWALK_STATE
            if getattr(rwalk, name) is not None}


def _rwalk_load(strategy, state, done_exps) -> None:
    rwalk = plugin_of(strategy, RWalkPlugin)
    device = strategy.device
    for name in _RWALK_STATE:
        params = {k: ParamData(k, init_tensor=t.to(device), device=device) for k, t in state.get(name, {}).items()}
        setattr(rwalk, name, params if name in state else None)
    # After a step Avalanche's plugin aliases exp_importance to iter_importance.
    rwalk.exp_importance = rwalk.iter_importance


# --- Cumulative: rebuild the concatenation of the finished experiences ------------


def _cumulative_load(strategy, state, done_exps) -> None:
    strategy.dataset = None
    for exp in done_exps:
        data = exp.dataset
        strategy.dataset = data if strategy.dataset is None else strategy.dataset.concat(data)


# --- Replay: an experience-balanced buffer, refilled deterministically on resume --


class SeededBufferUpdate(SupervisedPlugin):
    """Seeds the global RNG right before Avalanche's ReplayPlugin samples its buffer.

    The buffer's reservoir sampling draws from the global RNG after a whole
    step of training; seeding it per experience makes the buffer a function of
    (seed, experience), so a resumed run refills it exactly.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def reseed(self, experience_id: int) -> None:
        torch.manual_seed(self.seed * 1000 + 500 + experience_id)

    def after_training_exp(self, strategy, **kwargs):
        self.reseed(strategy.experience.current_experience)


def build_replay(ctx: StrategyContext, mem_size: int = 200) -> Replay:
    kwargs = common_kwargs(ctx)
    kwargs["plugins"] = [SeededBufferUpdate(ctx.seed), *kwargs["plugins"]]  # before the ReplayPlugin
    return Replay(model=ctx.model, mem_size=mem_size, **kwargs)


def _replay_load(strategy, state, done_exps) -> None:
    seeding = plugin_of(strategy, SeededBufferUpdate)
    policy = plugin_of(strategy, ReplayPlugin).storage_policy
    for exp in done_exps:
        seeding.reseed(exp.current_experience)
        policy.post_adapt(strategy, exp)


register(Method("finetune", build_finetune,
                "fine-tuning: Avalanche Naive, each step continues from the previous model", settings=SETTINGS))
register(Method("lwf", build_lwf, "Learning without Forgetting (Avalanche LwF)", _lwf_state, _lwf_load,
                settings=SETTINGS))
register(Method("ewc", build_ewc, "Elastic Weight Consolidation (Avalanche EWC)", _ewc_state, _ewc_load,
                settings=SETTINGS))
register(Method("rwalk", build_rwalk, "RWalk: Riemannian walk (Avalanche RWalkPlugin, guarded)", _rwalk_state,
                _rwalk_load, settings=SETTINGS))
register(Method("cumulative", lambda ctx: Cumulative(model=ctx.model, **common_kwargs(ctx)),
                "Cumulative: all data so far (upper bound)", load_state_dict=_cumulative_load, settings=SETTINGS))
register(Method("replay", build_replay, "Replay: experience-balanced buffer of mem_size samples (Avalanche)",
                load_state_dict=_replay_load, settings=SETTINGS))
