"""The versions a run used, recorded next to its results (``preset.json``, the table footer).

A table is only reproducible with the same torch build: on this project a
different torch release moved the quick table's first step by a quarter point.
Nor is it across CPU paths: the same build gives other last digits on another
instruction set (AVX2 vs AVX-512), so the records name the path too
(:func:`cpu_path`, from :mod:`avalanche_sst.cpu_path`).
"""

from __future__ import annotations

import platform
from importlib import metadata

from avalanche_sst.cpu_path import SAME_CPU_PATH_NOTE, cpu_path, cpu_path_text

__all__ = ["PACKAGES", "SAME_CPU_PATH_NOTE", "cpu_path", "cpu_path_text", "environment_versions", "package_version", "versions_text"]

# Distribution names, as pip knows them (the lock file pins the same names).
PACKAGES = ("avalanche-sst", "torch", "torchvision", "avalanche-lib", "numpy", "ray", "tqdm")


def package_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None`` when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment_versions(packages=PACKAGES) -> dict[str, str | None]:
    """Python, each of ``packages`` (``None`` if absent), torch's CUDA and cuDNN builds and the GPU.

    ``cuda`` is the CUDA version torch was built with (``None`` for a CPU-only build);
    ``gpu`` is the first visible GPU's name, or ``None`` without one.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions.update({name: package_version(name) for name in packages})
    import torch

    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return versions


def versions_text(versions: dict[str, str | None]) -> str:
    """One line for a table footer: ``torch 2.14.1, torchvision 0.29.1, ...`` (absent ones left out)."""
    return ", ".join(f"{name} {value}" for name, value in versions.items() if value is not None)
