"""M2KD: multi-model and multi-level knowledge distillation with mask-based
snapshot reconstruction, as an Avalanche plugin.

Zhou, Mai, Zhang, Xu, Wu & Davis, "M2KD: Incremental Learning via
Multi-model and Multi-level Knowledge Distillation", BMVC 2020.

* Losses (eq. 2-4, :mod:`avalanche_sst.functional.m2kd_losses`): ``L_MMD + lam * L_AD``;
  sigmoid BCE over the seen units, mean over samples and units.
* Auxiliary head (sec. 3.2): global average pooling + a growing linear head
  on the output of residual stage ``aux_stage`` (2: ``layer2`` of the CIFAR
  ResNets); used in training only.
* Reconstruction (sec. 3.3, eq. 5-8): every Conv2d/Linear weight of the
  backbone carries a uint8 step id (255 = free, :mod:`avalanche_sst.functional.ownership`).
  After the training epochs of step k, in each layer the largest-|w| free
  weights are kept so that ``prune_ratio`` of the free ones is released; the
  kept ones get id k, the released ones are zeroed; the network is then
  fine-tuned for ``finetune_epochs`` (optimizer state reset at the prune
  point) with earlier steps' weights frozen exactly and released weights held
  at zero. Snapshot k = the current weights masked to ``id <= k`` plus its own
  saved BatchNorm parameters and statistics, biases, main and auxiliary head,
  run in eval mode through ``torch.func.functional_call`` on the one shared
  module (no copy of any earlier model). ``prune_ratio=0`` is the paper's "no
  pruning" ablation: nothing is frozen and full snapshots are stored.
* Optimisation: weight decay ``weight_decay_first`` (1e-5) at step 1 and
  ``weight_decay_after`` (0) afterwards, as the paper; owned weights are
  frozen bit-exactly whatever the optimizer does (``exact_freeze``).
* BatchNorm statistics (``recompute_bn``, default on): at the end of each step
  the running statistics are recomputed in one pass over the step's training
  data (no augmentation, ``torch.optim.swa_utils.update_bn``) with the final
  weights, before the snapshot saves them. Pruning changes every layer's
  output at once, and BatchNorm's momentum (0.1) over the few fine-tuning
  iterations of a small run leaves evaluation and the snapshot reading
  statistics of the unpruned weights; the paper's 15 epochs of ~40
  iterations each let the momentum converge to what the pass computes.
* ``prune_log``: per step, the accuracy on the step's own training data
  (eval mode, statistics recomputed for each reading) before pruning, right
  after it, and at the end of the step, after fine-tuning
  (``log_prune_accuracy``; monitoring: not counted as training cost, and the
  running statistics are restored after each reading).

As Avalanche's ``PackNetPlugin``, the fine-tuning epochs are the last
``finetune_epochs`` of the strategy's ``train_epochs`` (the paper's 80 + 15 is
``train_epochs=95``); with the paper's step schedule (lr / 5 every 40 epochs)
they run at the last learning rate. The plugin is also the criterion:
``SupervisedTemplate(model, opt, criterion=plugin, plugins=[plugin])``
(:class:`avalanche_sst.strategies.m2kd.M2KD` wires it).

LwF-MC (Rebuffi et al.'s exemplar-free iCaRL loss, eq. 1) is
``teachers="last", prune_ratio=0, lam=0``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from avalanche.models import IncrementalClassifier
from avalanche.training.plugins import SupervisedPlugin

from avalanche_sst.benchmarks.batched_fetch import batched_loader
from avalanche_sst.functional.m2kd_losses import ad_loss, m2kd_loss, mmd_loss, seen_bce
from avalanche_sst.metrics.cost import FORWARD_COST, charge
from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.models.stages import stage, stage_out_channels
from avalanche_sst.functional.ownership import (
    FREE,
    OWNER_BUFFER,
    attach_owner_ids,
    eval_mode,
    frozen_update,
    functional_forward,
    layers_with_buffer,
    magnitude_keep_mask,
    mask_frozen_grads,
    masked_weights,
)

__all__ = ["M2KDModel", "M2KDPlugin", "exemplar_bytes", "grow_incremental_classifier", "m2kd_memory_bytes"]

HEADS = ("head", "aux_head")


def m2kd_memory_bytes(owner_ids: int, snapshot_bytes: list[int], bytes_per_id: int = 1) -> int:
    """Bytes M2KD keeps beyond one model (the paper's Table 2): one uint8 id per
    owned weight plus each stored snapshot's tensors (BatchNorm, biases, heads;
    whole models when nothing is pruned)."""
    if owner_ids < 0 or any(b < 0 for b in snapshot_bytes):
        raise ValueError("owner_ids and snapshot_bytes must be >= 0")
    return int(owner_ids) * int(bytes_per_id) + int(sum(snapshot_bytes))


def exemplar_bytes(n_exemplars: int, image_shape: tuple[int, ...], bytes_per_value: int = 1) -> int:
    """Bytes of iCaRL's exemplar memory: K images x bytes per image (uint8 by default)."""
    if n_exemplars < 0 or any(int(d) < 1 for d in image_shape):
        raise ValueError(f"need n_exemplars >= 0 and a positive image_shape, got {n_exemplars}, {image_shape}")
    size = 1
    for d in image_shape:
        size *= int(d)
    return int(n_exemplars) * size * int(bytes_per_value)


