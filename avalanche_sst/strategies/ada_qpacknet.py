"""Ada-QPacknet as an Avalanche strategy: Pietron, Zurek, Faber & Corizzo,
"Ada-QPacknet - adaptive pruning with bit width reduction as an efficient
continual learning method without forgetting", ECAI 2023 (METHOD.md,
"Ada-QPacknet").

Task-incremental only (one experience per task label; the label selects the
task's sub-network at test time). Per experience (task t):

1. Adaptive pruning, Alg. 1 (eq. 6-9; :mod:`avalanche_sst.functional.adaptive_pruning`):
   the live weights get a fresh Xavier initialisation; ``population`` (P_S)
   candidate masks are drawn, each layer keeping a random ``1 - s`` of the
   positions that still have room for ``max_bits`` more bits,
   ``s ~ U[v_min, v_max]``; each candidate trains ``search_epochs`` from that
   same initialisation (Alg. 1 line 1: one initialisation, masked per
   candidate) and is scored on the experience's validation slice; the argmax
   of ``alpha * A / max A + beta * Y / max Y`` (Y: eq. 7, positions no task
   uses) continues training for ``full_epochs`` through Avalanche's loop
   (plugins and evaluator see this phase; the search is a plain inner loop).
2. Adaptive quantization, Alg. 2-3 (:mod:`avalanche_sst.functional.quantization`):
   per-layer k-means (or the linear quantizer) with ``2**b`` centroids over
   the task's own weights, ``b`` raised from ``start_bits`` until the
   validation accuracy is within ``delta`` points of the unquantized one
   (at most ``max_bits``; if even that misses, ``max_bits`` is kept and
   ``met_delta`` is logged as 0).
3. The task is committed to :class:`~avalanche_sst.models.quantized_multitask.QuantizedMultiTaskModel`
   (codes, codebooks, fp32 BatchNorm/biases/head; bits charged to its
   positions; float weights discarded).

Optimiser: Adam with cosine annealing from ``lr`` = 0.01 to ``lr_min`` = 1e-4
per phase (per iteration). Ablations (the paper's Table 4):
``prune=False`` (quantization only: the mask is every available position)
and ``quantize=False`` (pruning only: fp32 values, 32 bits per position).

A :class:`~avalanche_sst.metrics.cost.CostMeter` among the plugins is charged
the search's training (1 per sample per candidate epoch) and every validation
pass of the search and of the bit-width choice (1/3 per sample).

Logged per task with :func:`~avalanche_sst.metrics.log_scalar` (step = task
label) under ``adaqpacknet/``: drawn sparsity per layer, bits, accuracy before
and after quantization, capacity (eq. 10) as a fraction of the fp32 bits of
all the network's Conv2d/Linear weights (head included); the same values are kept in ``strategy.task_reports``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
from torch import nn
from torch.nn import CrossEntropyLoss
from torch.optim.lr_scheduler import CosineAnnealingLR
from avalanche.training.plugins import LRSchedulerPlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_sst.benchmarks.batched_fetch import batched_loader
from avalanche_sst.functional.adaptive_pruning import (
    draw_candidate_masks,
    fitness,
    select_candidate,
    validate_sparsity_bounds,
    weighted_sparsity_left,
)
from avalanche_sst.metrics.cost import FORWARD_COST, TRAIN_COST, charge
from avalanche_sst.metrics.logging import log_scalar
from avalanche_sst.metrics.validation import accuracy, validation_slice
from avalanche_sst.models.quantized_multitask import USED_BITS, QuantizedMultiTaskModel
from avalanche_sst.functional.quantization import POSITION_BITS, QUANTIZERS, validate_bits

__all__ = ["AdaQPackNet"]


class _TaskView(nn.Module):
    """``model(x, task)`` as a one-argument module, for :func:`accuracy`."""

    def __init__(self, model: QuantizedMultiTaskModel, task: int):
        super().__init__()
        self.model, self.task = model, int(task)

    def forward(self, x):
        return self.model(x, self.task)


class _CosineToMin(LRSchedulerPlugin):
    """Every experience: lr reset to ``lr``, then cosine to ``lr_min`` over its iterations."""

    def __init__(self, lr: float, lr_min: float):
        self.lr, self.lr_min = float(lr), float(lr_min)
        super().__init__(_NoScheduler(), reset_scheduler=False, reset_lr=False, step_granularity="iteration")

    def before_training_exp(self, strategy, *args, **kwargs):
        for group in strategy.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.lr
        steps = strategy.train_epochs * max(len(strategy.dataloader), 1)
        self.scheduler = CosineAnnealingLR(strategy.optimizer, T_max=steps, eta_min=self.lr_min)
        super().before_training_exp(strategy, *args, **kwargs)


class _NoScheduler:
    base_lrs: list = []

    def step(self):  # pragma: no cover - replaced before any training
        pass


class AdaQPackNet(SupervisedTemplate):
    """Adaptive pruning + adaptive quantization, forget-free, task-incremental.

    :param model: the network (one head sized for a task's classes) or a
        :class:`QuantizedMultiTaskModel` around it; ``strategy.model`` is the wrapper.
    :param valid_stream: per-experience validation slices
        (``benchmark.valid_stream``; build the benchmark with ``validation_fraction > 0``):
        the candidate search and the bit-width choice are made on them.
    :param population: P_S, candidate masks per task (16).
    :param v_min, v_max: bounds of a layer's drawn sparsity (0.45, 0.85).
    :param alpha, beta: weights of accuracy and sparsity in the fitness (0.9, 0.1).
    :param delta: largest accepted accuracy drop of quantization, in points (1.0).
    :param search_epochs, full_epochs: epochs per candidate and of the winner (5, 50).
    :param start_bits, max_bits: first and largest bit-width tried (2, 8).
    :param quantizer: "kmeans" (Alg. 3) or "linear".
    :param prune, quantize: switch the two stages off for the ablation.
    :param lr, lr_min: Adam's cosine schedule (0.01 -> 1e-4).
    :param head: module name of the per-task head (default: the last Linear).
    :param unseen_tasks: evaluating a task label never trained: "raise" (ValueError) or
        "zeros" (all-zero logits; the sweep evaluates whole streams and scores seen tasks
        only). Both apply when the strategy wraps ``model`` itself.
    :param seed: seeds the candidate draws and k-means.
    Other arguments are :class:`SupervisedTemplate`'s (the optimizer is Adam, built here).
    """

    def __init__(self, *, model: nn.Module, valid_stream, population: int = 16, v_min: float = 0.45,
                 v_max: float = 0.85, alpha: float = 0.9, beta: float = 0.1, delta: float = 1.0,
                 search_epochs: int = 5, full_epochs: int = 50, start_bits: int = 2, max_bits: int = 8,
                 quantizer: str = "kmeans", prune: bool = True, quantize: bool = True, lr: float = 0.01,
                 lr_min: float = 1e-4, head: Optional[str] = None, unseen_tasks: str = "raise", seed: int = 0,
                 criterion=CrossEntropyLoss(), plugins: Optional[list] = None, **kwargs):
        self.v_min, self.v_max = validate_sparsity_bounds(v_min, v_max)
        self.max_bits = validate_bits(max_bits, "max_bits")
        self.start_bits = validate_bits(start_bits, "start_bits")
        if self.start_bits > self.max_bits:
            raise ValueError(f"start_bits ({start_bits}) must not exceed max_bits ({max_bits})")
        if quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
        if not (prune or quantize):
            raise ValueError("prune=False and quantize=False would give every task all 32 bits of every "
                             "position; keep at least one stage on")
        if valid_stream is None:
            raise ValueError("Ada-QPacknet selects masks and bit-widths on validation data: pass "
                             "valid_stream=benchmark.valid_stream (a benchmark built with validation_fraction > 0)")
        for name, value in (("population", population), ("search_epochs", search_epochs),
                            ("full_epochs", full_epochs)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if float(delta) < 0 or not 0 < float(lr_min) <= float(lr):
            raise ValueError(f"need delta >= 0 and 0 < lr_min <= lr, got delta={delta}, lr={lr}, lr_min={lr_min}")
        if not isinstance(model, QuantizedMultiTaskModel):
            model = QuantizedMultiTaskModel(model, head=head, unseen_tasks=unseen_tasks)
        self.valid_stream = valid_stream
        self.population, self.alpha, self.beta = int(population), float(alpha), float(beta)
        self.delta = float(delta)
        self.search_epochs, self.full_epochs = int(search_epochs), int(full_epochs)
        self.quantizer, self.prune, self.quantize = quantizer, bool(prune), bool(quantize)
        self.lr, self.lr_min, self.seed = float(lr), float(lr_min), int(seed)
        self.task_reports: list[dict] = []
        self._pending_cost = {"train": 0.0, "valid": 0.0}
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        super().__init__(model=model, optimizer=optimizer, criterion=criterion,
                         plugins=[_CosineToMin(self.lr, self.lr_min), *(plugins or [])], **kwargs)
        self.train_epochs = self.full_epochs

    # --- checks ---------------------------------------------------------------------
    def _task_label(self, experience) -> int:
        labels = list(experience.task_labels)
        if len(labels) != 1:
            raise ValueError(f"Ada-QPacknet needs one task label per experience, got {labels}; "
                             f"use a task-incremental scenario")
        task = int(labels[0])
        stream_labels = None
        try:
            stream_labels = [int(e.task_label) for e in experience.origin_stream]
        except Exception:  # streams without random access: the per-task check below still applies
            pass
        if stream_labels is not None and len(set(stream_labels)) != len(stream_labels):
            raise ValueError(f"the stream's task labels {stream_labels} repeat: Ada-QPacknet runs only in a "
                             f"task-incremental scenario (one task label per experience, e.g. "
                             f"scenarios.task_incremental), not a class-incremental one")
        if task in self.model.trained_tasks:
            raise ValueError(f"task label {task} was already trained: Ada-QPacknet runs only in a "
                             f"task-incremental scenario, not a class-incremental one")
        return task

    def _valid_data(self):
        data = validation_slice(self.experience, self.valid_stream)
        if data is None or len(data) == 0:
            raise ValueError(f"valid_stream has no data for experience {self.experience.current_experience}; "
                             f"build the benchmark with validation_fraction > 0")
        return data

    def _val_accuracy(self, task: int) -> float:
        data = self._valid_data()
        self._pending_cost["valid"] += len(data) * FORWARD_COST
        return accuracy(_TaskView(self.model, task), data, self.device, self.eval_mb_size or 1000)

    def _charge_pending_cost(self) -> None:
        """Hand the search's and the quantization's work to a cost meter (``metrics.cost``).

        The meter opens a step in its ``before_training_exp``, after the search has run,
        so the work is kept here until then."""
        for kind, passes in self._pending_cost.items():
            if passes:
                charge(self, passes, kind)
        self._pending_cost = {kind: 0.0 for kind in self._pending_cost}

    # --- Alg. 1 -----------------------------------------------------------------------
    def _short_train(self, task: int, epochs: int) -> None:
        data = self.experience.dataset.train()
        loader = batched_loader(data, self.train_mb_size, shuffle=True)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        schedule = CosineAnnealingLR(optimizer, T_max=epochs * max(len(loader), 1), eta_min=self.lr_min)
        self.model.train()
        for _ in range(epochs):
            for batch in loader:
                x, y = batch[0].to(self.device), batch[1].to(self.device)
                optimizer.zero_grad()
                self._criterion(self.model(x, task), y).backward()
                optimizer.step()
                schedule.step()
                self._pending_cost["train"] += len(y) * TRAIN_COST

    def _search(self, task: int, available: list) -> dict:
        net = self.model.net
        initial = {k: v.detach().clone() for k, v in net.state_dict().items() if not k.endswith(USED_BITS)}
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + task)
        candidates = draw_candidate_masks(available, self.population, self.v_min, self.v_max, generator)
        occupied_before = [(u > 0).cpu() for u in self.model.used_bits()]
        accs, lefts, trained = [], [], []
        for cand in candidates:
            net.load_state_dict(initial, strict=False)
            self.model.begin_task(task, cand.masks)
            self._short_train(task, self.search_epochs)
            accs.append(self._val_accuracy(task))
            lefts.append(weighted_sparsity_left([o | m for o, m in zip(occupied_before, cand.masks)]))
            trained.append({k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()
                            if not k.endswith(USED_BITS)})
        scores = fitness(accs, lefts, self.alpha, self.beta)
        best = select_candidate(accs, lefts, self.alpha, self.beta)
        net.load_state_dict(trained[best], strict=False)
        self.model.set_live_masks(candidates[best].masks)
        return {"candidate_accuracy": accs, "candidate_sparsity_left": lefts,
                "candidate_fitness": [float(s) for s in scores], "chosen": best,
                "drawn_sparsity": list(candidates[best].sparsity)}

    # --- Alg. 2 ------------------------------------------------------------------------
    def _quantize_and_commit(self, task: int) -> dict:
        acc_fp = self._val_accuracy(task)
        if not self.quantize:
            self.model.commit_task(POSITION_BITS, None)
            return {"bits": POSITION_BITS, "accuracy_fp32": acc_fp, "accuracy_quantized": acc_fp, "met_delta": 1}
        for bits in range(self.start_bits, self.max_bits + 1):
            quantized = self.model.quantize_live(bits, self.quantizer, seed=self.seed)
            with self.model.trial(quantized):
                acc_q = self._val_accuracy(task)
            if acc_q >= acc_fp - self.delta / 100.0:
                break
        met = acc_q >= acc_fp - self.delta / 100.0
        if not met:
            warnings.warn(f"task {task}: {self.max_bits}-bit quantization loses {100 * (acc_fp - acc_q):.2f} "
                          f"points (> delta={self.delta}); keeping {self.max_bits} bits")
        self.model.commit_task(bits, quantized)
        return {"bits": bits, "accuracy_fp32": acc_fp, "accuracy_quantized": acc_q, "met_delta": int(met)}

    # --- Avalanche hooks -----------------------------------------------------------------
    def _before_training_exp(self, **kwargs):
        task = self._task_label(self.experience)
        self.model.to(self.device)
        available = self.model.available_masks(self.max_bits if self.quantize else POSITION_BITS)
        empty = [name for (name, _), a in zip(self.model.quantized_layers(), available) if not bool(a.any())]
        if empty:
            raise ValueError(f"no capacity left in layers {empty} for task {task}: every position holds "
                             f"{POSITION_BITS} bits already; use a wider model or fewer tasks")
        self.model.reinit_live()
        if self.prune:
            self._report = {"task": task, **self._search(task, available)}
        else:
            self.model.begin_task(task, available)
            self._report = {"task": task, "drawn_sparsity": [0.0] * len(available)}
        self.train_epochs = self.full_epochs
        kwargs["reset_optimizer_state"] = True
        super()._before_training_exp(**kwargs)
        self._charge_pending_cost()

    def _after_training_exp(self, **kwargs):
        task = self._report["task"]
        masks = self.model.live_masks
        available = self.model.available_masks(self.max_bits if self.quantize else POSITION_BITS)
        self._report["density"] = [float(m.sum()) / max(float(a.sum()), 1.0) for m, a in zip(masks, available)]
        self._report.update(self._quantize_and_commit(task))
        cap = self.model.task_capacity_bits(task)
        self._report["capacity_bits"] = cap
        self._report["capacity_fraction"] = cap / self.model.model_bits()
        self._report["layers"] = [name for name, _ in self.model.quantized_layers()]
        self.task_reports.append(self._report)
        self._log(self._report)
        self._charge_pending_cost()
        super()._after_training_exp(**kwargs)

    def _log(self, report: dict) -> None:
        task = report["task"]
        for name, s in zip(report["layers"], report["drawn_sparsity"]):
            log_scalar(self, f"adaqpacknet/sparsity/{name}", s, step=task)
        for key in ("bits", "accuracy_fp32", "accuracy_quantized", "capacity_fraction", "met_delta"):
            log_scalar(self, f"adaqpacknet/{key}", report[key], step=task)
        log_scalar(self, "adaqpacknet/capacity_total", sum(r["capacity_fraction"] for r in self.task_reports),
                   step=task)

    # --- resuming ---------------------------------------------------------------------------
    def method_state(self) -> dict:
        """The per-task reports (plain lists/numbers/strings); the model's state dict holds the rest."""
        return {"task_reports": copy.deepcopy(self.task_reports)}

    def load_method_state(self, state: dict) -> None:
        self.task_reports = copy.deepcopy(list(state.get("task_reports", [])))
