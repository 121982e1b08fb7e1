"""Dataset loaders, exercised on tiny on-disk fixtures in each real file format."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from avalanche_sst.benchmarks import datasets as D
from avalanche_sst.benchmarks.tensor_data import TensorImageDataset

FMNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_system_data(monkeypatch):
    """Hide the system Fashion-MNIST and the env var so only explicit roots count."""
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", ())
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)


# --------------------------------------------------------------------------- Fashion-MNIST


def _idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _fmnist_arrays(n_train: int = 12, n_test: int = 6):
    def images(n, offset):
        # Distinct, position-dependent pixels so any reshape/transposition error shows.
        idx = np.arange(n * 28 * 28).reshape(n, 28, 28)
        return ((idx * 7 + offset) % 256).astype(np.uint8)

    train_labels = (np.arange(n_train) * 3) % 10
    test_labels = (np.arange(n_test) * 7 + 1) % 10
    return images(n_train, 0), train_labels, images(n_test, 5), test_labels


def _write_fmnist(directory: Path, compressed: bool = True, **magic) -> tuple:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = _fmnist_arrays()
    for key, array in zip(FMNIST_NAMES, arrays):
        data = _idx_bytes(array, magic.get(key))
        if compressed:
            (directory / f"{FMNIST_NAMES[key]}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / FMNIST_NAMES[key]).write_bytes(data)
    return arrays


def _check_fmnist(train, test, arrays):
    train_x, train_y, test_x, test_y = arrays
    for ds, x, y in ((train, train_x, train_y), (test, test_x, test_y)):
        assert isinstance(ds, TensorImageDataset)
        assert ds.images.shape == (len(y), 1, 28, 28)
        assert ds.images.dtype == torch.uint8
        assert torch.equal(ds.images[:, 0], torch.from_numpy(x))
        assert ds.targets == y.tolist()
        assert ds.classes == list(torchvision.datasets.FashionMNIST.classes)
        image, label = ds[3]
        assert image.shape == (1, 28, 28) and label == int(y[3])


def test_fashion_mnist_gzip_root(tmp_path, no_system_data):
    arrays = _write_fmnist(tmp_path)
    train, test = D.fashion_mnist(root=tmp_path)
    _check_fmnist(train, test, arrays)
    assert len(train) == 12 and len(test) == 6


def test_fashion_mnist_uncompressed_root_as_str(tmp_path, no_system_data):
    arrays = _write_fmnist(tmp_path, compressed=False)
    _check_fmnist(*D.fashion_mnist(root=str(tmp_path)), arrays)


def test_fashion_mnist_torchvision_layout(tmp_path, no_system_data):
    arrays = _write_fmnist(tmp_path / "FashionMNIST" / "raw", compressed=False)
    _check_fmnist(*D.fashion_mnist(root=tmp_path), arrays)


def test_fashion_mnist_env_var_subfolder(tmp_path, monkeypatch, no_system_data):
    arrays = _write_fmnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path))
    _check_fmnist(*D.fashion_mnist(), arrays)


def test_fashion_mnist_root_searched_before_env_and_system(tmp_path, monkeypatch):
    arrays = _write_fmnist(tmp_path / "mine")
    other = _write_fmnist(tmp_path / "env")
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path / "env"))
    # Make the env copy distinguishable: a different label file.
    (tmp_path / "env" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.zeros_like(other[1])))
    )
    train, _ = D.fashion_mnist(root=tmp_path / "mine")
    assert train.targets == arrays[1].tolist()
    assert D.fashion_mnist()[0].targets == [0] * 12


def test_fashion_mnist_system_dir_constant(tmp_path, monkeypatch):
    arrays = _write_fmnist(tmp_path / "system")
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "system",))
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    (tmp_path / "empty").mkdir()  # an existing root without the files: the search goes on
    _check_fmnist(*D.fashion_mnist(root=tmp_path / "empty"), arrays)


def test_fashion_mnist_root_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    """A mistyped root must not silently read another copy (env var or system)."""
    _write_fmnist(tmp_path / "system")
    _write_fmnist(tmp_path / "env")
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "system",))
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path / "env"))
    typo = tmp_path / "fashoin-mnist"
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.fashion_mnist(root=typo)
    assert info.value.searched == [typo]
    assert f"root={str(typo)!r} does not exist" in str(info.value)
    assert not typo.exists()


def test_fashion_mnist_bad_magic(tmp_path, no_system_data):
    _write_fmnist(tmp_path, train_images=0x00000903)  # dtype byte 0x09 = int8, not uint8
    with pytest.raises(ValueError, match=r"bad IDX magic number 0x00000903"):
        D.fashion_mnist(root=tmp_path)


def test_fashion_mnist_wrong_ndim_and_truncated(tmp_path, no_system_data):
    _write_fmnist(tmp_path, train_labels=0x00000803)
    with pytest.raises(ValueError, match="3 dimensions, expected 1"):
        D.fashion_mnist(root=tmp_path)
    path = tmp_path / "x.idx"
    path.write_bytes(_idx_bytes(np.zeros((4, 28, 28)))[:-1])
    with pytest.raises(ValueError, match="payload has 3135 bytes"):
        D.read_idx(path)


def test_fashion_mnist_count_mismatch(tmp_path, no_system_data):
    _write_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(5))))
    with pytest.raises(ValueError, match="6 images but .* 5 labels"):
        D.fashion_mnist(root=tmp_path)


def test_fashion_mnist_missing(tmp_path, no_system_data):
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.fashion_mnist(root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message
    assert isinstance(info.value, FileNotFoundError)
    assert tmp_path in info.value.searched


def test_fashion_mnist_missing_lists_system_path(tmp_path, monkeypatch):
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "sys",))
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.fashion_mnist()
    assert info.value.searched == [
        tmp_path / "env",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "env" / "FashionMNIST" / "raw",
        tmp_path / "sys",
    ]


def test_fashion_mnist_download_fallback(tmp_path, monkeypatch, no_system_data):
    calls = []

    class FakeFashionMNIST:
        classes = torchvision.datasets.FashionMNIST.classes

        def __init__(self, root, train, download):
            calls.append((root, train, download))
            n = 4 if train else 2
            self.data = torch.full((n, 28, 28), 9 if train else 3, dtype=torch.uint8)
            self.targets = torch.arange(n)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    train, test = D.fashion_mnist(root=tmp_path, download=True)
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert train.images.shape == (4, 1, 28, 28) and int(train.images.max()) == 9
    assert test.targets == [0, 1]


def test_fashion_mnist_argument_validation():
    with pytest.raises(TypeError, match="root"):
        D.fashion_mnist(root=3)
    with pytest.raises(TypeError, match="download"):
        D.fashion_mnist(download="yes")
    with pytest.raises(ValueError, match="root"):
        D.fashion_mnist(root="")


@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    train, test = D.fashion_mnist()
    assert train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(torch.tensor(train.targets)).tolist() == [6000] * 10
    assert torch.bincount(torch.tensor(test.targets)).tolist() == [1000] * 10


# --------------------------------------------------------------------------- CIFAR-100


def _write_cifar100(root: Path) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 5), ("test", 3)):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 100, size=n)]
        # str keys: the real files are Python 2 pickles, which torchvision loads with
        # encoding="latin1" and then indexes with str keys ("data", "fine_labels").
        entry = {"data": data, "fine_labels": labels, "coarse_labels": [0] * n, "filenames": [b"x"] * n}
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f)
        out[split] = (data, labels)
    names = [f"class_{i:03d}" for i in range(100)]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": ["c"] * 20}, f)
    out["classes"] = names
    return out


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    # torchvision md5-checks the data files (_check_integrity) and, separately, the
    # meta file through the module-level check_integrity; our fixtures can't match.
    monkeypatch.setattr(torchvision.datasets.CIFAR100, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)


def test_cifar100(tmp_path, skip_cifar_md5):
    expected = _write_cifar100(tmp_path)
    train, test = D.cifar100(tmp_path)
    for ds, split in ((train, "train"), (test, "test")):
        data, labels = expected[split]
        assert isinstance(ds, TensorImageDataset)
        assert ds.images.shape == (len(labels), 3, 32, 32)
        assert ds.images.dtype == torch.uint8
        # CIFAR rows are channel-planar: 1024 R, then 1024 G, then 1024 B values.
        assert torch.equal(ds.images, torch.from_numpy(data).view(-1, 3, 32, 32))
        assert ds.targets == labels
        assert ds.classes == expected["classes"]
    assert ds.images.is_contiguous()
    assert int(train.images[1, 2, 0, 5]) == int(expected["train"][0][1, 2 * 1024 + 5])


def test_cifar100_missing(tmp_path):
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.cifar100(tmp_path)
    assert str(tmp_path / "cifar-100-python") in str(info.value)
    assert "download=True" in str(info.value)


def test_cifar100_argument_validation(tmp_path):
    with pytest.raises(TypeError, match="root"):
        D.cifar100(None)
    with pytest.raises(TypeError, match="download"):
        D.cifar100(tmp_path, download=1)


def _write_cifar10(root: Path) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {"train": ([], [])}
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        if name == "test_batch":
            out["test"] = (data, labels)
        else:
            out["train"][0].append(data)
            out["train"][1].extend(labels)
    out["train"] = (np.concatenate(out["train"][0]), out["train"][1])
    names = [f"c{i}" for i in range(10)]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    out["classes"] = names
    return out


def test_cifar10(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    expected = _write_cifar10(tmp_path)
    train, test = D.cifar10(tmp_path)
    for ds, split in ((train, "train"), (test, "test")):
        data, labels = expected[split]
        assert ds.images.shape == (len(labels), 3, 32, 32) and ds.images.dtype == torch.uint8
        assert torch.equal(ds.images, torch.from_numpy(data).view(-1, 3, 32, 32))
        assert ds.targets == labels
        assert ds.classes == expected["classes"]
    assert len(train) == 10  # five batches of two


def test_cifar10_missing(tmp_path):
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.cifar10(tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)
    assert "download=True" in str(info.value)


# --------------------------------------------------------------------------- Tiny-ImageNet


def _save(path: Path, color, mode: str = "RGB", size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # PNG content under the real .JPEG names: PIL sniffs the format, and PNG is lossless.
    Image.new(mode, (size, size), color).save(path, format="PNG")


def _write_tiny_imagenet(base: Path) -> list[str]:
    wnids = ["n03", "n01", "n02"]  # deliberately unsorted: order must follow wnids.txt
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for i, wnid in enumerate(wnids):
        for j in range(2):
            _save(base / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", (i * 50, j, 7))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
    rows = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n03"), ("val_2.JPEG", "n01")]
    for k, (name, _) in enumerate(rows):
        _save(base / "val" / "images" / name, 100 + k, mode="L")  # grayscale, as some real ones are
    (base / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in rows)
    )
    return wnids


@pytest.mark.parametrize("parent", [False, True])
def test_tiny_imagenet(tmp_path, parent):
    base = tmp_path / "tiny-imagenet-200"
    wnids = _write_tiny_imagenet(base)
    train, val = D.tiny_imagenet(tmp_path if parent else base)
    assert train.classes == wnids and len(train.classes) == 3
    assert train.targets == [0, 0, 1, 1, 2, 2]
    assert val.targets == [2, 0, 1]
    image, label = train[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert label == 1 and image[:, 10, 10].tolist() == [50, 1, 7]
    image, label = val[1]
    assert image.shape == (3, 64, 64) and label == 0
    assert image[:, 0, 0].tolist() == [101, 101, 101]
    assert isinstance(train, torchvision.datasets.VisionDataset)


def test_tiny_imagenet_custom_transform(tmp_path):
    _write_tiny_imagenet(tmp_path)
    train, _ = D.tiny_imagenet(tmp_path, transform=lambda img: img.size)
    assert train[0] == ((64, 64), 0)


def test_tiny_imagenet_errors(tmp_path):
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.tiny_imagenet(tmp_path)
    assert D.TINY_IMAGENET_URL in str(info.value)
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in str(info.value)
    with pytest.raises(TypeError, match="transform"):
        D.tiny_imagenet(tmp_path, transform=5)

    _write_tiny_imagenet(tmp_path / "t")
    with open(tmp_path / "t" / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="'n99' is not in wnids.txt"):
        D.tiny_imagenet(tmp_path / "t")


# --------------------------------------------------------------------------- ImageNet


def test_imagenet(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        for c, wnid in enumerate(["n02", "n01"]):
            for k in range(n):
                _save(tmp_path / split / wnid / f"{k}.JPEG", (c * 10, k, 0), size=8 + k)
    train, val = D.imagenet(tmp_path)
    assert isinstance(train, torchvision.datasets.ImageFolder)
    assert train.classes == ["n01", "n02"] == val.classes
    assert train.targets == [0, 0, 0, 1, 1, 1] and val.targets == [0, 1]
    image, label = train[5]
    assert image.dtype == torch.uint8 and image.shape == (3, 10, 10)
    assert label == 1 and image[:, 0, 0].tolist() == [0, 2, 0]


def test_imagenet_errors(tmp_path):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    _save(tmp_path / "train" / "n01" / "a.JPEG", (1, 2, 3))
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.imagenet(tmp_path)
    assert str(tmp_path / "val") in str(info.value)
    assert "val/<wnid>/*.JPEG" in str(info.value)

    (tmp_path / "val").mkdir()  # flat / empty val: no class folders
    with pytest.raises(D.DatasetNotFoundError, match="ImageFolder layout"):
        D.imagenet(tmp_path)

    _save(tmp_path / "val" / "n02" / "a.JPEG", (1, 2, 3))
    with pytest.raises(ValueError, match="different class folders"):
        D.imagenet(tmp_path)
    with pytest.raises(TypeError, match="root"):
        D.imagenet(42)