class M2KDModel(nn.Module):
    """``features`` (the backbone, its classifier replaced by Identity), a growing
    ``head`` and, when ``aux_stage`` is given, a growing ``aux_head`` on that stage."""

    def __init__(self, backbone: nn.Module, aux_stage: Optional[int] = 2, initial_classes: int = 2):
        super().__init__()
        attr = next((a for a in ("fc", "classifier") if isinstance(getattr(backbone, a, None), nn.Linear)), None)
        if attr is None:
            raise ValueError(f"M2KD needs the backbone's final Linear as an `fc` or `classifier` attribute; "
                             f"{backbone.__class__.__name__} has neither")
        in_features = getattr(backbone, attr).in_features
        setattr(backbone, attr, nn.Identity())
        self.features = backbone
        self.head = IncrementalClassifier(in_features, initial_classes)
        self.aux_stage = aux_stage
        self._captured: Optional[Tensor] = None
        if aux_stage is not None:
            _, stage_module = stage(backbone, aux_stage, "M2KD's auxiliary head (aux_stage)")
            self.aux_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                          IncrementalClassifier(stage_out_channels(stage_module), initial_classes))
            stage_module.register_forward_hook(self._capture)
        attach_owner_ids(self, exclude=HEADS)

    def _capture(self, module, inputs, output):
        self._captured = output

    def forward(self, x: Tensor, with_aux: bool = False):
        logits = self.head(self.features(x))
        return (logits, self.aux_logits()) if with_aux else logits

    def aux_logits(self) -> Tensor:
        """The auxiliary head on the stage output of the last forward pass."""
        if self.aux_stage is None:
            raise ValueError("this M2KDModel has no auxiliary head (aux_stage=None); use lam=0")
        feature, self._captured = self._captured, None
        if feature is None:
            raise RuntimeError("aux_logits() needs a forward pass first")
        return self.aux_head(feature)


def grow_incremental_classifier(head: IncrementalClassifier, units: int) -> None:
    """Resize ``head`` to ``units`` outputs (fresh weights), as a checkpointed one was."""
    lin = head.classifier
    if lin.out_features != units:
        head.classifier = nn.Linear(lin.in_features, units).to(lin.weight.device)
        head.active_units = torch.zeros(units, dtype=torch.int8, device=lin.weight.device)


