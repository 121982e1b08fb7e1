"""Loaders for the image datasets used by the benchmarks, from local files first.

Every loader returns a ``(train, test)`` pair of map-style datasets whose
samples are ``(uint8 tensor [C, H, W], int label)`` and which expose a
``.targets`` list of ints (what Avalanche reads to build class-incremental
streams) and a ``.classes`` list. Missing data raises
:class:`DatasetNotFoundError`, whose message lists every place searched and
says how to obtain the data.

Fashion-MNIST (:func:`fashion_mnist`)
    Places searched, in order: ``root`` (if given; a ``root`` that does not
    exist raises rather than falling through to the others), the folder named by the
    ``AVALANCHE_SST_DATA`` environment variable, then
    :data:`FASHION_MNIST_SYSTEM_DIRS` (``/usr/share/datasets/fashion-mnist``,
    where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs it).
    Within each place the files may sit directly in it, in a ``fashion-mnist/``
    subfolder, or in torchvision's ``FashionMNIST/raw/`` layout. The four IDX
    files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``) are accepted
    gzip-compressed (``.gz``) or uncompressed. Only with ``download=True`` and
    nothing found locally is torchvision asked to download them.

CIFAR-10 and CIFAR-100 (:func:`cifar10`, :func:`cifar100`)
    torchvision's python-pickle layouts ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
    and ``<root>/cifar-100-python/{train,test,meta}`` (checked by torchvision
    against its md5 sums); ``download=True`` fetches them.

Tiny-ImageNet (:func:`tiny_imagenet`)
    The layout of http://cs231n.stanford.edu/tiny-imagenet-200.zip:
    ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` and
    ``val/val_annotations.txt``. The unlabelled ``test/`` split is ignored; the
    labelled ``val`` split is returned as the test set. Images are decoded
    lazily from disk.

ImageNet (:func:`imagenet`)
    The ``torchvision.datasets.ImageFolder`` layout ``<root>/train/<wnid>/*.JPEG``
    and ``<root>/val/<wnid>/*.JPEG``, decoded lazily from disk.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torchvision
from torchvision.datasets import VisionDataset
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, has_file_allowed_extension

from avalanche_sst.benchmarks.tensor_data import TensorImageDataset

__all__ = [
    "DATA_ENV_VAR",
    "FASHION_MNIST_SYSTEM_DIRS",
    "TINY_IMAGENET_URL",
    "DatasetNotFoundError",
    "TinyImageNetSplit",
    "cifar10",
    "cifar100",
    "fashion_mnist",
    "imagenet",
    "read_idx",
    "tiny_imagenet",
]

DATA_ENV_VAR = "AVALANCHE_SST_DATA"
# Module-level so tests (and unusual installs) can replace the system locations.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

_FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files were not found; the message lists where we looked and how to get them."""

    def __init__(self, dataset: str, searched: Sequence[os.PathLike | str], hint: str) -> None:
        self.dataset = dataset
        self.searched = [Path(p) for p in searched]
        lines = [f"{dataset} not found. Searched:"]
        lines += [f"  - {p}" for p in self.searched] or ["  (nowhere)"]
        lines.append(hint)
        # A single argument keeps OSError from reading it as (errno, strerror).
        super().__init__("\n".join(lines))


def _check_path(value: Any, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    if isinstance(value, str) and not value:
        raise ValueError(f"{name} must be a non-empty path")
    return Path(value).expanduser()


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_transform(value: Any, name: str) -> Callable:
    if value is None:
        return torchvision.transforms.PILToTensor()
    if not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: os.PathLike | str, ndim: int | None = None) -> torch.Tensor:
    """Read an unsigned-byte IDX file (gzip-compressed or not) into a uint8 tensor.

    ``ndim``, if given, is the number of dimensions the file must declare.
    """
    path = Path(path)
    data = path.read_bytes()
    # Sniff the gzip magic rather than trust the suffix: some mirrors gunzip but keep ".gz".
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    if len(data) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype, file_ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _IDX_UINT8:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()} "
            f"(expected 0x000008NN: unsigned-byte data with NN dimensions)"
        )
    if file_ndim == 0:
        raise ValueError(f"{path}: IDX file declares 0 dimensions")
    if ndim is not None and file_ndim != ndim:
        raise ValueError(f"{path}: IDX file has {file_ndim} dimensions, expected {ndim}")
    header = 4 + 4 * file_ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{file_ndim}I", data[4:header])
    expected = 1
    for d in dims:
        expected *= d
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX payload has {len(data) - header} bytes, dims {list(dims)} need {expected}"
        )
    if expected == 0:  # torch.frombuffer rejects empty buffers
        return torch.empty(dims, dtype=torch.uint8)
    # bytearray: torch.frombuffer needs a writable buffer to avoid a warning.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(*dims)


def _fashion_mnist_candidates(root: Path | None) -> list[Path]:
    bases: list[Path] = []
    if root is not None:
        bases.append(root)
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        bases.append(Path(env).expanduser())
    dirs: list[Path] = []
    for base in bases:
        dirs += [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]
    dirs += [Path(d) for d in FASHION_MNIST_SYSTEM_DIRS]
    return dirs


