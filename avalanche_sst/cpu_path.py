"""Which CPU code path torch takes on this machine, and whether a known native crash lies on it.

Float results depend on the kernels torch picks, and those depend on the CPU:
ATen's vectorised kernels (``torch.backends.cpu.get_cpu_capability()``) and
oneDNN's convolution kernels (its ISA: AVX2, AVX-512, ...; capped by the
``ONEDNN_MAX_CPU_ISA`` environment variable) sum in different orders, so the
same seed gives the same numbers bit for bit on the same CPU path and differs
in the last digits across paths. :func:`cpu_path` names the path for the
records next to the results.

oneDNN 3.12 (torch 2.14.1) and 3.13.3 (torch 2.15.0) have a kernel that
corrupts the heap on their AVX2 path: ``jit_1x1:avx2`` computing the weight gradient of a strided 1x1
convolution in channels-last format with 2-6 input channels (a ResNet
shortcut of a narrow network) aborts or segfaults the process, with no Python
error. :func:`channels_last_failure` runs that operation in a child process,
once per process, so the caller can refuse instead of dying.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys

import torch

__all__ = ["CHANNELS_LAST_PROBE", "SAME_CPU_PATH_NOTE", "UnsafeCpuPathError", "channels_last_failure", "check_channels_last_safe",
           "cpu_path", "cpu_path_text", "probe_failure"]

# The failing operation, on the shapes that crashed torch 2.14.1 under ONEDNN_MAX_CPU_ISA=AVX2
# (2-6 input channels, 8x8 and 16x16 inputs, batch 2), checked against the default layout so a
# kernel that computes wrong gradients without crashing fails the probe too.
CHANNELS_LAST_PROBE = """
import sys, torch
import torch.nn.functional as F
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
cl = torch.channels_last
for cin in (2, 3, 4, 5, 6):
    for size in (8, 16):
        x = torch.randn(2, cin, size, size, generator=g)
        w = torch.randn(1, cin, 1, 1, generator=g, requires_grad=True)
        ref, = torch.autograd.grad(F.conv2d(x, w, stride=2).square().sum(), w)
        for _ in range(3):
            wl = w.detach().contiguous(memory_format=cl).requires_grad_()
            got, = torch.autograd.grad(F.conv2d(x.contiguous(memory_format=cl), wl, stride=2).square().sum(), wl)
            if not torch.allclose(got, ref, rtol=1e-4, atol=1e-4):
                print(f"wrong weight gradient with {cin} input channels, {size}x{size} input")
                sys.exit(3)
print("ok")
"""

# One channels-last convolution with oneDNN's verbose log on: its header names the ISA in use.
_ONEDNN_ISA_PROBE = """
import torch
torch.set_num_threads(1)
x = torch.ones(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
torch.nn.functional.conv2d(x, torch.ones(4, 3, 3, 3).contiguous(memory_format=torch.channels_last))
"""

_PROBE_TIMEOUT_S = 300

# Said next to every generated table, after its CPU path.
SAME_CPU_PATH_NOTE = ("these numbers are reproducible bit for bit with the same versions on the same CPU path; "
                      "on another CPU path float sums differ in the last digits, and training carries that "
                      "into the accuracies.")


class UnsafeCpuPathError(RuntimeError):
    """A requested option runs a native kernel that is known to crash on this CPU path."""


def _run_child(code: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=_PROBE_TIMEOUT_S)


def probe_failure(code: str, extra_env: dict[str, str] | None = None) -> str | None:
    """Run ``code`` in a fresh Python; ``None`` if it exits 0, else what went wrong, in words.

    A child killed by a signal gives e.g. ``"died with SIGABRT"``; one that exits non-zero, its
    exit status and last output line; one still running after the timeout, ``"timed out"``.
    """
    try:
        done = _run_child(code, extra_env)
    except subprocess.TimeoutExpired:
        return f"timed out after {_PROBE_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        try:
            return f"died with {signal.Signals(-done.returncode).name}"
        except ValueError:
            return f"died with signal {-done.returncode}"
    last = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()[-1]
    return f"exited with status {done.returncode} ({last})"


@functools.lru_cache(maxsize=None)
def _channels_last_failure(max_isa: str | None) -> str | None:
    return probe_failure(CHANNELS_LAST_PROBE)


def channels_last_failure() -> str | None:
    """``None`` if channels-last convolution training is safe here, else how the probe failed.

    Runs :data:`CHANNELS_LAST_PROBE` in a child process the first time it is called (a few
    seconds), then answers from a cache keyed by ``ONEDNN_MAX_CPU_ISA`` (which the child reads).
    """
    return _channels_last_failure(os.environ.get("ONEDNN_MAX_CPU_ISA"))


@functools.lru_cache(maxsize=None)
def _onednn_isa(max_isa: str | None) -> str | None:
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        done = _run_child(_ONEDNN_ISA_PROBE, {"ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"})
    except subprocess.TimeoutExpired:
        return None
    found = re.search(r"\bcpu,isa:([^\n,]+)", done.stdout + done.stderr)
    return found.group(1).strip() if found else None


def cpu_path() -> dict[str, str | None]:
    """The CPU kernels' path: ATen's capability, oneDNN's ISA and the ``ONEDNN_MAX_CPU_ISA`` cap.

    ``onednn_isa`` is the ISA line of oneDNN's verbose log from one convolution in a child
    process with this environment (``None`` without oneDNN); the child runs once per process.
    """
    max_isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return {"aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_isa": _onednn_isa(max_isa),
            "onednn_max_cpu_isa": max_isa}


def cpu_path_text(path: dict[str, str | None]) -> str:
    """One line for a footer: ``ATen AVX512, oneDNN Intel AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)``."""
    text = f"ATen {path.get('aten_cpu_capability')}, oneDNN {path.get('onednn_isa') or 'not used'}"
    if path.get("onednn_max_cpu_isa"):
        text += f" (ONEDNN_MAX_CPU_ISA={path['onednn_max_cpu_isa']})"
    return text


def check_channels_last_safe(who: str = "ChannelsLastPlugin") -> None:
    """Raise :class:`UnsafeCpuPathError` naming the CPU path and the ways out when the probe fails."""
    failure = channels_last_failure()
    if failure is None:
        return
    raise UnsafeCpuPathError(
        f"{who}: channels-last training is not safe on this CPU path ({cpu_path_text(cpu_path())}; "
        f"torch {torch.__version__}): the weight gradient of a strided 1x1 convolution in channels-last "
        f"format {failure} in a child process, and would kill this process without a Python error "
        f"(oneDNN's AVX2 1x1-convolution kernel). Ways out: leave the channels-last option out (the default "
        f"layout computes the same results up to float rounding); or start Python with ONEDNN_MAX_CPU_ISA=AVX "
        f"(oneDNN's slower AVX kernels, on any CPU) or, on a CPU with AVX-512, without an ONEDNN_MAX_CPU_ISA "
        f"cap below AVX512_CORE; or use a torch release on which "
        f"avalanche_sst.cpu_path.channels_last_failure() returns None.")