def _incremental_heads(model: M2KDModel) -> dict[str, IncrementalClassifier]:
    return {n: m for n, m in model.named_modules() if isinstance(m, IncrementalClassifier)}


class M2KDPlugin(SupervisedPlugin):
    """M2KD (Zhou et al., BMVC 2020, eq. 2-8); see the module docstring.

    :param network: the :class:`M2KDModel` (default: the strategy's model).
    :param prune_ratio: r, the fraction of each layer's free weights released
        after a step (paper: 0.75; 0.8 for 20-class steps); 0 = no pruning.
    :param alpha: weight of the auxiliary label BCE in L_AD (eq. 3).
    :param lam: weight of L_AD in the total loss (eq. 4); 0 drops it.
    :param finetune_epochs: epochs after the prune point (the last ones of train_epochs).
    :param weight_decay_first, weight_decay_after: weight decay at step 1 / later steps.
    :param teachers: "all" (multi-model, eq. 2) or "last" (penultimate model only, eq. 1).
    :param exact_freeze: write frozen weights back after each step (False: gradient
        masking only, as a negative control; weight decay then moves them).
    :param setting: the benchmark's ``.setting`` when known (checked up front); every
        experience is also checked: task label 0, new contiguous labels after the seen ones.
    :param recompute_bn: recompute BatchNorm running statistics on the step's data with the
        final weights before the snapshot is saved (see the module docstring).
    :param log_prune_accuracy: record ``prune_log`` (three extra readings of the step's data).
    """

    def __init__(self, network: Optional[M2KDModel] = None, prune_ratio: float = 0.75, alpha: float = 0.5,
                 lam: float = 1.0, finetune_epochs: int = 15, weight_decay_first: float = 1e-5,
                 weight_decay_after: float = 0.0, teachers: str = "all", exact_freeze: bool = True,
                 setting: Optional[str] = None, recompute_bn: bool = True, log_prune_accuracy: bool = True):
        super().__init__()
        if setting is not None and setting != "class_incremental":
            raise ValueError(f"M2KD runs in the class-incremental setting, got a {setting!r} benchmark: build it "
                             f"with avalanche_sst.benchmarks.scenarios.class_incremental")
        if not 0.0 <= float(prune_ratio) < 1.0:
            raise ValueError(f"prune_ratio must be in [0, 1) (0 = no pruning, full snapshots), got {prune_ratio!r}")
        if alpha < 0 or lam < 0:
            raise ValueError(f"alpha and lam must be >= 0, got alpha={alpha!r}, lam={lam!r}")
        if int(finetune_epochs) < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs!r}")
        if teachers not in ("all", "last"):
            raise ValueError(f"teachers must be 'all' (M2KD) or 'last' (LwF-MC), got {teachers!r}")
        if network is not None:
            self._check_network(network, lam)
        self.network = network
        self.prune_ratio = float(prune_ratio)
        self.alpha, self.lam = float(alpha), float(lam)
        self.finetune_epochs = int(finetune_epochs) if prune_ratio > 0 else 0
        self.weight_decay_first, self.weight_decay_after = weight_decay_first, weight_decay_after
        self.teachers, self.exact_freeze = teachers, exact_freeze
        self.recompute_bn, self.log_prune_accuracy = bool(recompute_bn), bool(log_prune_accuracy)
        # per finished step: training-data accuracy before / right after pruning / after fine-tuning
        self.prune_log: list[dict[str, float]] = []
        self._reading: dict[str, float] = {}
        self._step_closed = False
        self.snapshots: list[dict[str, Tensor]] = []  # one per finished step ({} when dropped)
        self.boundaries: list[int] = []  # C_1, ..., C_k after each finished step
        self.phase: Optional[str] = None  # "train", "finetune" or None
        self._epochs = 0
        self._teacher_scores: Optional[tuple[list[Tensor], list[Tensor]]] = None
        self._guard = None

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _check_network(network, lam):
        if not isinstance(network, M2KDModel):
            raise TypeError(f"M2KDPlugin needs an M2KDModel (wrap the backbone: M2KDModel(backbone)), "
                            f"got {network.__class__.__name__}")
        if lam > 0 and network.aux_stage is None:
            raise ValueError("lam > 0 needs the auxiliary head: build M2KDModel(backbone, aux_stage=2) or set lam=0")

    @property
    def step(self) -> int:
        """0-based index of the current (or next) step."""
        return len(self.boundaries)

    def _layers(self):
        return layers_with_buffer(self.network, OWNER_BUFFER)

    def _frozen(self, name, module):
        if self.prune_ratio == 0:
            return None
        owner = getattr(module, OWNER_BUFFER)
        return owner < self.step if self.phase == "finetune" else owner != FREE

    def _zeroed(self, name, module):
        return getattr(module, OWNER_BUFFER) == FREE if self.phase == "finetune" else None

    def snapshot_substitutions(self, k: int) -> dict[str, Tensor]:
        """Parameters/buffers of snapshot k (eq. 7-8) for ``functional_forward(self.network, ...)``."""
        saved = self.snapshots[k]
        if not saved:
            raise ValueError(f"snapshot {k} was not kept (teachers='last' keeps only the latest)")
        if self.prune_ratio == 0:
            return saved
        return {**saved, **masked_weights(self._layers(), lambda n, m: getattr(m, OWNER_BUFFER) <= k)}

    @torch.no_grad()
    def snapshot_forward(self, k: int, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """(main logits, auxiliary logits or None) of snapshot k on ``x``, in eval mode."""
        with_aux = self.network.aux_stage is not None
        with eval_mode(self.network):
            out = functional_forward(self.network, self.snapshot_substitutions(k), x, with_aux=with_aux)
        return out if with_aux else (out, None)

    def _check_experience(self, strategy):
        exp = strategy.experience
        benchmark = getattr(getattr(exp, "origin_stream", None), "benchmark", None)
        setting = getattr(benchmark, "setting", "class_incremental")
        # read through getattr: a same-class or domain experience may carry no class list, and the
        # setting error below is the one to show
        classes = sorted(int(c) for c in (getattr(exp, "classes_in_this_experience", None) or ()))
        seen = self.boundaries[-1] if self.boundaries else 0
        task_labels = set(getattr(exp, "task_labels", [0]))
        if setting != "class_incremental" or task_labels != {0} or not classes or classes[0] < seen:
            raise ValueError(
                f"M2KD runs in the class-incremental setting (disjoint class groups, task label 0); "
                f"experience {exp.current_experience} has setting {setting!r}, task labels {sorted(task_labels)} "
                f"and classes {classes[:10]} while {seen} units are already seen: build the benchmark with "
                f"avalanche_sst.benchmarks.scenarios.class_incremental")
        if classes != list(range(seen, seen + len(classes))):
            raise ValueError(f"M2KD needs contiguous labels per experience (experience k after those of k-1), "
                             f"got {classes[:10]} after {seen} seen units: relabel by the class order "
                             f"(scenarios.class_incremental does)")
        return seen + len(classes)

    # ---------------------------------------------------------------- callbacks
    def before_training_exp(self, strategy, **kwargs):
        if self.network is None:
            self._check_network(strategy.model, self.lam)
            self.network = strategy.model
        self._units = self._check_experience(strategy)
        # beside the network's weights, wherever they are now: a resumed run reads its snapshots onto the CPU
        self.snapshots = [{name: t.to(strategy.device) for name, t in s.items()} for s in self.snapshots]
        if self.finetune_epochs and strategy.train_epochs <= self.finetune_epochs:
            raise ValueError(f"train_epochs={strategy.train_epochs} must exceed finetune_epochs="
                             f"{self.finetune_epochs}: the fine-tuning epochs are the last ones of train_epochs")
        wd = self.weight_decay_first if self.step == 0 else self.weight_decay_after
        for group in strategy.optimizer.param_groups:
            group["weight_decay"] = wd
        self.phase, self._epochs = "train", 0
        self._step_closed, self._reading = False, {}

    def _teachers(self) -> list[int]:
        """The snapshots run as teachers at this step's training iterations."""
        if self.phase is None or not self.snapshots:
            return []
        return list(range(len(self.snapshots))) if self.teachers == "all" else [len(self.snapshots) - 1]

    def extra_passes_per_sample(self, strategy) -> float:
        """Cost (``metrics.cost``, sample-passes per training sample) of the snapshot
        teachers: one forward each, 1/3 of a training pass."""
        return FORWARD_COST * len(self._teachers())

    def before_forward(self, strategy, **kwargs):
        keep = self._teachers()
        if not keep:
            self._teacher_scores = None
            return
        main, aux = {}, {}
        for k in keep:
            m, a = self.snapshot_forward(k, strategy.mb_x)
            main[k], aux[k] = torch.sigmoid(m), (torch.sigmoid(a) if a is not None else None)
        order = [k if self.teachers == "all" else keep[0] for k in range(len(self.snapshots))]
        self._teacher_scores = ([main[k] for k in order], [aux[k] for k in order])

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.phase is None or self.network is None or not self.network.head.training:
            return seen_bce(logits, torch.nn.functional.one_hot(targets.long(), logits.shape[1]).to(logits.dtype))
        bounds = [*self.boundaries, self._units]
        main_t, aux_t = self._teacher_scores or ([], [])
        loss = mmd_loss(logits, targets, main_t, bounds)
        if self.lam > 0:
            loss = m2kd_loss(loss, ad_loss(self.network.aux_logits(), targets, aux_t, bounds, self.alpha), self.lam)
        self._teacher_scores = None
        return loss

    def before_update(self, strategy, **kwargs):
        if self.prune_ratio == 0:
            return
        if self.exact_freeze:
            self._guard = frozen_update(self._layers(), self._frozen, self._zeroed)
            self._guard.__enter__()
        else:
            mask_frozen_grads(self._layers(), self._frozen, self._zeroed)

    def after_update(self, strategy, **kwargs):
        if self._guard is not None:
            self._guard.__exit__(None, None, None)
            self._guard = None

    def after_training_epoch(self, strategy, **kwargs):
        self._epochs += 1
        prune_point = strategy.train_epochs - self.finetune_epochs
        if self.prune_ratio > 0 and self.phase == "train" and self._epochs == prune_point:
            self._prune_with_readings(strategy)
            strategy.optimizer.state.clear()  # the paper's fine-tuning restarts the optimizer
            self.phase = "finetune"
        if self._epochs == strategy.train_epochs:
            # here, not in after_training_exp: other plugins (iCaRL's class means) read the
            # model in their after_training_exp, which may run before this plugin's
            self._close_step(strategy)

    # ---------------------------------------------------------------- statistics and readings
    def _step_loader(self, strategy) -> DataLoader:
        data = getattr(strategy, "adapted_dataset", None) or strategy.experience.dataset
        data = data.eval()
        return batched_loader(data, strategy.train_mb_size)

    def _refresh_bn(self, strategy, loader) -> None:
        update_bn(loader, self.network, device=strategy.device)

    @torch.no_grad()
    def _accuracy(self, strategy, loader) -> float:
        correct = total = 0
        with eval_mode(self.network):
            for x, y, *_ in loader:
                x, y = x.to(strategy.device), y.to(strategy.device)
                correct += int((self.network(x).argmax(1) == y).sum())
                total += int(y.numel())
        self.network._captured = None
        return correct / max(total, 1)

    def _read(self, strategy, key: str, loader=None, refresh: bool = True) -> None:
        """Accuracy on the step's data; with ``refresh``, read with statistics recomputed for
        these weights and the running ones restored after (monitoring leaves the method as it was)."""
        if not self.log_prune_accuracy:
            return
        loader = loader or self._step_loader(strategy)
        saved = {k: v.clone() for k, v in self.network.state_dict().items()
                 if k.endswith(("running_mean", "running_var", "num_batches_tracked"))} if refresh else {}
        if refresh:
            self._refresh_bn(strategy, loader)
        self._reading[key] = self._accuracy(strategy, loader)
        if saved:
            self.network.load_state_dict(saved, strict=False)

    def _prune_with_readings(self, strategy) -> None:
        self._read(strategy, "before_prune")
        self.prune()
        self._read(strategy, "after_prune")

    def _close_step(self, strategy) -> None:
        """Recompute BatchNorm statistics with the final weights; record the step's readings."""
        if self._step_closed:
            return
        self._step_closed = True
        if self.prune_ratio > 0 and self.phase == "train":  # train_epochs ended before the prune point
            self._prune_with_readings(strategy)
        loader = self._step_loader(strategy)
        if self.recompute_bn:
            self._refresh_bn(strategy, loader)
            charge(strategy, FORWARD_COST * len(loader.dataset), "train")
        self._read(strategy, "end_of_step", loader, refresh=not self.recompute_bn)
        if self._reading:
            self.prune_log.append({"step": float(self.step + 1), **self._reading})
            for key, value in self._reading.items():
                log_scalar(strategy, f"M2KD/train_acc_{key}", value)
        self._reading = {}

    @torch.no_grad()
    def prune(self) -> None:
        """Keep the largest-|w| free weights of each layer (id = this step), zero the released ones."""
        for _, m in self._layers():
            owner = getattr(m, OWNER_BUFFER)
            free = owner == FREE
            keep = magnitude_keep_mask(m.weight, free, self.prune_ratio)
            owner[keep] = self.step
            m.weight[free & ~keep] = 0.0

    def after_training_exp(self, strategy, **kwargs):
        self._close_step(strategy)  # an early stop skipped the last epoch's callback
        owned = {f"{n}.weight" for n, _ in self._layers()} if self.prune_ratio > 0 else set()
        snapshot = {name: t.detach().clone() for name, t in self.network.state_dict().items()
                    if name not in owned and not name.endswith(OWNER_BUFFER)}
        if self.teachers == "last":
            self.snapshots = [{} for _ in self.snapshots]
        self.snapshots.append(snapshot)
        self.boundaries.append(self._units)
        self.phase = None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        heads = {n: int(h.classifier.out_features) for n, h in _incremental_heads(self.network).items()}
        return {"snapshots": [dict(s) for s in self.snapshots], "boundaries": list(self.boundaries),
                "head_units": heads, "prune_log": [dict(r) for r in self.prune_log]}

    def rebuild_model(self, state: dict, network: Optional[M2KDModel] = None) -> None:
        """Grow the heads to their checkpointed widths (before ``model.load_state_dict``)."""
        network = network or self.network
        heads = _incremental_heads(network)
        for name, units in state.get("head_units", {}).items():
            grow_incremental_classifier(heads[name], int(units))

    def load_state_dict(self, state: dict) -> None:
        self.snapshots = [dict(s) for s in state["snapshots"]]
        self.boundaries = [int(b) for b in state["boundaries"]]
        self.prune_log = [{k: float(v) for k, v in r.items()} for r in state.get("prune_log", [])]
        self.phase = None

    def memory_bytes(self) -> int:
        """Bytes this plugin keeps beyond the model itself (see :func:`m2kd_memory_bytes`)."""
        ids = sum(getattr(m, OWNER_BUFFER).numel() for _, m in self._layers()) if self.prune_ratio > 0 else 0
        return m2kd_memory_bytes(ids, [sum(t.numel() * t.element_size() for t in s.values())
                                       for s in self.snapshots])
