"""Memory-format and mixed-precision options for any Avalanche strategy.

:class:`ChannelsLastPlugin` trains and evaluates in the channels-last
(NHWC) memory format, which cuDNN's tensor-core convolutions and oneDNN's CPU
convolutions often prefer; :class:`AutocastPlugin` runs the forward pass under
``torch.autocast`` (bfloat16 by default; no gradient scaler is needed for
bfloat16). Both only hook the forward pass, so they work with every
``SupervisedTemplate`` and with ``AODStrategy`` (whose ``forward`` runs both
students). Neither changes what is computed, only how: channels-last gives the
same outputs up to float rounding, autocast rounds the convolutions' and linear
layers' inputs to bfloat16. Under autocast, ``AODStrategy`` and ``MSLPlugin``
compute their losses in float32, and ``MSLPlugin`` runs its frozen teacher in
the student's precision.

``MultiStepSST`` runs each phase as an inner strategy with its own plugin
list: plugins given to ``MultiStepSST`` itself do not reach the phases.

On a CPU path where channels-last training is known to crash the process (oneDNN's
AVX2 kernels in torch 2.14.1 and 2.15.0; see :mod:`avalanche_sst.cpu_path`),
:class:`ChannelsLastPlugin` refuses to train on the CPU with an
:class:`~avalanche_sst.cpu_path.UnsafeCpuPathError` that names the path and the
ways out, before the first training step.

Measure before you enable them: ``benchmarks/speed.py --channels-last --bf16``
runs the same table with either.

:func:`keep_freed_memory` is a process-wide CPU knob of the same kind (not a
plugin): it stops glibc's allocator from handing large freed blocks back to
the operating system, so the big activation buffers of a CPU forward and
backward pass are not page-faulted in (and zeroed by the kernel) again at
every allocation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

import torch
from avalanche.core import SupervisedPlugin

from avalanche_sst.cpu_path import check_channels_last_safe

__all__ = ["AutocastPlugin", "ChannelsLastPlugin", "keep_freed_memory", "to_channels_last"]


def to_channels_last(x):
    """``x`` in the channels-last format if it is a 4-D tensor, else ``x`` unchanged."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _convert_input(strategy) -> None:
    mbatch = strategy.mbatch
    if mbatch is None or len(mbatch) == 0:
        return
    x = to_channels_last(mbatch[0])
    if x is mbatch[0]:
        return
    if isinstance(mbatch, tuple):  # Avalanche unpacks into a list; be safe anyway
        mbatch = list(mbatch)
        strategy.mbatch = mbatch
    mbatch[0] = x


class ChannelsLastPlugin(SupervisedPlugin):
    """Keep the model's 4-D weights and every mini-batch input in channels-last format.

    The model is converted in place (its parameters stay the same objects,
    so the optimizer keeps working) before each training and evaluation
    experience; each mini-batch input is converted before the forward pass.

    :raises UnsafeCpuPathError: at the start of training on the CPU, where a probe of the
        channels-last weight gradient crashes a child process (run once per process, a few
        seconds): training would kill this one. Evaluation and GPU training are not checked
        (the crashing kernel is in the CPU backward pass).
    """

    def __init__(self):
        super().__init__()

    @staticmethod
    def _convert_model(strategy) -> None:
        strategy.model.to(memory_format=torch.channels_last)

    def before_training_exp(self, strategy, **kwargs):
        if _device_type(strategy) == "cpu":
            check_channels_last_safe(type(self).__name__)
        self._convert_model(strategy)

    def before_eval_exp(self, strategy, **kwargs):
        self._convert_model(strategy)

    def before_forward(self, strategy, **kwargs):
        _convert_input(strategy)

    def before_eval_forward(self, strategy, **kwargs):
        _convert_input(strategy)


def _device_type(strategy) -> str:
    device = getattr(strategy, "device", None)
    if device is None:
        return "cpu"
    return torch.device(device).type


class AutocastPlugin(SupervisedPlugin):
    """Run the forward pass (training and evaluation) under ``torch.autocast``.

    :param dtype: the low-precision dtype (``torch.bfloat16`` default;
        ``torch.float16`` on GPUs also works but then needs a gradient scaler,
        which this plugin does not add).
    :param device_type: ``"cuda"``, ``"cpu"``, ...; by default the strategy's device.
    :param float_output: cast ``strategy.mb_output`` back to float32 after the
        forward, so the criterion runs in float32 outside autocast (default).

    The autocast region opens in ``before_forward`` / ``before_eval_forward``
    and closes in ``after_forward`` / ``after_eval_forward``: the criterion,
    backward pass and optimizer step run outside it, in float32.
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16, device_type: Optional[str] = None,
                 float_output: bool = True):
        super().__init__()
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype such as torch.bfloat16, got {dtype!r}")
        self.dtype = dtype
        self.device_type = device_type
        self.float_output = float_output
        self._ctx = None

    def _enter(self, strategy) -> None:
        self._exit()  # a forward that raised never reached after_forward
        device_type = self.device_type or _device_type(strategy)
        self._ctx = torch.autocast(device_type=device_type, dtype=self.dtype)
        self._ctx.__enter__()

    def _exit(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    def _leave(self, strategy) -> None:
        self._exit()
        out = getattr(strategy, "mb_output", None)
        if self.float_output and isinstance(out, torch.Tensor) and out.is_floating_point() \
                and out.dtype != torch.float32:
            strategy.mb_output = out.float()

    def before_forward(self, strategy, **kwargs):
        self._enter(strategy)

    def after_forward(self, strategy, **kwargs):
        self._leave(strategy)

    def before_eval_forward(self, strategy, **kwargs):
        self._enter(strategy)

    def after_eval_forward(self, strategy, **kwargs):
        self._leave(strategy)

    def after_training_exp(self, strategy, **kwargs):
        self._exit()

    def after_eval_exp(self, strategy, **kwargs):
        self._exit()


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_GLIBC_MMAP_MAX_DEFAULT = 65536
_GLIBC_TRIM_THRESHOLD_DEFAULT = 128 * 1024


def keep_freed_memory(enable: bool = True) -> bool:
    """Keep large freed blocks in the process (glibc), or restore glibc's defaults.

    glibc serves allocations above its mmap threshold (at most 32 MiB) with a
    fresh ``mmap`` and unmaps them when freed, and trims the heap top above
    its trim threshold; every reuse then page-faults the memory in again,
    zero-filled by the kernel. PyTorch's CPU allocator goes straight to
    malloc, so a forward pass with 50 MB activations (ResNet-8, batch 1000,
    28x28) spends most of its time in the kernel. ``enable`` sets
    ``M_MMAP_MAX`` to 0 (no mmap'ed chunks) and ``M_TRIM_THRESHOLD`` to 1 GiB
    (no trimming): freed memory is reused, at the price of a resident size
    that stays at its peak. Measured on 2 cores (1 thread): evaluation of the
    10k test set at batch 1000 5.3 s -> 2.1 s, an AOD epoch -14%, batch-128
    training unchanged (see ``benchmarks/speed.py --keep-freed-memory``).

    Process-wide and immediate; call it once at start-up (as
    ``torch.set_flush_denormal``). ``enable=False`` puts back glibc's default
    values, but glibc's dynamic mmap threshold stays off once any of these
    parameters has been set. Returns False (and does nothing) where the C
    library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_max = 0 if enable else _GLIBC_MMAP_MAX_DEFAULT
    trim = (1 << 30) if enable else _GLIBC_TRIM_THRESHOLD_DEFAULT
    return bool(mallopt(_M_MMAP_MAX, mmap_max)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
