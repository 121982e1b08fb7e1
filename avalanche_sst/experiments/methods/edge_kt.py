"""The edge method of Zhao, Chen & Zhao (filter pruning + selective layer-wise
knowledge transfer, seed 004) as sweep methods:

* ``edge_kt``: teacher -> compressed student -> on-device step with knowledge
  transfer (new_class: l1*J1 + l2*sum J_b + l3*J3 on the new data; unseen_class:
  J1 + sum J_b on unlabelled seen-class images);
* ``edge_finetune``: the same student's incremental step with cross entropy and
  no teacher (new_class; the paper's "w/o KT");
* ``edge_independent``: the student trained on the seen classes with labels,
  no teacher (unseen_class; Table 7's "Independent").

Epochs and learning rates come from the preset (``epochs_scratch``/
``lr_scratch`` for the teacher and the student, ``epochs_finetune``/
``lr_finetune`` for the incremental step); ``Preset.method_kwargs["edge_kt"]``
and variants (``edge_kt:threshold=0.8``) override any builder argument.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Optional

from avalanche_sst.experiments.presets import NOT_RESULT_FIELDS
from avalanche_sst.experiments.registry import Method, StrategyContext, register

# Preset fields the cloud teacher does not depend on: those no run depends on, and
# what only the students or the incremental step read.
_NOT_TEACHER = {*NOT_RESULT_FIELDS, "epochs_finetune", "lr_finetune", "evaluate_on", "device", "sst_epochs",
                "aod_epochs", "sst_kwargs", "lwf_alpha", "lwf_temperature", "ewc_lambda"}


def teacher_cache_path(ctx: StrategyContext, select_on_validation: bool) -> Optional[Path]:
    """The sweep-shared file of the teacher this run trains: keyed by every preset field
    the teacher depends on, the seed and the selection rule."""
    if ctx.cache_dir is None or not dataclasses.is_dataclass(ctx.config):
        return None
    fields = {k: v for k, v in dataclasses.asdict(ctx.config).items() if k not in _NOT_TEACHER}
    key = json.dumps({"preset": fields, "seed": ctx.seed, "select": select_on_validation}, sort_keys=True,
                     default=str)
    return Path(ctx.cache_dir) / "edge_teachers" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _build(ctx: StrategyContext, role: str, threshold: float, l1: float, l2: float, l3: float, j1_outputs: str,
           train_all_layers: Optional[bool], epochs_incremental: Optional[int], lr_incremental: Optional[float],
           prune_images: Optional[int], select_on_validation: bool, epochs_student: Optional[int] = None):
    from avalanche_sst.strategies.edge import EdgeStrategy

    cfg = ctx.config
    return EdgeStrategy(
        model=ctx.model, benchmark=ctx.benchmark, role=role, threshold=threshold, l1=l1, l2=l2, l3=l3,
        j1_outputs=j1_outputs,
        train_all_layers=train_all_layers,
        epochs_scratch=cfg.epochs_scratch, epochs_student=epochs_student,
        epochs_incremental=cfg.epochs_finetune if epochs_incremental is None else epochs_incremental,
        lr_scratch=cfg.lr_scratch,
        lr_incremental=cfg.lr_finetune if lr_incremental is None else lr_incremental,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, prune_images=prune_images,
        select_on_validation=select_on_validation, seed=ctx.seed,
        teacher_cache=teacher_cache_path(ctx, select_on_validation),
        train_mb_size=cfg.batch_size, eval_mb_size=cfg.eval_batch_size,
        device=ctx.device, evaluator=ctx.evaluator, plugins=ctx.plugins,
    )


def build_edge_kt(ctx: StrategyContext, threshold: float = 1.0, l1: float = 1.0, l2: float = 1.0, l3: float = 1.0,
                  j1_outputs: str = "known", train_all_layers: Optional[bool] = None, epochs_incremental: Optional[int] = None,
                  lr_incremental: Optional[float] = None, prune_images: Optional[int] = None,
                  select_on_validation: bool = True, epochs_student: Optional[int] = None):
    return _build(ctx, "kt", threshold, l1, l2, l3, j1_outputs, train_all_layers, epochs_incremental, lr_incremental,
                  prune_images, select_on_validation, epochs_student)


def build_edge_finetune(ctx: StrategyContext, threshold: float = 1.0, train_all_layers: Optional[bool] = None,
                        epochs_incremental: Optional[int] = None, lr_incremental: Optional[float] = None,
                        prune_images: Optional[int] = None, select_on_validation: bool = True,
                        epochs_student: Optional[int] = None):
    return _build(ctx, "finetune", threshold, 1.0, 1.0, 1.0, "known", train_all_layers, epochs_incremental,
                  lr_incremental, prune_images, select_on_validation, epochs_student)


def build_edge_independent(ctx: StrategyContext, threshold: float = 1.0, train_all_layers: Optional[bool] = None,
                           prune_images: Optional[int] = None, select_on_validation: bool = True,
                           epochs_student: Optional[int] = None):
    return _build(ctx, "independent", threshold, 1.0, 1.0, 1.0, "known", train_all_layers, None, None,
                  prune_images, select_on_validation, epochs_student)


def edge_state(strategy) -> dict:
    return strategy.edge_state_dict()


def edge_load(strategy, state: dict, done_exps) -> None:
    strategy.load_edge_state_dict(state)


def edge_rebuild(strategy, state: dict) -> None:
    strategy.rebuild_student(state)


def edge_report(strategy) -> dict:
    """Table 1's compression numbers and, per phase, the test accuracy (%) at the best
    validation epoch (what the sweep scores: the paper's rule) and at the last epoch."""
    report = strategy.edge_report
    out = {k: v for k, v in report.get("compression", {}).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    sizes = [len(exp.dataset) for exp in strategy.benchmark.test_stream]
    for phase in ("teacher", "student", "incremental"):
        if phase not in report:
            continue
        out[f"{phase}/best_epoch"] = report[phase]["best_epoch"]
        for when in ("test_best", "test_last"):
            accs = report[phase][when]
            for i, acc in enumerate(accs):
                out[f"{phase}/{when}/exp{i}"] = 100.0 * acc
            out[f"{phase}/{when}/all"] = 100.0 * sum(a * n for a, n in zip(accs, sizes)) / sum(sizes)
    return out


_RESUME = dict(state_dict=edge_state, load_state_dict=edge_load, rebuild_model=edge_rebuild, report=edge_report,
               lr_args=("lr_incremental",))

register(Method("edge_kt", build_edge_kt,
                "edge: filter-pruned student + selective layer-wise knowledge transfer (Zhao, Chen & Zhao)",
                settings=("new_class", "unseen_class"), **_RESUME))
register(Method("edge_finetune", build_edge_finetune,
                "edge: the pruned student's incremental step without knowledge transfer",
                settings=("new_class",), **_RESUME))
register(Method("edge_independent", build_edge_independent,
                "edge: the pruned student trained on the seen classes alone (unseen-class baseline)",
                settings=("unseen_class",), **_RESUME))
