"""Find a dataset on disk, check it cheaply, and lay it out the way the MindSpore reader wants.

The user's data folder is only ever read. Whatever the reader needs that is not already there
(decompressed IDX files, an extracted archive) goes to a cache folder, and the reader is pointed at
the cache, which holds links to the user's files or those derived copies.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import zlib
from pathlib import Path

from ms_resnet.data.registry import DatasetInfo
from ms_resnet.errors import DataError

SPLITS = ("train", "test")
IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CIFAR_RECORD = 1 + 32 * 32 * 3
_CIFAR_RECORDS_PER_FILE = 10000  # Cifar10Dataset rejects .bin files of any other length
_CIFAR_BINS = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
               "test": ("test_batch.bin",)}
_STL_IMAGE = 3 * 96 * 96
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def resolve_data_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """`data_dir` if given, else `$MS_RESNET_DATA/<dataset>`, else `./data/<dataset>`."""
    if data_dir:
        return Path(data_dir).expanduser()
    root = os.environ.get("MS_RESNET_DATA")
    return (Path(root).expanduser() if root else Path("data")) / dataset


def cache_root() -> Path:
    root = os.environ.get("MS_RESNET_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ms_resnet"


def _fetch_hint(info: DatasetInfo, data_dir: Path) -> str:
    return f"get it with: ms-resnet download {info.name} --data_dir {data_dir}"


def _cache_dir(info: DatasetInfo, data_dir: Path) -> Path:
    key = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]
    path = cache_root() / f"{info.name}-{key}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _link(source: Path, target: Path) -> None:
    """Make `target` a symlink to `source`, replacing whatever was there."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.lnk")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(source.resolve())
    os.replace(tmp, target)


def _stamp(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


class _Stamps:
    """Remembers which source file each derived cache file came from, so work is done once."""

    def __init__(self, cache: Path) -> None:
        self.path = cache / "sources.json"
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def fresh(self, derived: Path, source: Path) -> bool:
        return derived.exists() and self.data.get(derived.name) == _stamp(source)

    def record(self, derived: Path, source: Path) -> None:
        self.data[derived.name] = _stamp(source)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def _gunzip(source: Path, target: Path) -> None:
    # Per process: data-parallel workers may prepare the same fresh cache at the same time.
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        with gzip.open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{source}: truncated or corrupt gzip file ({exc})") from None
    os.replace(tmp, target)


def _check_idx(path: Path, source: Path, image_size: int) -> int:
    """Check an IDX file's header against its size; return the number of items."""
    with open(path, "rb") as f:
        header = f.read(16)
    magic = int.from_bytes(header[:4], "big") if len(header) >= 8 else -1
    if magic == 0x803 and len(header) == 16:
        count, rows, cols = (int.from_bytes(header[i:i + 4], "big") for i in (4, 8, 12))
        if (rows, cols) != (image_size, image_size):
            raise DataError(f"{source}: images are {rows}x{cols}, expected "
                            f"{image_size}x{image_size}")
        expected = 16 + count * rows * cols
    elif magic == 0x801:
        count = int.from_bytes(header[4:8], "big")
        expected = 8 + count
    else:
        raise DataError(f"{source}: not an IDX image or label file (bad header)")
    size = path.stat().st_size
    if size != expected:
        raise DataError(f"{source}: truncated or corrupt IDX file: header says {count} items "
                        f"({expected} bytes), file has {size} bytes")
    return count


def _prepare_idx(info: DatasetInfo, data_dir: Path, split: str, cache: Path) -> Path:
    stamps = _Stamps(cache)
    counts = []
    for name in IDX_NAMES[split]:
        raw, packed = data_dir / name, data_dir / (name + ".gz")
        target = cache / name
        if packed.is_file():
            if not stamps.fresh(target, packed):
                _gunzip(packed, target)
                stamps.record(target, packed)
            source = packed
        elif raw.is_file():
            _link(raw, target)
            source = raw
        else:
            raise DataError(f"{info.title}: {name}.gz not found in {data_dir}; "
                            f"{_fetch_hint(info, data_dir)}")
        counts.append(_check_idx(target, source, info.image_size))
    if counts[0] != counts[1]:
        raise DataError(f"{data_dir}: {IDX_NAMES[split][0]} holds {counts[0]} images but "
                        f"{IDX_NAMES[split][1]} holds {counts[1]} labels")
    return cache


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive, refusing any member that would land outside `target`."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            root = target.resolve()
            for member in tar.getmembers():
                dest = (root / member.name).resolve()
                if root not in dest.parents and dest != root or member.issym() or member.islnk():
                    raise DataError(f"{archive}: refusing archive entry '{member.name}' "
                                    f"(it would be written outside {target})")
            tar.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{archive}: truncated or corrupt archive ({exc})") from None


def _find_folder(data_dir: Path, subfolder: str, wanted: str) -> Path | None:
    for folder in (data_dir / subfolder, data_dir):
        if (folder / wanted).is_file():
            return folder
    return None


def _extracted(info: DatasetInfo, data_dir: Path, cache: Path, subfolder: str) -> Path | None:
    """Extract the dataset's archive (if the user has it) into the cache, once."""
    archive = data_dir / info.files[0].name
    if not archive.is_file():
        return None
    stamps = _Stamps(cache)
    marker = cache / (archive.name + ".extracted")
    if not stamps.fresh(marker, archive):
        shutil.rmtree(cache / subfolder, ignore_errors=True)
        safe_extract(archive, cache)
        marker.touch()
        stamps.record(marker, archive)
    return cache / subfolder


def _prepare_cifar10(info: DatasetInfo, data_dir: Path, split: str, cache: Path) -> Path:
    names = _CIFAR_BINS[split]
    folder = _find_folder(data_dir, "cifar-10-batches-bin", names[0])
    if folder is None:
        folder = _extracted(info, data_dir, cache, "cifar-10-batches-bin")
    if folder is None:
        if (data_dir / "cifar-10-batches-py").is_dir() or (data_dir / "data_batch_1").is_file():
            raise DataError(f"{data_dir}: holds the Python (pickle) version of CIFAR-10; "
                            "MindSpore's Cifar10Dataset reads the binary version "
                            "(cifar-10-binary.tar.gz, folder cifar-10-batches-bin); "
                            f"{_fetch_hint(info, data_dir)}")
        raise DataError(f"{info.title}: neither cifar-10-batches-bin/ nor "
                        f"cifar-10-binary.tar.gz found in {data_dir}; "
                        f"{_fetch_hint(info, data_dir)}")
    reader_dir = cache / f"reader-{split}"
    reader_dir.mkdir(exist_ok=True)
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{info.title}: {name} not found in {folder}; "
                            f"{_fetch_hint(info, data_dir)}")
        size = path.stat().st_size
        if size != _CIFAR_RECORD * _CIFAR_RECORDS_PER_FILE:
            raise DataError(f"{path}: truncated or corrupt CIFAR-10 batch: {size} bytes, "
                            f"expected {_CIFAR_RECORD * _CIFAR_RECORDS_PER_FILE} "
                            f"({_CIFAR_RECORDS_PER_FILE} records of {_CIFAR_RECORD} bytes)")
        _link(path, reader_dir / name)
    return reader_dir


