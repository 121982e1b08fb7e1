"""Adaptive online distillation (AOD), Lee & Kim 2023, sec. III-D, eq. 5-8.

Two students start from the same (sparsity-trained) model, each with its
useless filters re-initialised with a different margin I of eq. 4 (0.1 and
0.2) and a different draw. Every batch gives two views of the same random
crop: B_F, horizontally flipped, and B_C, colour-jittered. For student k:
``L_CE^k = CE(P_kF, y)``; ``W^k = L_CE^k / (L_CE^1 + L_CE^2)`` (eq. 6,
detached); ``L_KD^k = JS(P_kF || P_jF)`` with the peer detached (eq. 7);
``L_CR^k = KL(P_kF || P_kC)`` (eq. 5); the better student (lower CE) weighs
its CE by the peer's larger W and its KD by its own smaller W (eq. 7-8),
``alpha = 0.5``. One optimizer trains both. After the experience the student
with the higher accuracy on the experience's validation slice becomes
``strategy.model``; both stay in ``strategy.students``.

Views are made as batched tensor ops on the batch's device. Each student
runs one forward pass on the two views concatenated, so its BatchNorm
statistics see both views of the batch (as in other two-view methods).

Options beyond the paper (paper behaviour by default): ``cr_detach_clean``
detaches the flipped view's prediction in L_CR, so the consistency term
pulls the colour-jittered view towards the clean one and never the clean
view towards the jittered one; ``reinit_range_scope="layer"`` takes eq. 4's
range per layer. Cost (``metrics.cost``): 4 sample-passes per sample (two
students, two views), plus the validation of both students.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from typing import Optional, Sequence

import torch
from torch import nn
from avalanche.benchmarks.scenarios.generic_scenario import CLExperience
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.benchmarks.tensor_data import color_jitter
from avalanche_sst.functional.losses import aod_losses, kl_divergence
from avalanche_sst.metrics.cost import FORWARD_COST, charge
from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.metrics.validation import accuracy, validation_data, validation_slice
from avalanche_sst.models import require_scaling_factors
from avalanche_sst.plugins.reinit import REINIT_SCOPES, diverse_reinit_
from avalanche_sst.functional.sparsity import DEFAULT_TARGET_RATIO, validate_ratio, validate_reinit_margin


def consistency_loss(logits_flipped: torch.Tensor, logits_jittered: torch.Tensor,
                     detach_clean: bool = False) -> torch.Tensor:
    """L_CR of eq. 5, ``KL(p_F || p_C)``; with ``detach_clean`` the flipped view's
    prediction is a fixed target, so only the jittered view is pulled (an option)."""
    return kl_divergence(logits_flipped.detach() if detach_clean else logits_flipped, logits_jittered)


class StudentPair(nn.Module):
    """Both students as one module, so one optimizer and ``.to(device)`` cover them."""

    def __init__(self, student_1: nn.Module, student_2: nn.Module):
        super().__init__()
        self.students = nn.ModuleList([student_1, student_2])

    def forward(self, x):
        return self.students[0](x)


def _normalization_of(dataset) -> tuple[Optional[Sequence[float]], Optional[Sequence[float]]]:
    collate = getattr(dataset, "collate_fn", None)
    return getattr(collate, "mean", None), getattr(collate, "std", None)


class AODStrategy(SupervisedTemplate):
    """Two-student adaptive online distillation on each experience.

    :param alpha: weight of the consistency term (eq. 7-8), paper 0.5.
    :param target_ratio: Target_r used to find the useless filters to re-initialise.
    :param margins: re-init margin I of each student (eq. 4); the same value
        twice is the "no diverse re-init" ablation.
    :param reinit: re-initialise the useless filters at all.
    :param adaptive: eq. 6 weights; False uses fixed 0.5 / 0.5.
    :param use_kd, use_cr: keep the distillation / consistency terms (Table 3).
    :param brightness, contrast, saturation: colour-jitter strengths of B_C.
    :param valid_stream: per-experience validation slices used to choose the
        student (else ``strategy.sst_valid_dataset``, else the training data).
    :param seed: seeds the re-initialisation draws (per experience).
    :param eval_students: ``eval`` also logs both students' accuracy.
    :param cr_detach_clean: detach the flipped (clean) view in L_CR (option; paper: False).
    :param reinit_range_scope: "global" (eq. 4, the paper) or "layer".
    :param log_reinit_accuracy: log each student's validation accuracy right
        after re-initialisation (``diag/student{k}_reinit_valid_acc``; needs a
        validation slice; not counted as cost).
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, criterion=None,
                 alpha: float = 0.5, target_ratio: float = DEFAULT_TARGET_RATIO,
                 margins: tuple[float, float] = (0.1, 0.2), reinit: bool = True, adaptive: bool = True,
                 use_kd: bool = True, use_cr: bool = True, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, valid_stream=None, seed: int = 0, eval_students: bool = True,
                 cr_detach_clean: bool = False, reinit_range_scope: str = "global",
                 log_reinit_accuracy: bool = False, **kwargs):
        super().__init__(model=model, optimizer=optimizer,
                         criterion=criterion if criterion is not None else nn.CrossEntropyLoss(), **kwargs)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha} (paper: 0.5)")
        for group in optimizer.param_groups:
            if not group.get("lr", 0.0) >= 0:
                raise ValueError(f"optimizer lr must be >= 0, got {group.get('lr')}")
        if reinit_range_scope not in REINIT_SCOPES:
            raise ValueError(f"reinit_range_scope must be one of {REINIT_SCOPES} (paper: 'global'), "
                             f"got {reinit_range_scope!r}")
        if len(margins) != 2:
            raise ValueError(f"margins needs one re-init margin per student, got {margins} (paper: (0.1, 0.2))")
        self.target_ratio = validate_ratio(target_ratio, "target_ratio")
        for m in margins:
            validate_reinit_margin(self.target_ratio, m)
        if reinit:
            require_scaling_factors(model, "AODStrategy")
        self.alpha, self.margins, self.reinit = float(alpha), tuple(margins), reinit
        self.adaptive, self.use_kd, self.use_cr = adaptive, use_kd, use_cr
        self.jitter = (brightness, contrast, saturation)
        self.valid_stream = valid_stream
        self.seed = seed
        self.eval_students = eval_students
        self.cr_detach_clean = bool(cr_detach_clean)
        self.reinit_range_scope = reinit_range_scope
        self.log_reinit_accuracy = bool(log_reinit_accuracy)
        self.students: list[nn.Module] = []
        self.chosen: Optional[int] = None
        self.valid_accuracies: list[float] = []
        self.loss_terms: dict = {}
        self._sums: dict[str, float] = {}
        self._term_sum: Optional[torch.Tensor] = None  # the loss terms summed over the epoch, on device
        self._term_count = 0
        self._norm = (None, None)
        self._norm_tensors: dict = {}  # (device, dtype) -> (mean, std) views for _views

    # -- set-up and selection ------------------------------------------------

    def _before_training_exp(self, **kwargs):
        base = self.model
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.experience.current_experience)
        students = []
        for margin in self.margins:
            student = copy.deepcopy(base)
            if self.reinit:
                masks, (low, high) = diverse_reinit_(student, self.target_ratio, margin, generator,
                                                     self.reinit_range_scope)
                log_scalar(self, f"AOD/reinit_low_I{margin}", low)
                log_scalar(self, f"AOD/reinit_high_I{margin}", high)
            students.append(student)
        self.model = StudentPair(*students).to(self.device)
        if self.log_reinit_accuracy:
            self._log_reinit_accuracy()
        self._norm = _normalization_of(self.experience.dataset)
        self._norm_tensors = {}
        super()._before_training_exp(**kwargs)

    def _log_reinit_accuracy(self) -> None:
        data = validation_slice(self.experience, self.valid_stream, getattr(self, "sst_valid_dataset", None))
        if data is None:
            return
        with torch.random.fork_rng(devices=[]):  # a diagnostic: the run's random stream is untouched
            for k, student in enumerate(self.model.students, 1):
                acc = accuracy(student, data, self.device, self.eval_mb_size)
                log_scalar(self, f"diag/student{k}_reinit_valid_acc", acc,
                           step=self.experience.current_experience)

    def training_passes_per_sample(self) -> float:
        """Cost per training sample: both students on both views while training the pair."""
        return 4.0 if isinstance(self.model, StudentPair) else 1.0

    def make_optimizer(self, **kwargs):
        # The model is a new StudentPair every experience: point the single group at its
        # parameters and drop the old state. (Avalanche's reset_optimizer did this; it is deprecated.)
        if len(self.optimizer.param_groups) != 1:
            raise ValueError("AODStrategy needs an optimizer with one parameter group, got "
                             f"{len(self.optimizer.param_groups)}; build it as SGD(model.parameters(), ...)")
        self.optimizer.state = defaultdict(dict)
        self.optimized_param_id = dict(self.model.named_parameters())
        self.optimizer.param_groups[0]["params"] = list(self.optimized_param_id.values())

    def check_model_and_optimizer(self, **kwargs):
        self.model = self.model_adaptation()
        self.make_optimizer(**kwargs)

    def _validation_data(self):
        given = getattr(self, "sst_valid_dataset", None)
        if validation_slice(self.experience, self.valid_stream, given) is None:
            warnings.warn("AODStrategy has no validation slice; choosing the student on training data. "
                          "Pass valid_stream=benchmark.valid_stream (validation_fraction > 0).")
        return validation_data(self.experience, self.valid_stream, given)

    def _after_training_exp(self, **kwargs):
        pair = self.model
        self.students = list(pair.students)
        data = self._validation_data()
        self.valid_accuracies = [accuracy(s, data, self.device, self.eval_mb_size) for s in self.students]
        charge(self, len(self.students) * len(data) * FORWARD_COST)
        self.chosen = int(self.valid_accuracies[1] > self.valid_accuracies[0])
        for k, acc in enumerate(self.valid_accuracies, 1):
            log_scalar(self, f"AOD/student{k}_valid_acc", acc)
        log_scalar(self, "AOD/chosen_student", self.chosen + 1)
        self.model = self.students[self.chosen]
        super()._after_training_exp(**kwargs)

    # -- one training iteration (eq. 5-8) -----------------------------------

    def _views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self._norm
        flipped = x.flip(-1)
        if mean is None:
            return flipped, color_jitter(x.clamp(0, 1), *self.jitter)
        key = (x.device, x.dtype)
        if key not in self._norm_tensors:
            self._norm_tensors[key] = (torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1),
                                       torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1))
        m, s = self._norm_tensors[key]
        jittered = color_jitter((x * s + m).clamp(0, 1), *self.jitter)
        return flipped, (jittered - m) / s

    def forward(self):
        if not self.is_training or not isinstance(self.model, StudentPair):
            return self.model(self.mb_x)
        b_f, b_c = self._views(self.mb_x)
        both = torch.cat([b_f, b_c])
        n = len(b_f)
        self._logits = [student(both).split(n) for student in self.model.students]
        return self._logits[0][0]

    def criterion(self):
        if not self.is_training or not isinstance(self.model, StudentPair):
            return self._criterion(self.mb_output, self.mb_y)
        # float(): the losses in float32 also when the forward ran under autocast (no-op otherwise).
        (l1f, l1c), (l2f, l2c) = [[t.float() for t in pair] for pair in self._logits]
        detached_cr = self.use_cr and self.cr_detach_clean
        out = aod_losses(l1f, l1c, l2f, l2c, self.mb_y, alpha=self.alpha, adaptive=self.adaptive,
                         use_kd=self.use_kd, use_cr=self.use_cr and not detached_cr)
        if detached_cr:
            out.cr_1, out.cr_2 = consistency_loss(l1f, l1c, True), consistency_loss(l2f, l2c, True)
            out.total_1 = out.total_1 + self.alpha * out.cr_1
            out.total_2 = out.total_2 + self.alpha * out.cr_2
        self.loss_terms = {"ce_1": out.ce_1, "ce_2": out.ce_2, "kd_1": out.kd_1, "kd_2": out.kd_2,
                           "cr_1": out.cr_1, "cr_2": out.cr_2, "w_1": out.w_1, "w_2": out.w_2}
        # Summed on the loss's device, in float64 as Python floats would be: no host sync
        # per iteration (eight .item() calls did that); read once per epoch.
        terms = torch.stack([v.detach().reshape(()) for v in self.loss_terms.values()]).double()
        self._term_sum = terms if self._term_sum is None else self._term_sum + terms
        self._term_count += 1
        return out.total_1 + out.total_2

    def _before_training_epoch(self, **kwargs):
        self._sums = {}
        self._term_sum, self._term_count = None, 0
        super()._before_training_epoch(**kwargs)

    def _after_training_epoch(self, **kwargs):
        if self._term_sum is not None:
            self._sums = dict(zip(self.loss_terms, self._term_sum.tolist()))
            self._sums["n"] = self._term_count
        n = max(self._sums.pop("n", 1), 1)
        names = {"ce": "L_CE", "kd": "L_KD", "cr": "L_CR", "w": "W_KD"}
        for key, total in self._sums.items():
            term, k = key.split("_")
            log_scalar(self, f"AOD/{names[term]}/student{k}", total / n)
        super()._after_training_epoch(**kwargs)

    # -- evaluation ------------------------------------------------------------

    def eval(self, exp_list, **kwargs):
        if self.eval_students and self.students:
            exps = [exp_list] if isinstance(exp_list, CLExperience) else list(exp_list)
            for k, student in enumerate(self.students, 1):
                for exp in exps:
                    acc = accuracy(student, exp.dataset, self.device, self.eval_mb_size)
                    stream = getattr(exp, "_origin_stream", None)
                    name = stream.name if stream is not None else "stream"
                    log_scalar(self, f"AOD/student{k}/{name}_exp{exp.current_experience}_top1", acc)
        return super().eval(exp_list, **kwargs)
