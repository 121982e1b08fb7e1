"""The quantized multi-task model of Ada-QPacknet (Pietron et al., ECAI 2023,
sec. 3, Fig. 2; METHOD.md "Ada-QPacknet").

Every Conv2d/Linear weight position of the backbone (the network minus its
head) holds :data:`~avalanche_sst.functional.quantization.POSITION_BITS` = 32 bits
shared among tasks (``used_bits``, a uint8 buffer per layer attached through
:mod:`avalanche_sst.functional.ownership`, the per-weight machinery shared with M2KD).
Task t owns its own value at every position of its mask, stored as a
``b_t``-bit code into a per-layer codebook (Alg. 3); its BatchNorm
parameters and statistics, biases and head are kept per task in fp32. The
float weights exist only while the current task trains (they are zeroed
when it is committed; the next task re-initialises them).

Task-aware inference: ``model(x, task_labels)`` runs each task's
sub-network, selected by its label: a frozen eval-mode copy of the network
holding the task's decoded weights and stored fp32 tensors, built on first
use and cached per task and device (not part of the state dict); nothing of
an earlier task is ever written again, so its outputs stay bit-identical
(zero forgetting). The task being trained runs the live weights masked to its
positions through :func:`~avalanche_sst.functional.ownership.functional_forward`. A
label never trained raises a ValueError.

All state lives in buffers: ``model.state_dict()`` loads with
``torch.load(..., weights_only=True)``, and ``load_state_dict`` on a fresh
model creates the per-task slots it finds (no rebuild step needed).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from avalanche.models import MultiTaskModule

from avalanche_sst.functional.ownership import attach_buffer, count_weights, functional_forward, owned_layers
from avalanche_sst.functional.quantization import POSITION_BITS, check_bit_budget, decode, quantize, task_capacity_bits

__all__ = ["QuantizedMultiTaskModel", "USED_BITS"]

USED_BITS = "used_bits"
_SEP = "__"  # stands for "." in the buffer names of the stored fp32 tensors


class _TaskSlot(nn.Module):
    """One committed task: ``bits``, per layer i ``mask_i`` and ``codes_i``/``codebook_i``
    (or ``values_i`` when unquantized), and ``fp32__<name>`` for every other tensor."""


def _last_linear(net: nn.Module) -> str:
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{net.__class__.__name__} has no nn.Linear head; pass head='<module name>'")
    return names[-1]


class QuantizedMultiTaskModel(MultiTaskModule):
    """Wraps ``net`` (one head of the classes of a task) into per-task quantized sub-networks.

    :param net: the network; its Conv2d/Linear layers outside ``head`` are the
        shared, quantized backbone positions.
    :param head: module name of the per-task fp32 head (default: the last ``nn.Linear``).
    :param unseen_tasks: what a task label never trained gets: "raise" (a ValueError, the
        default) or "zeros" (all-zero logits: for loops that evaluate the whole test stream
        after every step and score only the tasks seen so far, like the sweep).
    """

    def __init__(self, net: nn.Module, head: Optional[str] = None, unseen_tasks: str = "raise"):
        super().__init__()
        self.net = net
        self.head_name = _last_linear(net) if head is None else head
        if self.head_name not in dict(net.named_modules()):
            raise ValueError(f"head={head!r} is not a module of {net.__class__.__name__}")
        if unseen_tasks not in ("raise", "zeros"):
            raise ValueError(f"unseen_tasks must be 'raise' or 'zeros', got {unseen_tasks!r}")
        self.unseen_tasks = unseen_tasks
        attach_buffer(net, USED_BITS, lambda m: torch.zeros_like(m.weight, dtype=torch.uint8),
                      exclude=(self.head_name,))
        self.tasks = nn.ModuleDict()
        self.active_task: Optional[int] = None
        self._live_masks: Optional[list[Tensor]] = None
        self._trial: Optional[dict[str, Tensor]] = None
        self._cache: dict = {}
        self.register_load_state_dict_pre_hook(self._grow_task_slots)

    # --- structure ----------------------------------------------------------
    def quantized_layers(self) -> list[tuple[str, nn.Module]]:
        return owned_layers(self.net, exclude=(self.head_name,))

    def _quantized_weight_names(self) -> set[str]:
        return {f"{n}.weight" for n, _ in self.quantized_layers()}

    def _fp32_names(self) -> list[str]:
        """Every tensor of ``net`` a task keeps in full: all but the quantized weights and the budget."""
        skip = self._quantized_weight_names()
        return [k for k in self.net.state_dict() if k not in skip and k.rsplit(".", 1)[-1] != USED_BITS]

    @property
    def trained_tasks(self) -> list[int]:
        return sorted(int(t) for t in self.tasks)

    def used_bits(self) -> list[Tensor]:
        return [getattr(m, USED_BITS) for _, m in self.quantized_layers()]

    def available_masks(self, max_bits: int) -> list[Tensor]:
        """Positions that can still take a task of up to ``max_bits`` bits (used + max_bits <= 32)."""
        return [(u.to(torch.int64) + int(max_bits) <= POSITION_BITS).cpu() for u in self.used_bits()]

    def model_bits(self) -> int:
        """The fp32 size in bits of every Conv2d/Linear weight of ``net``, head included (the
        original model's capacity, the unit capacities are reported in, as for PackNet)."""
        return POSITION_BITS * count_weights(owned_layers(self.net))

    # --- the task being trained ------------------------------------------------
    @torch.no_grad()
    def begin_task(self, task: int, masks: Sequence[Tensor]) -> None:
        """Make ``task`` the trained one with keep ``masks`` (one bool tensor per quantized layer)."""
        task = int(task)
        if str(task) in self.tasks:
            raise ValueError(f"task label {task} was already trained and quantized; Ada-QPacknet needs one "
                             f"experience per task label (a task-incremental scenario)")
        self.active_task = task
        self.set_live_masks(masks)

    @torch.no_grad()
    def set_live_masks(self, masks: Sequence[Tensor]) -> None:
        layers = self.quantized_layers()
        if len(masks) != len(layers):
            raise ValueError(f"need one mask per quantized layer ({len(layers)}), got {len(masks)}")
        self._live_masks = []
        for (name, m), mask in zip(layers, masks):
            if mask.shape != m.weight.shape or mask.dtype != torch.bool:
                raise ValueError(f"mask of {name} must be bool {tuple(m.weight.shape)}, got {mask.dtype} "
                                 f"{tuple(mask.shape)}")
            self._live_masks.append(mask.to(m.weight.device))

    @property
    def live_masks(self) -> list[Tensor]:
        if self._live_masks is None:
            raise RuntimeError("no task is being trained; call begin_task first")
        return [mk.to(m.weight.device) for mk, (_, m) in zip(self._live_masks, self.quantized_layers())]

    @torch.no_grad()
    def reinit_live(self) -> None:
        """Fresh Xavier-uniform weights (zero biases, reset BatchNorm): the paper's initialiser.

        Uses the global RNG (reproducible under ``torch.manual_seed``).
        """
        for m in self.net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._NormBase):
                m.reset_parameters()

    def live_substitutions(self) -> dict[str, Tensor]:
        return {f"{name}.weight": m.weight * mask.to(m.weight.dtype)
                for (name, m), mask in zip(self.quantized_layers(), self.live_masks)}

    def quantize_live(self, bits: int, quantizer: str = "kmeans", seed: int = 0) -> list[tuple[Tensor, Tensor]]:
        """Alg. 3 on the live weights at the live masks: ``[(codebook, codes)]`` per layer."""
        return [quantize(m.weight.detach()[mask], bits, quantizer, seed=seed)
                for (_, m), mask in zip(self.quantized_layers(), self.live_masks)]

    def _decoded(self, masks, quantized, like: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for mask, (book, codes), ref in zip(masks, quantized, like):
            w = torch.zeros(ref.shape, dtype=ref.dtype, device=ref.device)
            values = decode(codes, book.to(ref.device)) if codes is not None else book.to(ref.device)
            w[mask.to(ref.device)] = values.to(ref.dtype)
            out.append(w)
        return out

    @contextmanager
    def trial(self, quantized: list[tuple[Tensor, Tensor]]):
        """Inside the block the trained task runs its decoded weights (Alg. 2's accuracy check)."""
        layers = self.quantized_layers()
        weights = self._decoded(self.live_masks, quantized, [m.weight for _, m in layers])
        self._trial = {f"{name}.weight": w for (name, _), w in zip(layers, weights)}
        try:
            yield
        finally:
            self._trial = None

    @torch.no_grad()
    def commit_task(self, bits: int, quantized: Optional[list[tuple[Tensor, Tensor]]]) -> None:
        """Store the trained task (codes and codebooks, or fp32 values when ``quantized`` is None
        and ``bits == 32``), charge its bits to its positions and discard its float weights."""
        if self.active_task is None:
            raise RuntimeError("no task is being trained; call begin_task first")
        layers, masks = self.quantized_layers(), self.live_masks
        if quantized is None and bits != POSITION_BITS:
            raise ValueError(f"unquantized tasks take all {POSITION_BITS} bits, got bits={bits}")
        for (name, m), mask in zip(layers, masks):
            check_bit_budget(getattr(m, USED_BITS), mask, bits)
        slot = _TaskSlot()
        slot.register_buffer("bits", torch.tensor(int(bits), dtype=torch.int64))
        for i, ((_, m), mask) in enumerate(zip(layers, masks)):
            slot.register_buffer(f"mask_{i}", mask.clone())
            if quantized is None:
                slot.register_buffer(f"values_{i}", m.weight.detach()[mask].clone())
            else:
                book, codes = quantized[i]
                slot.register_buffer(f"codebook_{i}", book.to(m.weight.device).clone())
                slot.register_buffer(f"codes_{i}", codes.to(m.weight.device).clone())
            used = getattr(m, USED_BITS)
            used.add_(mask.to(used.dtype) * int(bits))
        state = self.net.state_dict()
        for name in self._fp32_names():
            slot.register_buffer("fp32" + _SEP + name.replace(".", _SEP), state[name].detach().clone())
        self.tasks[str(self.active_task)] = slot
        self.active_task, self._live_masks = None, None
        for p in self.net.parameters():
            p.zero_()

    # --- committed tasks ---------------------------------------------------------
    def _slot(self, task: int) -> _TaskSlot:
        if str(int(task)) not in self.tasks:
            raise ValueError(f"task label {task} was never trained (trained: {self.trained_tasks}); "
                             f"Ada-QPacknet evaluates only tasks it has learnt. If your loop evaluates tasks "
                             f"before they are trained (periodic evaluation with eval_every, Avalanche's "
                             f"EarlyStoppingPlugin, a whole test stream after every step), build it with "
                             f'unseen_tasks="zeros" (AdaQPackNet(..., unseen_tasks="zeros") or '
                             f'QuantizedMultiTaskModel(net, unseen_tasks="zeros")): untrained tasks then get '
                             f"all-zero logits")
        return self.tasks[str(int(task))]

    def task_bits(self, task: int) -> int:
        return int(self._slot(task).bits)

    def task_masks(self, task: int) -> list[Tensor]:
        slot = self._slot(task)
        return [getattr(slot, f"mask_{i}") for i in range(len(self.quantized_layers()))]

    def task_codes(self, task: int) -> list[tuple[Tensor, Tensor]]:
        """``[(codebook, codes)]`` per layer (``(values, None)`` for an unquantized task)."""
        slot, out = self._slot(task), []
        for i in range(len(self.quantized_layers())):
            if hasattr(slot, f"values_{i}"):
                out.append((getattr(slot, f"values_{i}"), None))
            else:
                out.append((getattr(slot, f"codebook_{i}"), getattr(slot, f"codes_{i}")))
        return out

    def task_substitutions(self, task: int) -> dict[str, Tensor]:
        """The task's full tensor set for ``net``: decoded weights plus its stored fp32 tensors."""
        slot, layers = self._slot(task), self.quantized_layers()
        weights = self._decoded(self.task_masks(task), self.task_codes(task), [m.weight for _, m in layers])
        subs = {f"{name}.weight": w for (name, _), w in zip(layers, weights)}
        for name in self._fp32_names():
            subs[name] = getattr(slot, "fp32" + _SEP + name.replace(".", _SEP))
        return subs

    def task_module(self, task: int) -> nn.Module:
        """A frozen eval-mode copy of ``net`` holding the task's decoded weights, cached per task
        and device: inference then costs what the float model costs (no per-call substitution)."""
        key = (int(task), self._slot(task).bits.device)
        if key not in self._cache:
            module = copy.deepcopy(self.net).eval().requires_grad_(False)
            module.load_state_dict(self.task_substitutions(task), strict=False)
            self._cache[key] = module
        return self._cache[key]

    def task_capacity_bits(self, task: int) -> int:
        """Eq. 10 for ``task``: codes, codebooks, mask bits and its fp32 tensors."""
        slot, bits = self._slot(task), self.task_bits(task)
        kept = [int(mk.sum()) for mk in self.task_masks(task)]
        sizes = [book.numel() for book, codes in self.task_codes(task) if codes is not None]
        fp32 = sum(getattr(slot, "fp32" + _SEP + n.replace(".", _SEP)).numel() for n in self._fp32_names()
                   if getattr(slot, "fp32" + _SEP + n.replace(".", _SEP)).is_floating_point())
        return task_capacity_bits(kept, bits, fp32_values=fp32, codebook_sizes=sizes or None)

    # --- forward --------------------------------------------------------------------
    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        task_label = int(task_label)
        if str(task_label) in self.tasks:
            return self.task_module(task_label)(x)  # always eval mode: stored statistics never move
        if task_label == self.active_task:
            return functional_forward(self.net, self._trial or self.live_substitutions(), x)
        if self.unseen_tasks == "zeros":
            head = dict(self.net.named_modules())[self.head_name]
            return x.new_zeros(x.shape[0], head.out_features)
        self._slot(task_label)  # raises the never-trained error
        raise AssertionError("unreachable")

    def forward(self, x: Tensor, task_labels) -> Tensor:
        if isinstance(task_labels, int):
            return self.forward_single_task(x, task_labels)
        tasks = torch.unique(task_labels)
        if tasks.numel() == 1:
            return self.forward_single_task(x, int(tasks[0]))
        parts = [(task_labels == t, self.forward_single_task(x[task_labels == t], int(t))) for t in tasks]
        out = x.new_zeros(x.shape[0], max(o.shape[1] for _, o in parts))
        for sel, o in parts:
            out[sel, : o.shape[1]] = o
        return out

    # --- loading ----------------------------------------------------------------------
    def _grow_task_slots(self, module, state_dict, prefix, *args, **kwargs) -> None:
        """Create the task slots named in ``state_dict`` so a fresh model loads a trained one."""
        self._cache.clear()
        head = prefix + "tasks."
        for key, value in state_dict.items():
            if not key.startswith(head):
                continue
            task, _, buf = key[len(head):].partition(".")
            if task not in self.tasks:
                self.tasks[task] = _TaskSlot()
            slot = self.tasks[task]
            if buf not in slot._buffers:
                slot.register_buffer(buf, torch.empty_like(value))

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()  # decoded weights follow the model's device/dtype
        return super()._apply(fn, *args, **kwargs)