def _find_fashion_mnist_files(directory: Path) -> dict[str, Path] | None:
    found = {}
    for key, name in _FASHION_MNIST_FILES.items():
        for candidate in (directory / f"{name}.gz", directory / name):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _idx_split(images_path: Path, labels_path: Path, classes: list[str]) -> TensorImageDataset:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        )
    if labels.numel() and int(labels.max()) >= len(classes):
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range for {len(classes)} classes")
    return TensorImageDataset(images.unsqueeze(1), labels.long(), classes=classes)


def fashion_mnist(
    root: os.PathLike | str | None = None, download: bool = False
) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Load Fashion-MNIST as uint8 ``[N, 1, 28, 28]`` tensors (60000 train / 10000 test).

    See the module docstring for the search order. With ``download=True`` and
    nothing found locally, torchvision downloads it into ``root`` (or
    ``$AVALANCHE_SST_DATA``, or ``~/.cache/avalanche_sst``).
    """
    root_path = None if root is None else _check_path(root, "root")
    download = _check_bool(download, "download")
    classes = list(torchvision.datasets.FashionMNIST.classes)
    if root_path is not None and not root_path.exists() and not download:
        # An explicit root is what the user meant to read: a typo must not fall through to
        # another copy (the env var's or the system's) and silently give other data.
        raise DatasetNotFoundError(
            "Fashion-MNIST", [root_path],
            f"root={str(root_path)!r} does not exist. Fix the path, or pass root=None to search "
            f"{DATA_ENV_VAR} and {', '.join(map(str, FASHION_MNIST_SYSTEM_DIRS))}, "
            "or pass download=True to download into it.",
        )

    searched = _fashion_mnist_candidates(root_path)
    for directory in searched:
        files = _find_fashion_mnist_files(directory)
        if files is not None:
            return (
                _idx_split(files["train_images"], files["train_labels"], classes),
                _idx_split(files["test_images"], files["test_labels"], classes),
            )

    if download:
        env = os.environ.get(DATA_ENV_VAR)
        target = root_path or (Path(env).expanduser() if env else Path.home() / ".cache" / "avalanche_sst")
        splits = []
        for train in (True, False):
            ds = torchvision.datasets.FashionMNIST(str(target), train=train, download=True)
            splits.append(TensorImageDataset(ds.data.unsqueeze(1), ds.targets, classes=classes))
        return splits[0], splits[1]

    raise DatasetNotFoundError(
        "Fashion-MNIST",
        searched,
        "Each place needs the four IDX files (" + ", ".join(_FASHION_MNIST_FILES.values())
        + "), gzip-compressed (.gz) or not. To get them: on Debian/Ubuntu run "
        "`apt-get install dataset-fashion-mnist` (installs into /usr/share/datasets/fashion-mnist); "
        f"or point {DATA_ENV_VAR} (or root=) at a folder holding them; "
        "or pass download=True where the network allows.",
    )


# --------------------------------------------------------------------------- CIFAR-100


def _cifar(dataset_class, name: str, root, download) -> tuple[TensorImageDataset, TensorImageDataset]:
    root_path = _check_path(root, "root")
    download = _check_bool(download, "download")
    splits = []
    for train in (True, False):
        try:
            ds = dataset_class(str(root_path), train=train, download=download)
        except RuntimeError as exc:
            # torchvision signals missing or corrupted files (md5 mismatch) with RuntimeError.
            raise DatasetNotFoundError(
                name,
                [root_path / dataset_class.base_folder],
                f"torchvision said: {exc} Expected the python version "
                f"({dataset_class.base_folder}/ as unpacked from {dataset_class.filename}); "
                "pass download=True to fetch it.",
            ) from exc
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits.append(TensorImageDataset(images, ds.targets, classes=list(ds.classes)))
    return splits[0], splits[1]


def cifar10(root: os.PathLike | str, download: bool = False) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Load CIFAR-10 as uint8 ``[N, 3, 32, 32]`` tensors via torchvision."""
    return _cifar(torchvision.datasets.CIFAR10, "CIFAR-10", root, download)


