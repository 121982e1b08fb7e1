"""The edge pipeline of Zhao, Chen & Zhao, "Enabling Deep Learning on Edge Devices
through Filter Pruning and Knowledge Transfer": a cloud teacher, compressed by
activation-based filter pruning (sec. 3) into a student trained from scratch,
which then learns on the device with selective layer-wise knowledge transfer
(sec. 4.1, new classes; sec. 4.2, unseen classes from unlabelled images).

``new_class`` ("9+1", Tables 4-5): experience 0 trains the teacher on the base
classes, compresses it at threshold P and trains the student on the same data
from scratch; experience 1 is the incremental step on the new class. With
``role="kt"`` both student phases use ``EdgeKTPlugin`` (the paper's "dependent"
student, sec. 5.2: trained with the teacher's help, every layer in experience 0,
the last conv of each group and the classifier in experience 1); with
``role="finetune"`` both use plain cross entropy (the "independent" student,
"w/o KT"), on the same layers. A student that learned the base classes without
the teacher has feature maps far from the teacher's (paired cosine about 0.3
here), and the incremental step's J_b would then pull its last convs away from
what its own classifier reads.

``unseen_class`` (Table 7): the teacher trains on ``benchmark.pretrain_stream``
(every class), the student on the seen classes' images only, unlabelled with
``J1 + sum J_b`` (``role="kt"``) or labelled with cross entropy
(``role="independent"``); it is tested on the other classes.

Model selection follows the paper (sec. 5): every phase with validation data
keeps the weights of its best validation epoch, so the test accuracy the
sweep measures afterwards is the test accuracy at that epoch; the test
accuracy of the last epoch is recorded beside it in ``edge_report``.
Decisions where the paper is silent: the incremental step selects on the
validation slices of every class seen so far, by the plain mean of the
old- and new-class accuracies (the sample-weighted one would rank "never
learn the new class" first, as old images are 90% of it); the unlabelled
unseen-class student has no labelled validation data and keeps its last epoch.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import trigger_plugins
from torch import nn

from avalanche_sst.checkpoint import load_checkpoint, save_checkpoint
from avalanche_sst.strategies.phased import PhasedStrategy, phase_evaluator, propagated_plugins
from avalanche_sst.functional.filter_pruning import check_threshold, prune_plan, pruning_batch
from avalanche_sst.metrics import log_scalar
from avalanche_sst.metrics.validation import accuracy
from avalanche_sst.models.resnet_cifar import LayerWidths
from avalanche_sst.models.student import build_student, residual_groups, student_report
from avalanche_sst.plugins.edge_kt import EdgeKTPlugin, LastConvsOnlyPlugin
from avalanche_sst.plugins.schedule import StepwiseCosinePlugin

__all__ = ["EDGE_ROLES", "EdgeStrategy"]

EDGE_ROLES = {"new_class": ("kt", "finetune"), "unseen_class": ("kt", "independent")}


class _BestEpoch(SupervisedPlugin):
    """After every epoch, the validation score; keeps the best epoch's weights.

    ``valid`` is a list of validation sets, one per experience seen so far;
    the score is the plain mean of their accuracies (the paper's "Avg Acc" of
    old and new classes), so the 9 old classes' 90% of the images cannot make
    "never learn the new class" the best epoch.
    """

    def __init__(self, valid: Sequence, device, batch_size: int):
        super().__init__()
        self.valid, self.device, self.batch_size = list(valid), device, batch_size
        self.best_acc, self.best_epoch, self.best_state, self.epoch = -1.0, -1, None, 0

    def after_training_epoch(self, strategy, **kwargs):
        self.epoch += 1
        with torch.random.fork_rng(devices=[]):  # the training's random stream is untouched
            accs = [accuracy(strategy.model, data, self.device, self.batch_size) for data in self.valid]
        acc = sum(accs) / len(accs)
        if acc > self.best_acc:
            self.best_acc, self.best_epoch = acc, self.epoch
            self.best_state = {k: v.detach().clone() for k, v in strategy.model.state_dict().items()}


class EdgeStrategy(PhasedStrategy):
    """Teacher -> compression at ``threshold`` -> student -> on-device step.

    :param model: the teacher's architecture (``resnet_cifar``/``wide_resnet``,
        one output per class of the benchmark); it is trained here.
    :param benchmark: a ``new_class`` or ``unseen_class`` benchmark
        (``avalanche_sst.benchmarks``).
    :param role: ``"kt"`` (knowledge transfer), ``"finetune"`` (new_class: the
        incremental step with cross entropy, no teacher) or ``"independent"``
        (unseen_class: the student learns the seen classes with labels).
    :param threshold: the filter pruning threshold P, in (0, 1] (paper: 0.7-1.0).
    :param l1, l2, l3: the loss weights (paper: 1).
    :param train_all_layers: update every layer in the on-device step; default
        False for the incremental step (the paper's rule: last conv of each
        group and the classifier, BatchNorm frozen) and True for the
        unseen-class student, which starts from scratch.
    :param epochs_student: the student's epochs from scratch (default: ``epochs_scratch``, the
        teacher's); the unseen-class student sees two classes only, so few iterations an epoch.
    :param prune_images: M, the images of the one batch the pruning rule sees
        (default: ``train_mb_size``, as the paper).
    :param j1_outputs: the logits J1 compares: ``"known"`` (default: the
        classes the teacher learned, ../shared/METHOD.md) or ``"all"`` (every
        output of the teacher's classifier, the new class's too, where the
        teacher's low score pins the student's new logit). Chosen on the
        validation slices of the 9+1 benchmark: with ``"all"`` the student
        never learned the new class (docs/edge.md, "Choices made on validation").
    :param teacher_cache: a file for the trained teacher (weights and report):
        loaded instead of training when it exists, written after training
        otherwise. One cloud teacher serves every student of a sweep (each
        threshold, each role); the student's random draws are reseeded after
        the teacher phase, so a run gives the same student either way. The
        caller keys the file by everything the teacher depends on.
    """

    def __init__(self, *, model: nn.Module, benchmark, role: str = "kt", threshold: float = 1.0,
                 l1: float = 1.0, l2: float = 1.0, l3: float = 1.0, j1_outputs: str = "known",
                 train_all_layers: Optional[bool] = None,
                 epochs_scratch: int = 10, epochs_incremental: int = 10, epochs_student: Optional[int] = None,
                 lr_scratch: float = 0.1,
                 lr_incremental: float = 0.1, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 5e-4, prune_images: Optional[int] = None,
                 select_on_validation: bool = True, seed: int = 0, teacher_cache=None, train_mb_size: int = 128,
                 eval_mb_size: int = 1000, device="cpu", plugins: Optional[Sequence] = None,
                 evaluator=None, **kwargs):
        setting = getattr(benchmark, "setting", None)
        if setting not in EDGE_ROLES:
            raise ValueError(f"EdgeStrategy runs in the settings {sorted(EDGE_ROLES)}, got a benchmark with "
                             f"setting={setting!r}; build it with avalanche_sst.benchmarks.new_class/unseen_class")
        if role not in EDGE_ROLES[setting]:
            raise ValueError(f"EdgeStrategy: role must be one of {EDGE_ROLES[setting]} in the {setting!r} "
                             f"setting, got role={role!r}")
        if role == "independent" and getattr(benchmark, "labelled", True) is False:
            raise ValueError("EdgeStrategy(role='independent') learns the seen classes from their labels, but the "
                             "benchmark says labelled=False; build it with unseen_class(..., labelled=True)")
        residual_groups(model, "EdgeStrategy")
        self.threshold = check_threshold(threshold)
        for name, value in (("epochs_scratch", epochs_scratch), ("epochs_incremental", epochs_incremental),
                            ("epochs_student", 1 if epochs_student is None else epochs_student)):
            if int(value) < 1:
                raise ValueError(f"EdgeStrategy: {name} must be >= 1, got {value}")
        extra = {} if evaluator is None else {"evaluator": evaluator}
        super().__init__(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr_scratch),
                         criterion=nn.CrossEntropyLoss(), train_mb_size=train_mb_size, train_epochs=1,
                         eval_mb_size=eval_mb_size, device=device, plugins=list(plugins or []),
                         eval_every=-1, **extra, **kwargs)
        self.benchmark, self.setting, self.role = benchmark, setting, role
        self.teacher = model
        self.l1, self.l2, self.l3 = l1, l2, l3
        if j1_outputs not in ("known", "all"):
            raise ValueError(f"EdgeStrategy: j1_outputs must be 'known' or 'all', got {j1_outputs!r}")
        self.j1_outputs = j1_outputs
        self.train_all_layers = train_all_layers
        self.epochs = {"scratch": int(epochs_scratch), "incremental": int(epochs_incremental),
                       "student": int(epochs_scratch if epochs_student is None else epochs_student)}
        self.lrs = {"scratch": float(lr_scratch), "incremental": float(lr_incremental)}
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov and momentum > 0, weight_decay
        if prune_images is not None and int(prune_images) < 1:
            raise ValueError(f"EdgeStrategy: prune_images (M, the images the pruning rule sees) must be >= 1, got "
                             f"{prune_images}; leave it None for one training batch")
        self.prune_images = int(train_mb_size if prune_images is None else prune_images)
        self.select_on_validation = select_on_validation
        self.seed = seed
        self.teacher_cache = None if teacher_cache is None else Path(teacher_cache)
        self.widths: Optional[LayerWidths] = None
        self.teacher_classes: list[int] = []
        self.plan: dict = {}
        self.edge_report: dict = {}

    # -- phases ----------------------------------------------------------------

    def _phase(self, name: str, exp, model: nn.Module, lr: float, epochs: int, plugins: Sequence = (),
               valid=None) -> nn.Module:
        evaluator = phase_evaluator()
        best = _BestEpoch(valid, self.device, self.eval_mb_size) if valid is not None else None
        shared = propagated_plugins(self)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=self.momentum, nesterov=self.nesterov,
                                    weight_decay=self.weight_decay)
        inner = SupervisedTemplate(
            model=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_mb_size=self.train_mb_size,
            train_epochs=epochs, eval_mb_size=self.eval_mb_size, device=self.device, evaluator=evaluator,
            eval_every=-1, plugins=[StepwiseCosinePlugin(lrs=(lr,), epochs=(epochs,)), *plugins,
                                    *([best] if best else []), *shared],
        )
        inner.sst_parent = self  # log_scalar writes into this strategy's loggers
        inner.train(exp, eval_streams=[])
        report = {"epochs": epochs, "test_last": self._test_accuracies(model)}
        if best is not None and best.best_state is not None:
            model.load_state_dict(best.best_state)
            report.update(best_epoch=best.best_epoch, best_valid=best.best_acc,
                          test_best=self._test_accuracies(model))
        else:
            report.update(best_epoch=epochs, best_valid=-1.0, test_best=report["test_last"])
        self.edge_report[name] = report
        for i, (last, at_best) in enumerate(zip(report["test_last"], report["test_best"])):
            log_scalar(self, f"edge/{name}/test_last/exp{i}", last, step=self.clock.train_exp_counter)
            log_scalar(self, f"edge/{name}/test_best_valid/exp{i}", at_best, step=self.clock.train_exp_counter)
        return model

    def _test_accuracies(self, model: nn.Module) -> list[float]:
        with torch.random.fork_rng(devices=[]):
            return [accuracy(model, exp.dataset, self.device, self.eval_mb_size)
                    for exp in self.benchmark.test_stream]

    def _valid(self, stream_name: str, upto: int) -> Optional[list]:
        """The validation sets of experiences 0..upto of ``stream_name`` (None: no selection)."""
        stream = getattr(self.benchmark, stream_name, None)
        if not self.select_on_validation or stream is None:
            return None
        return [stream[i].dataset for i in range(min(upto + 1, len(stream)))]

    def _prune_batch(self, experience) -> torch.Tensor:
        """M training images of ``experience``, without augmentation (eval transforms, batched collate off)."""
        return pruning_batch(experience, self.prune_images, self.seed).to(self.device)

    def _teacher_and_student(self, teacher_exp, valid_stream: str) -> None:
        """Train the teacher (or load it from ``teacher_cache``), compress it (sec. 3), build the fresh student."""
        cached = load_checkpoint(self.teacher_cache) if self.teacher_cache is not None else None
        if cached is not None:
            self.teacher.load_state_dict(cached["state_dict"])
            self.edge_report["teacher"] = cached["report"]
        else:
            self.teacher = self._phase("teacher", teacher_exp, self.teacher, self.lrs["scratch"],
                                       self.epochs["scratch"], valid=self._valid(valid_stream, 0))
            if self.teacher_cache is not None:
                save_checkpoint(self.teacher_cache, {"state_dict": self.teacher.state_dict(),
                                                     "report": self.edge_report["teacher"]})
        torch.manual_seed(self.seed * 7919 + 1)  # the student's draws do not depend on the cache
        known = self.benchmark.classes_per_exp[0] if self.setting == "new_class" else range(self.benchmark.num_classes)
        self.teacher_classes = sorted(int(c) for c in known)
        images = self._prune_batch(teacher_exp)
        plan = prune_plan(self.teacher, images, self.threshold)
        self.plan, self.widths = plan.to_dict(), plan.widths
        self.model = build_student(self.teacher, plan.widths).to(self.device)
        shape = tuple(images.shape[1:])
        self.edge_report["compression"] = {"threshold": self.threshold, "widths": plan.widths.to_dict(),
                                           **student_report(self.teacher, self.model, shape)}
        for key in ("compression_ratio", "student_params", "student_flops"):
            log_scalar(self, f"edge/{key}", self.edge_report["compression"][key], step=0)

    def _kt_plugin(self, use_labels: bool, train_all: bool) -> EdgeKTPlugin:
        return EdgeKTPlugin(self.teacher, self.l1, self.l2, self.l3, use_labels=use_labels,
                            teacher_classes=self.teacher_classes if self.j1_outputs == "known" else None,
                            train_only_last_convs=not train_all)

    def _train_step(self, exp) -> None:
        k = self.clock.train_exp_counter
        self.experience = exp
        trigger_plugins(self, "before_training_exp")
        if self.setting == "new_class" and k == 0:
            self._teacher_and_student(exp, "valid_stream")
            # the paper's "dependent" student learns the base classes with the teacher's help
            # (every layer, the full loss); its "independent" one (w/o KT) from the labels alone
            plugins = [self._kt_plugin(True, train_all=True)] if self.role == "kt" else []
            self.model = self._phase("student", exp, self.model, self.lrs["scratch"], self.epochs["student"],
                                     plugins, valid=self._valid("valid_stream", 0))
        elif self.setting == "new_class":
            if self.widths is None:
                raise RuntimeError("EdgeStrategy: the incremental step needs the student of experience 0; "
                                   "train experience 0 first (or resume with rebuild_model)")
            train_all = bool(self.train_all_layers)
            plugins = ([self._kt_plugin(True, train_all)] if self.role == "kt"
                       else ([] if train_all else [LastConvsOnlyPlugin()]))
            self.model = self._phase("incremental", exp, self.model, self.lrs["incremental"],
                                     self.epochs["incremental"], plugins, valid=self._valid("valid_stream", k))
        else:  # unseen_class: one experience, the seen classes
            if self.widths is None:
                self._teacher_and_student(self.benchmark.pretrain_stream[0], "pretrain_valid_stream")
            train_all = self.train_all_layers is not False
            if self.role == "kt":
                plugins = [self._kt_plugin(False, train_all)]
                valid = None  # unlabelled: no labelled validation data to select on
            else:
                plugins = [] if train_all else [LastConvsOnlyPlugin()]
                valid = self._valid("valid_stream", 0)
            self.model = self._phase("student", exp, self.model, self.lrs["scratch"], self.epochs["student"],
                                     plugins, valid=valid)
        trigger_plugins(self, "after_training_exp")  # the Clock plugin counts the experience

    # -- resume ------------------------------------------------------------------

    def edge_state_dict(self) -> dict:
        """Everything beyond ``self.model`` a resumed run needs (tensors, numbers, lists, dicts)."""
        return {
            "widths": self.widths.to_dict() if self.widths is not None else {},
            "teacher": dict(self.teacher.state_dict()),
            "teacher_classes": list(self.teacher_classes),
            "plan": copy.deepcopy(self.plan),
            "report": copy.deepcopy(self.edge_report),
        }

    def rebuild_student(self, state: dict) -> None:
        """Give ``self.model`` the saved student's widths (before its weights are loaded)."""
        if state.get("widths"):
            self.widths = LayerWidths.from_dict(state["widths"])
            self.model = build_student(self.teacher, self.widths).to(self.device)

    def load_edge_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.teacher_classes = [int(c) for c in state["teacher_classes"]]
        self.plan = dict(state["plan"])
        self.edge_report = dict(state["report"])