def _prepare_svhn(info: DatasetInfo, data_dir: Path, split: str, cache: Path) -> Path:
    name = _SVHN_FILES[split]
    path = data_dir / name
    if not path.is_file():
        raise DataError(f"{info.title}: {name} not found in {data_dir}; "
                        f"{_fetch_hint(info, data_dir)}")
    from scipy.io import whosmat  # reads only the variable headers: cheap on a 180 MB file

    try:
        shapes = {var: shape for var, shape, _ in whosmat(str(path))}
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a damaged file
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from None
    images, labels = shapes.get("X"), shapes.get("y")
    if images is None or labels is None or tuple(images[:3]) != (32, 32, 3):
        raise DataError(f"{path}: truncated or corrupt SVHN file: expected variables "
                        f"X (32x32x3xN) and y (Nx1), found {shapes}")
    count = images[3]
    if labels[0] != count or path.stat().st_size < count * 32 * 32 * 3:
        raise DataError(f"{path}: truncated or corrupt SVHN file ({count} images declared)")
    reader_dir = cache / f"reader-{split}"
    reader_dir.mkdir(exist_ok=True)
    _link(path, reader_dir / name)
    return reader_dir


def _prepare_stl10(info: DatasetInfo, data_dir: Path, split: str, cache: Path) -> Path:
    names = (f"{split}_X.bin", f"{split}_y.bin")
    folder = _find_folder(data_dir, "stl10_binary", names[0])
    if folder is None:
        folder = _extracted(info, data_dir, cache, "stl10_binary")
    if folder is None or not all((folder / n).is_file() for n in names):
        raise DataError(f"{info.title}: {names[0]} and {names[1]} not found in {data_dir} "
                        f"(or its stl10_binary/ folder); {_fetch_hint(info, data_dir)}")
    images, labels = (folder / n for n in names)
    count = labels.stat().st_size
    if count == 0 or images.stat().st_size != count * _STL_IMAGE:
        raise DataError(f"{images}: truncated or corrupt STL-10 file: "
                        f"{images.stat().st_size} bytes for {count} labels "
                        f"(expected {count * _STL_IMAGE})")
    reader_dir = cache / f"reader-{split}"
    reader_dir.mkdir(exist_ok=True)
    for path in (images, labels):
        _link(path, reader_dir / path.name)
    return reader_dir


_PREPARERS = {"idx": _prepare_idx, "cifar10": _prepare_cifar10, "svhn": _prepare_svhn,
              "stl10": _prepare_stl10}


def prepare_split(info: DatasetInfo, data_dir: Path, split: str) -> Path:
    """Check the files of one split and return the folder to give to the MindSpore reader."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    if not data_dir.is_dir():
        raise DataError(f"{info.title}: data folder {data_dir} does not exist; "
                        f"{_fetch_hint(info, data_dir)} (or set --data_dir / $MS_RESNET_DATA)")
    return _PREPARERS[info.layout](info, data_dir, split, _cache_dir(info, data_dir))


def local_files(info: DatasetInfo, data_dir: Path) -> list[tuple[str, bool]]:
    """Each upstream file with whether it (or its unpacked form) is present in `data_dir`."""
    unpacked = {"cifar10": "cifar-10-batches-bin", "stl10": "stl10_binary"}.get(info.layout)
    status = []
    for remote in info.files:
        present = (data_dir / remote.name).is_file()
        if not present and info.layout == "idx":
            present = (data_dir / remote.name.removesuffix(".gz")).is_file()
        if not present and unpacked:
            present = (data_dir / unpacked).is_dir()
        status.append((remote.name, present))
    return status
