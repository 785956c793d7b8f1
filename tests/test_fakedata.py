"""Push every fake dataset through the real mindspore.dataset reader."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest

try:
    from tests import fakedata as fd
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    import fakedata as fd

def _read(dataset: ds.Dataset, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Return (images, labels) of a whole dataset as numpy arrays."""
    images, labels = [], []
    for row in dataset.batch(batch).create_dict_iterator(output_numpy=True, num_epochs=1):
        images.append(row["image"])
        labels.append(row["label"])
    return np.concatenate(images), np.concatenate(labels)


def _check_rgb(images: np.ndarray, labels: np.ndarray, size: int) -> None:
    """HWC uint8, orientation markers in place, and mean colour identifies the label."""
    assert images.shape == (len(labels), size, size, 3)
    assert images.dtype == np.uint8
    for (r, c), rgb in fd.MARKER_RGB.items():
        assert (images[:, r, c, :] == rgb).all(), (r, c)
    mean = images[:, 2:, 2:, :].reshape(len(labels), -1, 3).mean(axis=1)
    dist = ((mean[:, None, :] - fd.PALETTE[None].astype(float)) ** 2).sum(axis=2)
    np.testing.assert_array_equal(dist.argmin(axis=1), labels)


# ---------------------------------------------------------------- MNIST family (IDX)


def test_idx_headers(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = fd.write_idx_images(tmp_path / "img", images).read_bytes()
    assert raw[:16] == struct.pack(">IIII", 0x803, 2, 3, 4)
    assert raw[16:] == images.tobytes()
    lab = fd.write_idx_labels(tmp_path / "lab.gz", np.array([7, 1, 0], np.uint8))
    assert gzip.decompress(lab.read_bytes()) == struct.pack(">II", 0x801, 3) + bytes([7, 1, 0])
    with pytest.raises(TypeError):
        fd.write_idx_labels(tmp_path / "bad", np.array([1], np.int32))


def test_make_mnist_like_files(tmp_path: Path) -> None:
    fd.make_mnist_like(tmp_path / "gz", 5, 3)
    fd.make_mnist_like(tmp_path / "raw", 5, 3, gz=False)
    names = [n for pair in fd.MNIST_FILES.values() for n in pair]
    assert sorted(p.name for p in (tmp_path / "gz").iterdir()) == sorted(n + ".gz" for n in names)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(names)
    assert (tmp_path / "raw" / "t10k-images-idx3-ubyte").stat().st_size == 16 + 3 * 28 * 28


@pytest.mark.parametrize("reader", [ds.MnistDataset, ds.FashionMnistDataset, ds.KMnistDataset])
def test_mnist_family_reader(tmp_path: Path, reader: type) -> None:
    written = fd.make_mnist_like(tmp_path / "gz", n_train=40, n_test=20, gz=True, seed=1)
    raw_dir = fd.gunzip_dir(tmp_path / "gz", tmp_path / "raw")
    for usage, split in (("train", "train"), ("test", "test")):
        images, labels = _read(reader(str(raw_dir), usage=usage, shuffle=False))
        assert images.shape == (len(written[split]), 28, 28, 1) and images.dtype == np.uint8
        assert labels.dtype == np.uint32
        np.testing.assert_array_equal(labels, written[split])
        for (r, c), v in fd.MARKER_GRAY.items():
            assert (images[:, r, c, 0] == v).all(), (r, c)
        blocks = images[..., 0].reshape(-1, 4, 7, 4, 7).mean(axis=(2, 4)).reshape(-1, 16)
        np.testing.assert_array_equal(blocks.argmax(axis=1), labels)


def test_mnist_reader_errors(tmp_path: Path) -> None:
    fd.make_mnist_like(tmp_path, 4, 2, gz=False)
    img = tmp_path / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-100])
    dataset = ds.MnistDataset(str(tmp_path), usage="train", shuffle=False)  # no error yet
    with pytest.raises(RuntimeError, match="Invalid mnist file, truncated data length"):
        dataset.get_dataset_size()
    fd.make_mnist_like(tmp_path, 4, 2, gz=True)  # .gz beside the raw files is also picked up
    with pytest.raises(RuntimeError, match="Invalid mnist file"):
        ds.MnistDataset(str(tmp_path), usage="test", shuffle=False).get_dataset_size()


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_bin_reader(tmp_path: Path) -> None:
    written = fd.make_cifar10_bin(tmp_path)
    data_dir = tmp_path / fd.CIFAR10_BIN_DIR
    names = sorted(p.name for p in data_dir.iterdir())
    expected = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["batches.meta.txt", "test_batch.bin"]
    assert names == sorted(expected)
    assert (data_dir / "test_batch.bin").stat().st_size == 10_000 * 3073
    assert (data_dir / "batches.meta.txt").read_text().split() == list(fd.CIFAR10_CLASSES)
    assert len(written["train"]) == 50_000 and len(written["test"]) == 10_000
    assert ds.Cifar10Dataset(str(data_dir), usage="all").get_dataset_size() == 60_000
    for usage in ("train", "test"):
        images, labels = _read(ds.Cifar10Dataset(str(data_dir), usage=usage, shuffle=False), 5000)
        assert labels.dtype == np.uint32
        np.testing.assert_array_equal(labels, written[usage])
        _check_rgb(images[:2000], labels[:2000], 32)


