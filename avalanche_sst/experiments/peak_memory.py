"""A preflight run's peak memory on its device: CUDA's allocator peak, or on the CPU the run's own
peak resident set (Linux resets the process's high-water mark through ``/proc/self/clear_refs``;
elsewhere the process's peak so far, labelled as such)."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Optional

import torch


def reset_peak_memory(device: torch.device) -> bool:
    """Start a run's peak memory afresh; False where the CPU's peak cannot be reset (then the peak
    is the whole process's so far, over every earlier run of the preflight)."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux >= 4.0: "5" resets the process's resident-set high-water mark (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
        return _vm_hwm_mb() is not None
    except OSError:
        return False


def _vm_hwm_mb() -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_memory(device: torch.device, reset: bool) -> tuple[float, str]:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2 ** 20, "cuda max allocated"
    if reset:
        return _vm_hwm_mb(), "run peak RSS"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"
