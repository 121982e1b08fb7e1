"""Multi-step loss (MSL), Lee & Kim 2023, sec. III-E, eq. 9.

In an SST phase of a later step there is no earlier data, so the data loss is
replaced by distillation from the network trained so far:
``L_MS = KL(P_T || P_S) + (1/n) sum_i L_AT,i`` over the n residual blocks,
with Zagoruyko & Komodakis' attention transfer loss (beta = 1000, their
reference scale). No cross-entropy; the classifier is frozen; the teacher is
frozen and in eval mode, and at each epoch end it is replaced by the student
when the student's accuracy on the current part's validation slice is higher.

MSL needs a trained teacher. In the first experience (of the stream and of
the strategy: nothing trained yet) with no teacher given, distilling would copy a random network
with its random classifier frozen, so the plugin stands aside: the strategy
trains with its own criterion, and the skip is logged (``MSL/skipped`` and a
warning, once). ``MultiStepSST`` only uses MSL after the first step.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from avalanche.core import SupervisedPlugin

from avalanche_sst.functional.losses import msl_loss
from avalanche_sst.metrics.cost import FORWARD_COST, charge
from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.metrics.validation import accuracy, validation_slice
from avalanche_sst.models import capture_block_outputs, classifier, require_blocks


class MSLPlugin(SupervisedPlugin):
    """Replace the data loss by eq. 9 and keep an improving frozen teacher.

    :param beta: attention-transfer weight (1000, Zagoruyko & Komodakis).
    :param temperature: softmax temperature of the logit term.
    :param update_teacher: make the student the teacher when it validates better.
    :param valid_stream: per-experience validation slices (``benchmark.valid_stream``);
        needed when ``update_teacher`` is set, unless the strategy provides
        ``strategy.sst_valid_dataset`` (``MultiStepSST`` does).
    :param teacher: a fixed teacher; by default a frozen copy of the model at
        the start of each experience (in the strategy's first experience there
        is none: the plugin then leaves the strategy's criterion in place).
    """

    def __init__(self, beta: float = 1000.0, temperature: float = 1.0, update_teacher: bool = True,
                 valid_stream=None, teacher: torch.nn.Module | None = None):
        super().__init__()
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.update_teacher = update_teacher
        self.valid_stream = valid_stream
        self.given_teacher = teacher
        self.teacher: torch.nn.Module | None = None
        self.teacher_updates = 0
        self._contexts = []
        self._student_feats = self._teacher_feats = None
        self._saved_criterion = None
        self._frozen: list[tuple[torch.nn.Parameter, bool]] = []
        self._teacher_acc = None
        self._sums = {"terms": None, "n": 0}
        self.active = False
        self._warned_skip = False

    def _valid_dataset(self, strategy):
        return validation_slice(strategy.experience, self.valid_stream, getattr(strategy, "sst_valid_dataset", None))

    def before_training_exp(self, strategy, **kwargs):
        model = strategy.model
        require_blocks(model, "MSLPlugin")
        if self.update_teacher and self._valid_dataset(strategy) is None:
            raise ValueError(
                "MSLPlugin(update_teacher=True) needs validation data: pass valid_stream=benchmark.valid_stream "
                "(build the benchmark with validation_fraction > 0), or set update_teacher=False"
            )
        # Nothing trained yet: the stream's first experience, and the strategy's first. (A fresh
        # strategy given a later experience is taken to hold a trained model.)
        first = strategy.clock.train_exp_counter == 0 and strategy.experience.current_experience == 0
        self.active = self.given_teacher is not None or not first
        if not self.active:
            self._skip(strategy)
            return
        self.teacher = copy.deepcopy(self.given_teacher if self.given_teacher is not None else model)
        self.teacher.eval().requires_grad_(False)
        self._teacher_acc = None
        self._frozen = [(p, p.requires_grad) for p in classifier(model).parameters()]
        for p, _ in self._frozen:
            p.requires_grad_(False)
        student_ctx, teacher_ctx = capture_block_outputs(model), capture_block_outputs(self.teacher)
        self._student_feats, self._teacher_feats = student_ctx.__enter__(), teacher_ctx.__enter__()
        self._contexts = [student_ctx, teacher_ctx]
        self._saved_criterion = strategy._criterion
        strategy._criterion = lambda output, target: self._loss(strategy, output)

    def _skip(self, strategy) -> None:
        log_scalar(strategy, "MSL/skipped", 1.0)
        if not self._warned_skip:
            self._warned_skip = True
            warnings.warn("MSLPlugin: no trained teacher in the strategy's first experience; training it "
                          "with the strategy's own criterion (MSL starts at the next experience). Pass "
                          "teacher=... to distil from a given model from the start.")

    def extra_passes_per_sample(self, strategy) -> float:
        """Cost (sample-passes per training sample) of the teacher's forward."""
        return FORWARD_COST if self.active else 0.0

    def _loss(self, strategy, student_logits):
        x = strategy.mb_x
        # Under autocast (AutocastPlugin) the student's block outputs are low precision: run the
        # teacher in the same precision (it costs a third of the step otherwise); a float32
        # student keeps a float32 teacher.
        low = self._student_feats[0].dtype if self._student_feats else torch.float32
        autocast = (torch.autocast(device_type=x.device.type, dtype=low)
                    if low in (torch.bfloat16, torch.float16) else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            teacher_logits = self.teacher(x)
        # float(): under autocast the student's logits and block outputs are low precision;
        # the loss is computed in float32 (a no-op for float32 tensors).
        losses = msl_loss(student_logits.float(), teacher_logits.float(),
                          [f.float() for f in self._student_feats], [f.float() for f in self._teacher_feats],
                          beta=self.beta, temperature=self.temperature)
        kd, at = losses.kd.detach(), losses.at.detach()
        strategy.loss_terms = {"msl_kd": kd, "msl_at": at}
        # Summed on the loss's device (no host sync per iteration); read once per epoch.
        terms = torch.stack([kd, at]).double()
        self._sums["terms"] = terms if self._sums.get("terms") is None else self._sums["terms"] + terms
        self._sums["n"] += 1
        return losses.total

    def before_training_epoch(self, strategy, **kwargs):
        if not self.active:
            return
        self.teacher.eval()  # nothing may switch it back to train mode
        self._sums = {"terms": None, "n": 0}

    def after_training_epoch(self, strategy, **kwargs):
        if not self.active:
            return
        n = max(self._sums["n"], 1)
        kd, at = self._sums["terms"].tolist() if self._sums.get("terms") is not None else (0.0, 0.0)
        log_scalar(strategy, "MSL/kd", kd / n)
        log_scalar(strategy, "MSL/at", at / n)
        if not self.update_teacher:
            return
        data = self._valid_dataset(strategy)
        if self._teacher_acc is None:
            self._teacher_acc = accuracy(self.teacher, data, strategy.device)
            charge(strategy, len(data) * FORWARD_COST)
        student_acc = accuracy(strategy.model, data, strategy.device)
        charge(strategy, len(data) * FORWARD_COST)
        updated = student_acc > self._teacher_acc
        if updated:
            self.teacher.load_state_dict(strategy.model.state_dict())
            self._teacher_acc = student_acc
            self.teacher_updates += 1
        log_scalar(strategy, "MSL/student_valid_acc", student_acc)
        log_scalar(strategy, "MSL/teacher_valid_acc", self._teacher_acc)
        log_scalar(strategy, "MSL/teacher_update", float(updated))

    def after_training_exp(self, strategy, **kwargs):
        if not self.active:
            return
        self.active = False
        for ctx in self._contexts:
            ctx.__exit__(None, None, None)
        self._contexts = []
        for p, flag in self._frozen:
            p.requires_grad_(flag)
        self._frozen = []
        strategy._criterion = self._saved_criterion
