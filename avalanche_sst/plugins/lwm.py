"""Learning without Memorizing (LwM) as an Avalanche plugin.

Dhar, Singh, Peng, Wu & Chellappa, "Learning without Memorizing", CVPR 2019,
adapted to the same-class accumulating scenario of Lee & Kim (2023, Table 7):
the previous step's model is the teacher, the current model the student, and
both see the same data of the current step (there are no "old" and "new"
classes here, so every class is distilled).

Loss on a batch of the current step (eq. 1-4 of Dhar et al.)::

    L = L_C + beta * L_D + gamma * L_AD
    L_D  = KL(p_T || p_S) * T^2                       (logit distillation)
    L_AD = || Q_S / ||Q_S||_2 - Q_T / ||Q_T||_2 ||_1   (attention distillation)

``Q`` is the Grad-CAM map (Selvaraju et al., ICCV 2017) at one layer for the
class the *teacher* predicts (top-1 of the teacher's logits), computed for
teacher and student from their own activations ``A`` and gradients::

    alpha_c = mean_{h,w} d y_c / d A_{c,h,w}
    Q       = ReLU(sum_c alpha_c A_c), flattened          (losses.grad_cam_map)

The teacher's map uses ``torch.autograd.grad`` without a graph (the teacher
is frozen); the student's map uses ``create_graph=True`` so that ``L_AD``
trains the student through both its activations and its gradients.
Defaults follow METHOD.md: ``beta = gamma = 1``, ``T = 1``, the layer is the
last feature block (the last convolutional stage, as in LwM).

The teacher is a frozen copy made after every experience: always in eval
mode (its BatchNorm statistics never move, unlike Avalanche's LwF teacher),
``requires_grad`` off. Nothing is added during experience 0.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from avalanche.training.plugins import SupervisedPlugin

from avalanche_sst.functional.baseline_losses import attention_distillation_loss, grad_cam_map
from avalanche_sst.functional.losses import distillation_loss
from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.models import feature_blocks

__all__ = ["LwMPlugin", "grad_cam", "default_cam_layer", "resolve_layer"]


def default_cam_layer(model: nn.Module) -> str:
    """Qualified module name of the last feature block of ``model``."""
    blocks = feature_blocks(model)
    if not blocks:
        raise ValueError(f"LwM needs a model with feature blocks; {model.__class__.__name__} has none")
    names = {m: n for n, m in model.named_modules()}
    return names[blocks[-1]]


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule of ``model`` called ``name`` (as in ``named_modules``)."""
    modules = dict(model.named_modules())
    if name not in modules:
        raise ValueError(
            f"LwM layer {name!r} is not a module of {model.__class__.__name__}; "
            f"valid names include {sorted(n for n in modules if n)[:8]}..."
        )
    return modules[name]