def test_cifar10_bin_single_train_batch(tmp_path: Path) -> None:
    written = fd.make_cifar10_bin(tmp_path, seed=3, n_train_batches=1)
    data_dir = str(tmp_path / fd.CIFAR10_BIN_DIR)
    dataset = ds.Cifar10Dataset(data_dir, usage="train", shuffle=False, num_samples=300)
    images, labels = _read(dataset)
    np.testing.assert_array_equal(labels, written["train"][:300])
    _check_rgb(images, labels, 32)


def test_cifar10_bin_reader_errors(tmp_path: Path) -> None:
    fd.make_cifar10_bin(tmp_path, n_train_batches=1)
    data_dir = tmp_path / fd.CIFAR10_BIN_DIR
    with pytest.raises(RuntimeError, match=r"cifar\(\.bin\) files are missing"):
        ds.Cifar10Dataset(str(tmp_path), usage="test").get_dataset_size()  # parent folder
    test_bin = data_dir / "test_batch.bin"
    test_bin.write_bytes(test_bin.read_bytes()[:-5])
    dataset = ds.Cifar10Dataset(str(data_dir), usage="test", shuffle=False)
    assert dataset.get_dataset_size() == 10_000  # size comes from the file count only
    with pytest.raises(RuntimeError, match="Invalid cifar10 file, failed to read data from"):
        next(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))


def test_cifar10_python_layout(tmp_path: Path) -> None:
    py_dir = fd.make_cifar10_python(tmp_path)
    assert py_dir == tmp_path / fd.CIFAR10_PY_DIR
    expected = [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta", "test_batch"]
    assert sorted(p.name for p in py_dir.iterdir()) == sorted(expected)
    with open(py_dir / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].shape == (2, 3072) and batch[b"data"].dtype == np.uint8
    assert len(batch[b"labels"]) == 2
    for folder in (tmp_path, py_dir):
        with pytest.raises(RuntimeError, match=r"cifar\(\.bin\) files are missing"):
            ds.Cifar10Dataset(str(folder), usage="train").get_dataset_size()


# ---------------------------------------------------------------- SVHN


def test_svhn_mat_layout(tmp_path: Path) -> None:
    from scipy.io import loadmat

    written = fd.make_svhn_mat(tmp_path, n_train=30, n_test=12)
    mat = loadmat(str(tmp_path / "train_32x32.mat"))
    assert mat["X"].shape == (32, 32, 3, 30) and mat["X"].dtype == np.uint8
    assert mat["y"].shape == (30, 1) and set(mat["y"].ravel()) == set(range(1, 11))
    np.testing.assert_array_equal(mat["y"].ravel() % 10, written["train"])
    with pytest.raises(ValueError):
        fd.make_svhn_mat(tmp_path / "one", n_train=1, n_test=2)


def test_svhn_reader(tmp_path: Path) -> None:
    written = fd.make_svhn_mat(tmp_path, n_train=30, n_test=12, seed=2)
    for usage in ("train", "test"):
        images, labels = _read(ds.SVHNDataset(str(tmp_path), usage=usage, shuffle=False))
        assert labels.dtype == np.uint32
        np.testing.assert_array_equal(labels, written[usage])  # 10 -> 0
        _check_rgb(images, labels, 32)


# ---------------------------------------------------------------- STL-10


def test_stl10_reader(tmp_path: Path) -> None:
    written = fd.make_stl10_bin(tmp_path, n_train=30, n_test=12, seed=4)
    data_dir = tmp_path / fd.STL10_BIN_DIR
    assert (data_dir / "train_X.bin").stat().st_size == 30 * 3 * 96 * 96
    assert set(np.fromfile(data_dir / "train_y.bin", np.uint8)) == set(range(1, 11))
    assert not (data_dir / "unlabeled_X.bin").exists()
    for usage in ("train", "test"):
        images, labels = _read(ds.STL10Dataset(str(data_dir), usage=usage, shuffle=False))
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, written[usage])
        _check_rgb(images, labels, 96)


def test_stl10_unlabeled(tmp_path: Path) -> None:
    written = fd.make_stl10_bin(tmp_path, n_train=10, n_test=10, n_unlabeled=5)
    data_dir = str(tmp_path / fd.STL10_BIN_DIR)
    assert set(written) == {"train", "test"}
    assert ds.STL10Dataset(data_dir, usage="all").get_dataset_size() == 25
