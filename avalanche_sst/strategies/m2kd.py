"""Thin strategies wiring :class:`~avalanche_sst.plugins.m2kd.M2KDPlugin`.

Zhou, Mai, Zhang, Xu, Wu & Davis, "M2KD: Incremental Learning via
Multi-model and Multi-level Knowledge Distillation", BMVC 2020.

* :class:`M2KD` -- exemplar-free M2KD (sec. 3, Fig. 4): a SupervisedTemplate
  whose model is the backbone wrapped in an :class:`M2KDModel` (growing head,
  auxiliary head on stage ``aux_stage``) and whose criterion is the plugin
  (eq. 2-4). ``teachers="last", prune_ratio=0, lam=0`` is LwF-MC.
* :class:`ICaRLM2KD` -- the exemplar setting (sec. 4.5, Fig. 5): Avalanche's
  ``ICaRL`` (herding exemplars, nearest-mean-of-exemplars at test time) with
  its distillation loss replaced by M2KD's: "iCaRL M2KD" is the default
  (all snapshots + auxiliary distillation), "iCaRL aux" is
  ``teachers="last", prune_ratio=0`` (penultimate model + auxiliary).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

from torch import Tensor, nn

from avalanche.training import ICaRL
from avalanche.training.losses import ICaRLLossPlugin
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.plugins.m2kd import M2KDModel, M2KDPlugin

__all__ = ["ICaRLExperienceInfo", "ICaRLM2KD", "M2KD", "TrainHeads"]


def _plugin_and_network(model, prune_ratio, alpha, lam, finetune_epochs, aux_stage, weight_decay_first,
                        weight_decay_after, teachers, exact_freeze, setting):
    network = model if isinstance(model, M2KDModel) else M2KDModel(model, aux_stage=aux_stage if lam > 0 else None)
    plugin = M2KDPlugin(network, prune_ratio=prune_ratio, alpha=alpha, lam=lam, finetune_epochs=finetune_epochs,
                        weight_decay_first=weight_decay_first, weight_decay_after=weight_decay_after,
                        teachers=teachers, exact_freeze=exact_freeze, setting=setting)
    return network, plugin


class M2KD(SupervisedTemplate):
    """Exemplar-free M2KD. ``model`` is a backbone (its ``fc`` is replaced by a
    growing head) or an :class:`M2KDModel`. ``train_epochs`` counts the
    training and the ``finetune_epochs`` fine-tuning epochs together (PackNet's
    convention; the paper's 80 + 15 is 95). Other keyword arguments go to
    ``SupervisedTemplate``; its ``criterion`` is the plugin."""

    def __init__(self, *, model: nn.Module, optimizer, prune_ratio: float = 0.75, alpha: float = 0.5,
                 lam: float = 1.0, finetune_epochs: int = 15, aux_stage: int = 2,
                 weight_decay_first: float = 1e-5, weight_decay_after: float = 0.0, teachers: str = "all",
                 exact_freeze: bool = True, setting: Optional[str] = None, plugins: Optional[list] = None,
                 **kwargs):
        if "criterion" in kwargs:
            raise ValueError("M2KD's criterion is its plugin (eq. 2-4); do not pass criterion=")
        network, self.m2kd = _plugin_and_network(model, prune_ratio, alpha, lam, finetune_epochs, aux_stage,
                                                 weight_decay_first, weight_decay_after, teachers, exact_freeze,
                                                 setting)
        super().__init__(model=network, optimizer=optimizer, criterion=self.m2kd,
                         plugins=[*(plugins or []), self.m2kd], **kwargs)


class TrainHeads(nn.Module):
    """iCaRL's training classifier: the growing head, with the auxiliary head
    as a child so Avalanche adapts and optimizes it too (it is applied by the
    plugin on the captured stage output, not here)."""

    def __init__(self, head: nn.Module, aux_head: Optional[nn.Module]):
        super().__init__()
        self.head = head
        self.aux_head = aux_head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


class ICaRLExperienceInfo(SupervisedPlugin):
    """Gives each training experience the ``.benchmark`` view Avalanche's iCaRL
    reads (``n_classes_per_exp``, ``classes_order``), built from the experiences
    trained so far, or from ``classes_per_exp`` (the labels of every training
    experience, e.g. the benchmark's ``.classes_per_exp``) when given, so that
    iCaRL sizes its class means for all classes at once. Benchmarks assembled
    with ``benchmark_from_datasets`` (all of :mod:`avalanche_sst.benchmarks.scenarios`)
    have no such attribute, and iCaRL fails on them without it. Put it before
    iCaRL's own plugin (the ``plugins`` argument of ``ICaRL`` is)."""

    def __init__(self, classes_per_exp: Optional[list] = None):
        super().__init__()
        groups = [sorted(int(c) for c in g) for g in (classes_per_exp or [])]
        self.n_classes_per_exp: list[int] = [len(g) for g in groups]
        self.classes_order: list[int] = [c for g in groups for c in g]

    def before_training_exp(self, strategy, **kwargs):
        exp = strategy.experience
        k = int(exp.current_experience)
        if k == len(self.n_classes_per_exp):
            classes = sorted(int(c) for c in exp.classes_in_this_experience)
            self.n_classes_per_exp.append(len(classes))
            self.classes_order.extend(classes)
        exp.benchmark = SimpleNamespace(n_classes_per_exp=list(self.n_classes_per_exp),
                                        classes_order=list(self.classes_order))

    def state_dict(self) -> dict:
        return {"n_classes_per_exp": list(self.n_classes_per_exp), "classes_order": list(self.classes_order)}

    def load_state_dict(self, state: dict) -> None:
        self.n_classes_per_exp = [int(n) for n in state["n_classes_per_exp"]]
        self.classes_order = [int(c) for c in state["classes_order"]]


class ICaRLM2KD(ICaRL):
    """Avalanche's iCaRL with M2KD's losses. ``model`` is a backbone as for
    :class:`M2KD`; ``memory_size``, ``buffer_transform`` and ``fixed_memory``
    are iCaRL's; ``classes_per_exp`` as :class:`ICaRLExperienceInfo`; the rest as :class:`M2KD`."""

    def __init__(self, *, model: nn.Module, optimizer, memory_size: int = 2000, buffer_transform=None,
                 fixed_memory: bool = True, prune_ratio: float = 0.75, alpha: float = 0.5, lam: float = 1.0,
                 finetune_epochs: int = 15, aux_stage: int = 2, weight_decay_first: float = 1e-5,
                 weight_decay_after: float = 0.0, teachers: str = "all", exact_freeze: bool = True,
                 setting: Optional[str] = None, classes_per_exp: Optional[list] = None,
                 plugins: Optional[list] = None, **kwargs):
        network, plugin = _plugin_and_network(model, prune_ratio, alpha, lam, finetune_epochs, aux_stage,
                                              weight_decay_first, weight_decay_after, teachers, exact_freeze, setting)
        aux = getattr(network, "aux_head", None)
        super().__init__(feature_extractor=network.features, classifier=TrainHeads(network.head, aux),
                         optimizer=optimizer, memory_size=memory_size, buffer_transform=buffer_transform,
                         fixed_memory=fixed_memory, plugins=[ICaRLExperienceInfo(classes_per_exp), *(plugins or [])],
                         **kwargs)
        self.plugins = [p for p in self.plugins if not isinstance(p, ICaRLLossPlugin)] + [plugin]
        self._criterion = plugin
        self.m2kd = plugin