def _leaf_if_constant(_module: nn.Module, _args, output: Tensor) -> Optional[Tensor]:
    # A frozen network's activations carry no graph; make them a leaf that
    # requires grad so autograd.grad can differentiate the score w.r.t. them.
    if isinstance(output, Tensor) and not output.requires_grad:
        return output.detach().requires_grad_(True)
    return None


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    classes: Optional[Tensor] = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Grad-CAM of ``model`` at ``layer`` for ``classes`` (default: its own top-1).

    Returns ``(logits, map, classes)``; ``map`` is ``[B, H*W]``, ReLU'd and
    L2-normalized (:func:`avalanche_sst.functional.losses.grad_cam_map`). Runs with
    gradients enabled whatever the caller's mode. With ``create_graph`` the map
    is differentiable w.r.t. the model's parameters (the student's case);
    otherwise it is detached (the teacher's case).
    """
    captured: list[Tensor] = []

    def hook(module, args, output):
        replaced = _leaf_if_constant(module, args, output)
        captured.append(output if replaced is None else replaced)
        return replaced

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            if not captured:
                raise RuntimeError("the Grad-CAM layer was not called in the model's forward")
            act = captured[-1]
            if classes is None:
                classes = logits.detach().argmax(dim=1)
            score = logits.gather(1, classes.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, act, create_graph=create_graph)
            cam = grad_cam_map(act if create_graph else act.detach(), grads)
    finally:
        handle.remove()
    return (logits, cam, classes) if create_graph else (logits.detach(), cam.detach(), classes)


class LwMPlugin(SupervisedPlugin):
    """Learning without Memorizing: logit + Grad-CAM attention distillation.

    :param beta: weight of the logit distillation ``KL(p_T || p_S) T^2``
        (METHOD.md: 1).
    :param gamma: weight of the attention distillation loss (METHOD.md: 1).
    :param temperature: softmax temperature of the logit distillation (1).
    :param layer: qualified module name of the Grad-CAM layer; default the
        last feature block of the model (``feature_blocks(model)[-1]``).
    """

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0,
                 layer: Optional[str] = None):
        super().__init__()
        if beta < 0 or gamma < 0:
            raise ValueError(f"beta and gamma must be >= 0, got beta={beta}, gamma={gamma}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.temperature = float(temperature)
        self.layer = layer
        self.teacher: Optional[nn.Module] = None
        self._student_acts: list[Tensor] = []
        self._handle = None
        self._sums = {"kd": 0.0, "at": 0.0, "n": 0}
        self.last_terms: Optional[dict] = None  # the latest batch's (kd, at), for inspection

    # ------------------------------------------------------------------ core
    def _layer_name(self, model: nn.Module) -> str:
        return self.layer if self.layer is not None else default_cam_layer(model)

    def set_teacher(self, model: nn.Module) -> None:
        """Freeze a copy of ``model`` as the teacher (eval mode, no grad)."""
        teacher = copy.deepcopy(model)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher

    def terms(self, x: Tensor, student_logits: Tensor, student_act: Tensor) -> tuple[Tensor, Tensor]:
        """``(L_D, L_AD)`` for a batch whose student forward produced
        ``student_logits`` and, at the Grad-CAM layer, ``student_act``."""
        if self.teacher is None:
            raise RuntimeError("LwM has no teacher yet (it is set after the first experience)")
        t_layer = resolve_layer(self.teacher, self._layer_name(self.teacher))
        t_logits, t_map, classes = grad_cam(self.teacher, t_layer, x, create_graph=False)
        score = student_logits.gather(1, classes.view(-1, 1)).sum()
        (s_grads,) = torch.autograd.grad(score, student_act, create_graph=True)
        s_map = grad_cam_map(student_act, s_grads)
        kd = distillation_loss(student_logits, t_logits, self.temperature)
        at = attention_distillation_loss(s_map, t_map)
        return kd, at

    # ------------------------------------------------------------ callbacks
    def before_training_exp(self, strategy, **kwargs):
        self._sums = {"kd": 0.0, "at": 0.0, "n": 0}
        if self.teacher is None:
            return
        self.teacher.to(strategy.device)
        self.teacher.eval()
        layer = resolve_layer(strategy.model, self._layer_name(strategy.model))

        def keep(_module, _args, output):
            self._student_acts[:] = [output]

        self._handle = layer.register_forward_hook(keep)

    def before_backward(self, strategy, **kwargs):
        if self.teacher is None or not self._student_acts:
            return
        act = self._student_acts[0]
        self._student_acts.clear()
        self.teacher.eval()  # whatever happened to it, never train-mode BN
        kd, at = self.terms(strategy.mb_x, strategy.mb_output, act)
        strategy.loss = strategy.loss + self.beta * kd + self.gamma * at
        self.last_terms = {"kd": float(kd.detach()), "at": float(at.detach())}
        self._sums["kd"] += self.last_terms["kd"]
        self._sums["at"] += self.last_terms["at"]
        self._sums["n"] += 1

    def after_training_epoch(self, strategy, **kwargs):
        n = self._sums["n"]
        if n:
            log_scalar(strategy, "lwm/logit_distillation", self._sums["kd"] / n)
            log_scalar(strategy, "lwm/attention_distillation", self._sums["at"] / n)
        self._sums = {"kd": 0.0, "at": 0.0, "n": 0}

    def after_training_exp(self, strategy, **kwargs):
        self._remove_hook()
        self.set_teacher(strategy.model)

    def _remove_hook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._student_acts.clear()

    # --------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {"teacher": None if self.teacher is None else
                {k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}}

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        """Restore the teacher: a frozen copy of ``model`` with the saved weights."""
        weights = state.get("teacher")
        if weights is None:
            self.teacher = None
            return
        self.set_teacher(model)
        self.teacher.load_state_dict(weights)
