"""Deep Mutual Learning (DML) as an Avalanche strategy.

Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018, the
two-student form compared in Lee & Kim (2023, Table 7). Each student k is
trained with its own cross-entropy plus the KL divergence from its peer's
prediction (eq. 1-2 / 10 of Zhang et al., temperature 1, peer detached)::

    L_1 = CE(z_1, y) + KL(p_2 || p_1)
    L_2 = CE(z_2, y) + KL(p_1 || p_2)

(:func:`avalanche_sst.functional.losses.dml_loss`); one SGD optimizer over both
students minimises ``L_1 + L_2`` (each term only reaches its own student, so
this equals DML's alternating per-student updates up to their ordering).

In DML the students differ by their random initialisation. In the
same-class accumulating scenario:

* experience 0 (from scratch): the first student is the given model (the
  shared initialisation of the sweep), the peer gets a fresh random
  initialisation (``reinit_peer``), both see the same batches, as in DML;
* later experiences: there is only one pre-trained model, so both students
  start from it (the previous step's result). Identical students fed
  identical batches stay identical (zero KL, equal gradients), so to keep
  the two students distinct the peer sees each image with an independently
  re-drawn horizontal flip (``peer_flip``). Flips are part of the training
  augmentation already, so the peer's input distribution is unchanged.

After each experience both students are evaluated on the experience's
held-out validation slice (``valid_stream[k]``; without one, on the
experience's own training data, un-augmented) and the better one (ties: the
first student) becomes ``strategy.model``; the other is re-synchronised to
it, so the next experience starts both from the chosen model. The optimizer
state (momentum) is reset at every experience, since the re-synchronised
student's momentum would belong to weights it no longer has.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import CrossEntropyLoss

from avalanche.models import avalanche_forward
from avalanche.models.dynamic_optimizers import update_optimizer
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.functional.baseline_losses import dml_loss
from avalanche_sst.metrics.cost import FORWARD_COST, TRAIN_COST, charge
from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.metrics.validation import accuracy, validation_data

__all__ = ["DMLStrategy", "fresh_init", "validation_data"]


def fresh_init(model: nn.Module) -> None:
    """Re-draw every parameter of ``model`` in place (PyTorch's default
    ``reset_parameters``, then the CIFAR-ResNet scheme: Kaiming-normal
    fan-out convs, BatchNorm weight 1 / bias 0, Linear bias 0). Uses the
    global RNG, so it is reproducible under ``torch.manual_seed``."""
    from avalanche_sst.models.resnet_cifar import _init_weights

    for m in model.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    _init_weights(model)


def _random_flip(x: Tensor) -> Tensor:
    flips = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flips.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


class DMLStrategy(SupervisedTemplate):
    """Two students trained with deep mutual learning; the better one is kept.

    :param model: the first student; after every experience it holds the
        chosen student's weights, so ``strategy.model`` is always the
        evaluated model.
    :param optimizer: an optimizer over ``model``'s parameters; the peer's
        parameters are added to its first parameter group.
    :param valid_stream: per-experience validation slices (``valid_stream[k]``
        for experience k); None: select on the training data.
    :param temperature: softmax temperature of the mutual KL (DML: 1).
    :param kl_weight: weight of the mutual KL (DML: 1).
    :param reinit_peer: give the peer a fresh random initialisation before
        experience 0 (DML's source of diversity).
    :param peer_flip: on later experiences, show the peer an independently
        flipped view of each image (keeps identical starting students apart).
    :param peer_init: the re-initialisation function (default :func:`fresh_init`).
    :param mutual_first_step: also train experience 0 mutually. Off by default:
        in the paper's comparison every method shares step 1 (one network
        trained from scratch with cross-entropy), and DML starts at step 2.
    Other arguments are :class:`~avalanche.training.templates.SupervisedTemplate`'s.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion=CrossEntropyLoss(),
        valid_stream=None,
        temperature: float = 1.0,
        kl_weight: float = 1.0,
        reinit_peer: bool = True,
        peer_flip: bool = True,
        peer_init: Callable[[nn.Module], None] = fresh_init,
        mutual_first_step: bool = False,
        **kwargs,
    ):
        super().__init__(model=model, optimizer=optimizer, criterion=criterion, **kwargs)
        self.peer: nn.Module = copy.deepcopy(model)
        self.valid_stream = valid_stream
        self.temperature = float(temperature)
        self.kl_weight = float(kl_weight)
        self.reinit_peer = bool(reinit_peer)
        self.peer_flip = bool(peer_flip)
        self.peer_init = peer_init
        self.mutual_first_step = bool(mutual_first_step)
        self.peer_output: Optional[Tensor] = None
        self.dml_history: list[dict] = []

    @property
    def students(self) -> tuple[nn.Module, nn.Module]:
        return self.model, self.peer

    # ----------------------------------------------------------- training
    def _before_training_exp(self, **kwargs):
        self.peer.to(self.device)
        self.peer.train()
        if self.clock.train_exp_counter == 0 and self.reinit_peer and self.mutual_first_step:
            self.peer_init(self.peer)
        super()._before_training_exp(**kwargs)

    def make_optimizer(self, reset_optimizer_state=True, **kwargs):
        """Both students' parameters in the optimizer; its state is always reset
        (called at the start of every experience)."""
        params = {f"student1.{n}": p for n, p in self.model.named_parameters()}
        params.update({f"student2.{n}": p for n, p in self.peer.named_parameters()})
        self.optimized_param_id = update_optimizer(
            self.optimizer, params, self.optimized_param_id, reset_state=True,
        )

    def _mutual(self) -> bool:
        return self.mutual_first_step or self.clock.train_exp_counter > 0

    def training_passes_per_sample(self) -> float:
        """Cost per training sample (``metrics.cost``): both students train in a mutual experience."""
        return 2 * TRAIN_COST if self._mutual() else TRAIN_COST

    def forward(self):
        out = super().forward()
        if self.is_training and self._mutual():
            x = self.mb_x
            if self.peer_flip and self.clock.train_exp_counter > 0:
                x = _random_flip(x)
            if hasattr(self.experience, "task_labels"):
                self.peer_output = avalanche_forward(self.peer, x, self.mb_task_id)
            else:
                self.peer_output = self.peer(x)
        return out

    def criterion(self):
        if not self.is_training or self.peer_output is None:
            return super().criterion()
        y = self.mb_y
        l1 = dml_loss(self.mb_output, self.peer_output, y, self.temperature, self.kl_weight)
        l2 = dml_loss(self.peer_output, self.mb_output, y, self.temperature, self.kl_weight)
        self.peer_output = None
        return l1 + l2

    # ---------------------------------------------------------- selection
    def _after_training_exp(self, **kwargs):
        if self._mutual():
            self.select_student()
        else:  # step 1 trained one network: the peer starts the next step from it
            self.peer.load_state_dict(self.model.state_dict())
        super()._after_training_exp(**kwargs)

    def select_student(self) -> int:
        """Evaluate both students on the validation data, keep the better one.

        Returns 1 or 2 (the chosen student); ``self.model`` then holds its
        weights and the peer is re-synchronised to them.
        """
        step = int(self.clock.train_exp_counter)
        data = validation_data(self.experience, self.valid_stream)
        acc1 = accuracy(self.model, data, self.device, self.eval_mb_size)
        acc2 = accuracy(self.peer, data, self.device, self.eval_mb_size)
        charge(self, 2 * len(data) * FORWARD_COST)
        chosen = 1 if acc1 >= acc2 else 2
        if chosen == 2:
            self.model.load_state_dict(self.peer.state_dict())
        else:
            self.peer.load_state_dict(self.model.state_dict())
        log_scalar(self, "dml/val_acc_student1", acc1, step=step)
        log_scalar(self, "dml/val_acc_student2", acc2, step=step)
        log_scalar(self, "dml/chosen_student", chosen, step=step)
        self.dml_history.append({"experience": step, "val_acc": (acc1, acc2), "chosen": chosen})
        return chosen

    # ------------------------------------------------------------- resume
    def dml_state_dict(self) -> dict:
        return {
            "peer": {k: v.detach().cpu().clone() for k, v in self.peer.state_dict().items()},
            "history": [{"experience": h["experience"], "val_acc": list(h["val_acc"]),
                         "chosen": h["chosen"]} for h in self.dml_history],
        }

    def load_dml_state_dict(self, state: dict) -> None:
        self.peer.load_state_dict(state["peer"])
        self.dml_history = [{"experience": int(h["experience"]), "val_acc": tuple(h["val_acc"]),
                             "chosen": int(h["chosen"])} for h in state.get("history", [])]
