"""Stand-alone trigger of the channels-last crash on oneDNN's AVX2 path (torch only).

    ONEDNN_MAX_CPU_ISA=AVX2 python scripts/onednn_channels_last_trigger.py          # the grid
    ONEDNN_MAX_CPU_ISA=AVX2 python scripts/onednn_channels_last_trigger.py --one 2 3 8

The smallest failing case found: the weight gradient of a 1x1 convolution with
stride 2, input and weight in channels-last format, batch 2, 3 input channels,
1 output channel, 8x8 input. oneDNN runs it with ``jit_1x1:avx2`` (see
``ONEDNN_VERBOSE=1``) and corrupts the heap: glibc aborts ("corrupted
double-linked list", "malloc(): unaligned tcache chunk detected") or the
process segfaults, a few calls later. The forward pass, the input gradient,
the default (NCHW) layout, stride 1 and 3x3 kernels do not crash.

Without ``--one`` each case of a small grid (batch, input channels, input size)
runs in its own child process, and the script prints which ones died.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys


def one_case(batch: int, in_channels: int, size: int, repeats: int = 3) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(batch, in_channels, size, size).contiguous(memory_format=cl)
    w = torch.randn(1, in_channels, 1, 1).contiguous(memory_format=cl).requires_grad_()
    for _ in range(repeats):
        grad, = torch.autograd.grad(F.conv2d(x, w, stride=2).sum(), w)
    print(f"ok: weight gradient {tuple(grad.shape)}")


def outcome(batch: int, in_channels: int, size: int) -> str:
    done = subprocess.run([sys.executable, __file__, "--one", str(batch), str(in_channels), str(size)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return "ok"
    if done.returncode < 0:
        return f"died with {signal.Signals(-done.returncode).name}"
    return f"exit {done.returncode}: {(done.stderr.strip() or done.stdout.strip()).splitlines()[-1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, type=int, metavar=("BATCH", "IN_CHANNELS", "SIZE"),
                        help="run one case in this process (it may die)")
    args = parser.parse_args()
    if args.one:
        one_case(*args.one)
        return 0
    import torch

    print(f"torch {torch.__version__}, ATen {torch.backends.cpu.get_cpu_capability()}, "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}")
    crashed = 0
    for batch, in_channels, size in [(2, 3, 8), (1, 3, 8), (2, 1, 8), (2, 2, 8), (2, 4, 8), (2, 6, 8),
                                     (2, 7, 8), (2, 8, 8), (2, 3, 6), (2, 3, 16), (16, 4, 8)]:
        result = outcome(batch, in_channels, size)
        crashed += result != "ok"
        print(f"batch {batch:2d}, {in_channels} input channels, {size:2d}x{size:<2d}: {result}", flush=True)
    print(f"{crashed} of 11 cases failed")
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
