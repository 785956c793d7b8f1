"""Tiny datasets written in the exact upstream on-disk formats, for offline reader tests.

Every ``make_*`` helper writes images whose pixels carry the label (a class-dependent
pattern or colour plus noise, so a tiny model can learn them) and returns the 0-based
labels it wrote. Every image also carries a fixed orientation marker (see ``MARKER_RGB``
and ``MARKER_GRAY``) so tests can check that row/column/channel order survives reading.

Reader facts these helpers rely on (MindSpore 2.10, checked by experiment):

* ``MnistDataset`` (and Fashion/KMNIST) needs raw, uncompressed IDX files of 28x28 images;
  a ``.gz`` copy lying next to a raw file is also picked up and breaks reading.
* ``Cifar10Dataset`` must be pointed at the ``cifar-10-batches-bin`` folder itself and
  reads exactly 10,000 records from every ``*data_batch*.bin`` (train) or
  ``*test_batch*.bin`` (test) file; shorter files fail, extra records are ignored.
* ``STL10Dataset`` must be pointed at the ``stl10_binary`` folder itself.
* ``SVHNDataset`` needs at least 2 samples per ``.mat`` file (1 sample breaks its squeeze).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

NUM_CLASSES = 10
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_BIN_DIR = "cifar-10-batches-bin"
CIFAR10_PY_DIR = "cifar-10-batches-py"
CIFAR10_RECORDS_PER_FILE = 10_000
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
STL10_BIN_DIR = "stl10_binary"
STL10_CLASSES = (
    "airplane", "bird", "car", "cat", "deer",
    "dog", "horse", "monkey", "ship", "truck",
)  # fmt: skip

# Orientation markers, identical in every image: {(row, col): value} in HWC terms.
MARKER_RGB: dict[tuple[int, int], tuple[int, int, int]] = {
    (0, 0): (255, 0, 0),
    (0, 1): (0, 255, 0),
    (1, 0): (0, 0, 255),
}
MARKER_GRAY: dict[tuple[int, int], int] = {(0, 0): 255, (0, 1): 0, (1, 0): 128}

# One distinct colour per class (max 191 so that colour + noise in [0, 64) fits in uint8).
PALETTE = np.array(
    [
        [191, 0, 0], [0, 191, 0], [0, 0, 191], [191, 191, 0], [191, 0, 191],
        [0, 191, 191], [191, 96, 0], [96, 0, 191], [0, 96, 96], [96, 96, 96],
    ],
    dtype=np.uint8,
)  # fmt: skip
NOISE_MAX = 64

_IDX_UBYTE = 0x08


def _open_write(path: Path):
    """Open ``path`` for binary writing, gzip-compressed when it ends in ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return gzip.open(path, "wb", compresslevel=1) if path.suffix == ".gz" else open(path, "wb")


def write_idx(path: PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as a big-endian IDX file (gzip-compressed if path ends in .gz)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writer only supports uint8, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"bad number of dimensions: {array.ndim}")
    path = Path(path)
    header = struct.pack(">BBBB", 0, 0, _IDX_UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with _open_write(path) as f:
        f.write(header)
        f.write(array.tobytes())
    return path


def write_idx_images(path: PathLike, images: np.ndarray) -> Path:
    """Write uint8 images [N, H, W] as an IDX3 file (magic 0x00000803)."""
    if images.ndim != 3:
        raise ValueError(f"images must be [N, H, W], got shape {images.shape}")
    return write_idx(path, images)


def write_idx_labels(path: PathLike, labels: np.ndarray) -> Path:
    """Write uint8 labels [N] as an IDX1 file (magic 0x00000801)."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {labels.shape}")
    return write_idx(path, labels)


def _balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Shuffled labels 0..9 with every class present as evenly as ``n`` allows."""
    return rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.uint8)


def _gray_images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """28x28 images: noise plus a bright 7x7 block at a class-dependent grid cell."""
    n = len(labels)
    images = rng.integers(0, NOISE_MAX, size=(n, 28, 28), dtype=np.uint8)
    for c in range(NUM_CLASSES):
        r, col = divmod(c, 4)
        images[labels == c, 7 * r : 7 * r + 7, 7 * col : 7 * col + 7] += 160
    for (r, col), v in MARKER_GRAY.items():
        images[:, r, col] = v
    return images