def cifar100(root: os.PathLike | str, download: bool = False) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Load CIFAR-100 (fine labels) as uint8 ``[N, 3, 32, 32]`` tensors via torchvision."""
    return _cifar(torchvision.datasets.CIFAR100, "CIFAR-100", root, download)


# --------------------------------------------------------------------------- Tiny-ImageNet

_TINY_IMAGENET_LAYOUT = (
    f"Download and unzip {TINY_IMAGENET_URL}; root must be the tiny-imagenet-200 folder "
    "(or its parent) holding wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG "
    "and val/val_annotations.txt."
)


class TinyImageNetSplit(VisionDataset):
    """One Tiny-ImageNet split as a path-based dataset (images decoded on access).

    Attributes follow ``ImageFolder``: ``classes`` (wnids), ``class_to_idx``,
    ``samples`` (list of ``(path, target)``) and ``targets``.
    """

    def __init__(
        self,
        root: os.PathLike | str,
        samples: list[tuple[str, int]],
        classes: list[str],
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        loader: Callable[[str], Any] = default_loader,
    ) -> None:
        super().__init__(str(root), transform=transform, target_transform=target_transform)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        path, target = self.samples[index]
        image = self.loader(path)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


def _resolve_tiny_imagenet_root(root: Path) -> Path:
    candidates = [root, root / "tiny-imagenet-200"]
    for candidate in candidates:
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise DatasetNotFoundError(
        "Tiny-ImageNet", [c / "wnids.txt" for c in candidates], _TINY_IMAGENET_LAYOUT
    )


def _image_files(directory: Path) -> list[str]:
    return sorted(
        str(directory / name)
        for name in os.listdir(directory)
        if has_file_allowed_extension(name, IMG_EXTENSIONS)
    )


def tiny_imagenet(
    root: os.PathLike | str, transform: Callable | None = None
) -> tuple[TinyImageNetSplit, TinyImageNetSplit]:
    """Load Tiny-ImageNet (200 classes, 500 train / 50 val images each) from disk.

    Returns ``(train, val)``; classes are ordered as in ``wnids.txt``.
    ``transform`` defaults to ``PILToTensor()``, giving uint8 ``[3, 64, 64]``
    tensors (grayscale JPEGs are converted to RGB by the loader).
    """
    root_path = _check_path(root, "root")
    transform = _check_transform(transform, "transform")
    base = _resolve_tiny_imagenet_root(root_path)

    wnids = [line.strip() for line in (base / "wnids.txt").read_text().splitlines() if line.strip()]
    if not wnids:
        raise ValueError(f"{base / 'wnids.txt'} lists no classes")
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{base / 'wnids.txt'} lists duplicate wnids")
    class_to_idx = {w: i for i, w in enumerate(wnids)}

    train_samples: list[tuple[str, int]] = []
    for wnid, idx in class_to_idx.items():
        image_dir = base / "train" / wnid / "images"
        if not image_dir.is_dir():
            raise DatasetNotFoundError("Tiny-ImageNet", [image_dir], _TINY_IMAGENET_LAYOUT)
        train_samples += [(p, idx) for p in _image_files(image_dir)]

    val_dir = base / "val" / "images"
    annotations = base / "val" / "val_annotations.txt"
    if not val_dir.is_dir() or not annotations.is_file():
        raise DatasetNotFoundError("Tiny-ImageNet", [val_dir, annotations], _TINY_IMAGENET_LAYOUT)
    present = set(os.listdir(val_dir))
    val_samples: list[tuple[str, int]] = []
    for lineno, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{annotations}:{lineno}: expected tab-separated 'filename<TAB>wnid...'")
        filename, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in class_to_idx:
            raise ValueError(f"{annotations}:{lineno}: wnid {wnid!r} is not in wnids.txt")
        if filename not in present:
            raise DatasetNotFoundError("Tiny-ImageNet", [val_dir / filename], _TINY_IMAGENET_LAYOUT)
        val_samples.append((str(val_dir / filename), class_to_idx[wnid]))

    return (
        TinyImageNetSplit(base / "train", train_samples, wnids, transform=transform),
        TinyImageNetSplit(base / "val", val_samples, wnids, transform=transform),
    )


# --------------------------------------------------------------------------- ImageNet

_IMAGENET_LAYOUT = (
    "Expected the ImageFolder layout <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG "
    "(the official ILSVRC val images come flat; sort them into per-wnid folders first)."
)


def imagenet(
    root: os.PathLike | str, transform: Callable | None = None
) -> tuple[torchvision.datasets.ImageFolder, torchvision.datasets.ImageFolder]:
    """Load ImageNet ``(train, val)`` as ``ImageFolder`` datasets read lazily from disk.

    ``transform`` defaults to ``PILToTensor()`` (uint8 ``[3, H, W]``, sizes vary,
    so batching needs a resizing transform).
    """
    root_path = _check_path(root, "root")
    transform = _check_transform(transform, "transform")
    splits = []
    for split in ("train", "val"):
        directory = root_path / split
        if not directory.is_dir():
            raise DatasetNotFoundError("ImageNet", [directory], _IMAGENET_LAYOUT)
        try:
            splits.append(torchvision.datasets.ImageFolder(str(directory), transform=transform))
        except FileNotFoundError as exc:  # no class folders, or a class folder without images
            raise DatasetNotFoundError("ImageNet", [directory], f"{exc}. {_IMAGENET_LAYOUT}") from exc
    train, val = splits
    # ImageFolder numbers classes per folder; differing class sets would silently mislabel val.
    if train.classes != val.classes:
        missing = sorted(set(train.classes) ^ set(val.classes))
        raise ValueError(
            f"root: train/ and val/ have different class folders (e.g. {missing[:5]}); "
            "labels would not line up"
        )
    return train, val