def _rgb_images(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """NHWC uint8 images: class colour from PALETTE plus noise, with MARKER_RGB pixels."""
    images = rng.integers(0, NOISE_MAX, size=(len(labels), size, size, 3), dtype=np.uint8)
    images += PALETTE[labels][:, None, None, :]
    for (r, c), rgb in MARKER_RGB.items():
        images[:, r, c, :] = rgb
    return images


def make_mnist_like(
    root: PathLike, n_train: int, n_test: int, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four MNIST IDX files (``.gz`` if ``gz``) into ``root``; return labels per split.

    Works for MnistDataset, FashionMnistDataset and KMnistDataset (same names and format).
    The reader needs raw files: use ``gz=False`` or :func:`gunzip_dir` first.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _balanced_labels(rng, n)
        images_name, labels_name = MNIST_FILES[split]
        write_idx_images(root / (images_name + suffix), _gray_images(rng, labels))
        write_idx_labels(root / (labels_name + suffix), labels)
        out[split] = labels
    return out


def gunzip_dir(src: PathLike, dst: PathLike) -> Path:
    """Decompress every ``*.gz`` in ``src`` into ``dst`` (without the suffix); return ``dst``."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for gz_path in sorted(Path(src).glob("*.gz")):
        with gzip.open(gz_path, "rb") as f:
            (dst / gz_path.stem).write_bytes(f.read())
    return dst


def make_cifar10_bin(
    root: PathLike, seed: int = 0, n_train_batches: int = 5
) -> dict[str, np.ndarray]:
    """Write ``root/cifar-10-batches-bin`` (binary version); return labels per split.

    Each ``.bin`` holds exactly 10,000 records of 1 label byte + 3072 bytes (R, G, B planes,
    each 32x32 row-major) - the minimum ``Cifar10Dataset`` accepts. ``n_train_batches``
    (1..5) writes ``data_batch_1..n.bin``; the reader accepts any non-empty subset.
    Pass ``root / CIFAR10_BIN_DIR`` as ``dataset_dir``.
    """
    if not 1 <= n_train_batches <= 5:
        raise ValueError(f"n_train_batches must be in 1..5, got {n_train_batches}")
    out_dir = Path(root) / CIFAR10_BIN_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = CIFAR10_RECORDS_PER_FILE
    # One noise pool, row-shuffled per file: drawing 30 MB of noise per file is the slow part.
    noise = rng.integers(0, NOISE_MAX, size=(n, 3, 32 * 32), dtype=np.uint8)
    names = [f"data_batch_{i}.bin" for i in range(1, n_train_batches + 1)] + ["test_batch.bin"]
    labels_by_file = []
    records = np.empty((n, 1 + 3 * 32 * 32), dtype=np.uint8)
    planes = records[:, 1:].reshape(n, 3, 32 * 32)  # view: R, G, B planes, row-major 32x32
    for name in names:
        labels = _balanced_labels(rng, n)
        records[:, 0] = labels
        np.take(noise, rng.permutation(n), axis=0, out=planes)
        planes += PALETTE[labels][:, :, None]
        for (r, c), rgb in MARKER_RGB.items():
            planes[:, :, 32 * r + c] = rgb
        records.tofile(out_dir / name)
        labels_by_file.append(labels)
    (out_dir / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return {"train": np.concatenate(labels_by_file[:-1]), "test": labels_by_file[-1]}


def make_cifar10_python(root: PathLike, n_per_batch: int = 2, seed: int = 0) -> Path:
    """Write a minimal ``root/cifar-10-batches-py`` (pickle version) layout; return that folder.

    Files: ``data_batch_1..5``, ``test_batch`` (dicts with b'batch_label', b'labels',
    b'data' [N, 3072] uint8, b'filenames') and ``batches.meta``, pickled with protocol 2
    and bytes keys as upstream. ``Cifar10Dataset`` cannot read this version.
    """
    out_dir = Path(root) / CIFAR10_PY_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        labels = _balanced_labels(rng, n_per_batch)
        images = _rgb_images(rng, labels, 32).transpose(0, 3, 1, 2).reshape(n_per_batch, -1)
        batch = {
            b"batch_label": f"batch {i + 1} of 6".encode(),
            b"labels": [int(x) for x in labels],
            b"data": images,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n_per_batch)],
        }
        with open(out_dir / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_cases_per_batch": n_per_batch,
        b"num_vis": 3072,
    }
    with open(out_dir / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return out_dir


def make_svhn_mat(
    root: PathLike, n_train: int, n_test: int, seed: int = 0, n_extra: int = 0
) -> dict[str, np.ndarray]:
    """Write ``train_32x32.mat``/``test_32x32.mat`` (and ``extra`` if ``n_extra``) into ``root``.

    MATLAB v5 files with 'X' uint8 (32, 32, 3, N) and 'y' uint8 (N, 1), digit 0 stored as 10.
    Returns 0-based labels per split. Each split needs >= 2 samples for ``SVHNDataset``.
    """
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = [("train", n_train), ("test", n_test)] + ([("extra", n_extra)] if n_extra else [])
    out = {}
    for split, n in splits:
        if n < 2:
            raise ValueError(f"SVHNDataset cannot read a .mat with {n} sample(s); need >= 2")
        labels = _balanced_labels(rng, n)
        images = _rgb_images(rng, labels, 32)  # NHWC
        x = np.ascontiguousarray(images.transpose(1, 2, 3, 0))  # -> H, W, C, N
        y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(n, 1)
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y}, format="5")
        out[split] = labels
    return out


def make_stl10_bin(
    root: PathLike, n_train: int, n_test: int, seed: int = 0, n_unlabeled: int = 0
) -> dict[str, np.ndarray]:
    """Write ``root/stl10_binary/{train,test}_{X,y}.bin`` + ``class_names.txt``.

    X: uint8, each image 3x96x96 channel-major then column-major (upstream readers do
    ``reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)`` to get NHWC); y: uint8 labels 1..10.
    ``unlabeled_X.bin`` (needed only for usage 'unlabeled'/'all'/None) if ``n_unlabeled``.
    Returns 0-based labels per split. Pass ``root / STL10_BIN_DIR`` as ``dataset_dir``.
    """
    out_dir = Path(root) / STL10_BIN_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        if split == "unlabeled" and n == 0:
            continue
        labels = _balanced_labels(rng, n)
        images = _rgb_images(rng, labels, 96)  # NHWC
        images.transpose(0, 3, 2, 1).tofile(out_dir / f"{split}_X.bin")  # -> N, C, W, H
        if split != "unlabeled":
            (labels + 1).astype(np.uint8).tofile(out_dir / f"{split}_y.bin")
            out[split] = labels
    (out_dir / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return out
