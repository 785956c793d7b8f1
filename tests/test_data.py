"""Finding, checking and preparing dataset files; the mindspore.dataset pipelines; download."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest

from ms_resnet.data import DATASETS, get_dataset_info
from ms_resnet.data.download import download_file, file_md5
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.data.prepare import local_files, prepare_split, resolve_data_dir, safe_extract
from ms_resnet.data.registry import RemoteFile
from ms_resnet.errors import DataError
from tests import fakedata


def _batches(data) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*data.create_tuple_iterator(num_epochs=1, output_numpy=True))
    return np.concatenate(images), np.concatenate(labels)


def _read_only_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return dst


def test_registry_knows_the_real_class_names_and_files() -> None:
    assert set(DATASETS) == {"mnist", "kmnist", "fashion_mnist", "cifar10", "svhn", "stl10"}
    assert DATASETS["fashion_mnist"].classes[0] == "T-shirt/top"
    assert DATASETS["fashion_mnist"].classes[9] == "Ankle boot"
    assert "お" in DATASETS["kmnist"].classes[0]
    assert DATASETS["cifar10"].classes[:2] == ("airplane", "automobile")
    for info in DATASETS.values():
        assert len(info.classes) == 10
        assert len(info.mean) == len(info.std) == info.channels
        for remote in info.files:
            assert len(remote.md5) == 32 and remote.urls
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; choose one of: cifar10"):
        get_dataset_info("imagenet")


def test_data_dir_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MS_RESNET_DATA", raising=False)
    assert resolve_data_dir("mnist") == Path("data/mnist")
    monkeypatch.setenv("MS_RESNET_DATA", "/somewhere")
    assert resolve_data_dir("mnist") == Path("/somewhere/mnist")
    assert resolve_data_dir("mnist", "/explicit") == Path("/explicit")


def test_gz_idx_files_are_prepared_in_the_cache_not_the_data_dir(
        mnist_small: Path, tmp_path: Path) -> None:
    data_dir = _read_only_copy(mnist_small, tmp_path / "mnist")
    before = sorted(p.name for p in data_dir.iterdir())
    folder = prepare_split(get_dataset_info("mnist"), data_dir, "train")
    assert sorted(p.name for p in data_dir.iterdir()) == before
    assert Path(os.environ["MS_RESNET_CACHE"]) in folder.parents
    assert (folder / "train-images-idx3-ubyte").stat().st_size == 16 + 2000 * 28 * 28
    # A second run reuses the decompressed file instead of writing it again.
    mtime = (folder / "train-images-idx3-ubyte").stat().st_mtime_ns
    prepare_split(get_dataset_info("mnist"), data_dir, "train")
    assert (folder / "train-images-idx3-ubyte").stat().st_mtime_ns == mtime


def test_raw_idx_files_are_read_too(tmp_path: Path) -> None:
    labels = fakedata.make_mnist_like(tmp_path / "raw", n_train=40, n_test=20, gz=False)
    data = create_dataset("kmnist", "test", 8, data_dir=str(tmp_path / "raw"))
    images, read_labels = _batches(data)
    assert images.shape == (20, 1, 28, 28) and images.dtype == np.float32
    np.testing.assert_array_equal(read_labels, labels["test"])
    assert read_labels.dtype == np.int32


def test_missing_folder_and_missing_file_say_how_to_get_them(tmp_path: Path) -> None:
    info = get_dataset_info("mnist")
    with pytest.raises(DataError, match=rf"data folder {tmp_path / 'none'} does not exist; "
                                        "get it with: ms-resnet download mnist"):
        prepare_split(info, tmp_path / "none", "train")
    fakedata.make_mnist_like(tmp_path / "m", n_train=10, n_test=10)
    (tmp_path / "m" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"MNIST: train-labels-idx1-ubyte.gz not found in .*; "
                                        r"get it with: ms-resnet download mnist --data_dir"):
        prepare_split(info, tmp_path / "m", "train")


def test_truncated_gz_and_truncated_raw_idx_are_refused(tmp_path: Path) -> None:
    info = get_dataset_info("mnist")
    fakedata.make_mnist_like(tmp_path / "gz", n_train=50, n_test=10)
    packed = tmp_path / "gz" / "train-images-idx3-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:-200])
    with pytest.raises(DataError, match=rf"{packed}: truncated or corrupt gzip file"):
        prepare_split(info, tmp_path / "gz", "train")

    fakedata.make_mnist_like(tmp_path / "raw", n_train=50, n_test=10, gz=False)
    raw = tmp_path / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-100])
    with pytest.raises(DataError, match=rf"{raw}: truncated or corrupt IDX file: header says "
                                        r"50 items \(39216 bytes\), file has 39116 bytes"):
        prepare_split(info, tmp_path / "raw", "train")


def test_images_and_labels_must_agree_in_count(tmp_path: Path) -> None:
    fakedata.make_mnist_like(tmp_path, n_train=50, n_test=10)
    fakedata.write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="holds 10 images but t10k-labels-idx1-ubyte holds 9"):
        prepare_split(get_dataset_info("mnist"), tmp_path, "test")


def test_num_samples_is_a_fixed_subset_reshuffled_each_epoch(mnist_small: Path) -> None:
    data = create_dataset("mnist", "train", 50, data_dir=str(mnist_small), num_samples=100,
                          augment=False)
    epochs = [np.sort(_batches(data)[1]) for _ in range(2)]
    full = create_dataset("mnist", "test", 100, data_dir=str(mnist_small), train=False)
    first = create_dataset("mnist", "train", 100, data_dir=str(mnist_small), train=False,
                           num_samples=100)
    np.testing.assert_array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(epochs[0], np.sort(_batches(first)[1]))
    assert data.get_dataset_size() == 2
    assert _batches(full)[0].shape[0] == 1000


def test_mnist_pipeline_is_normalised(mnist_small: Path) -> None:
    # More workers than CPUs (a config written for a bigger machine): MindSpore would refuse.
    workers = (os.cpu_count() or 1) + 6
    images, _ = _batches(create_dataset("mnist", "test", 500, data_dir=str(mnist_small),
                                        num_parallel_workers=workers))
    assert images.shape == (1000, 1, 28, 28)
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1.0) < 0.05


def _shifted_copies(images: np.ndarray, padding: int) -> dict[bytes, tuple[int, int]]:
    """Every crop of each zero-padded image, keyed by its bytes, valued by its (dy, dx) shift."""
    fill = images.min()  # MNIST's black background: pixel 0 after normalisation
    size = images.shape[-1]
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                    constant_values=fill)
    return {padded[i, :, y:y + size, x:x + size].tobytes(): (y - padding, x - padding)
            for i in range(len(images))
            for y in range(2 * padding + 1) for x in range(2 * padding + 1)}


def test_training_pipeline_augments_and_drops_the_last_partial_batch(mnist_small: Path) -> None:
    plain = create_dataset("mnist", "train", 64, data_dir=str(mnist_small), num_samples=100,
                           train=False)
    augmented = create_dataset("mnist", "train", 64, data_dir=str(mnist_small), num_samples=100)
    assert plain.get_dataset_size() == 2 and augmented.get_dataset_size() == 1
    shifts = _shifted_copies(_batches(plain)[0], get_dataset_info("mnist").crop_padding)
    crops = np.concatenate([_batches(augmented)[0] for _ in range(3)])
    # Every training image is one of the 25 crops of a 2-px padded image; random crops leave
    # about 1 in 25 where it was, never most of them.
    found = [shifts.get(crop.tobytes()) for crop in crops]
    assert None not in found
    assert sum(shift == (0, 0) for shift in found) < len(found) // 4
    assert len(set(found)) > 10


def test_crop_padding_bounds_the_random_shift(mnist_small: Path) -> None:
    plain = create_dataset("mnist", "train", 100, data_dir=str(mnist_small), num_samples=100,
                           train=False)
    shifted = create_dataset("mnist", "train", 100, data_dir=str(mnist_small), num_samples=100,
                             crop_padding=1)
    shifts = _shifted_copies(_batches(plain)[0], 2)  # the dataset's own padding is 2 px
    found = [shifts.get(crop.tobytes()) for crop in _batches(shifted)[0]]
    assert None not in found
    assert max(max(abs(dy), abs(dx)) for dy, dx in found) == 1  # never 2 px, as without it


def test_random_erasing_adds_noise_to_training_images_only(mnist_small: Path) -> None:
    def has_noise(images: np.ndarray) -> np.ndarray:
        # Normalised 8-bit pixels take 256 values; standard-normal noise takes almost none.
        info = get_dataset_info("mnist")
        levels = ((np.arange(256) / 255.0 - info.mean[0]) / info.std[0]).astype(np.float32)
        on_level = np.isclose(images[..., None], levels, atol=1e-5).any(axis=-1)
        return (~on_level).reshape(len(images), -1).any(axis=1)

    def images(**kwargs) -> np.ndarray:
        return _batches(create_dataset("mnist", "train", 50, data_dir=str(mnist_small),
                                       num_samples=100, **kwargs))[0]

    assert has_noise(images(random_erasing=1.0)).mean() > 0.9
    assert 0.2 < has_noise(images(random_erasing=0.5)).mean() < 0.8
    assert not has_noise(images(random_erasing=0.0)).any()
    assert not has_noise(images(random_erasing=1.0, augment=False)).any()
    assert not has_noise(images(random_erasing=1.0, train=False)).any()
    assert not np.array_equal(images(random_erasing=0.5), images(random_erasing=0.5))
    # Python-side RandomErasing draws from Python's RNG, which the dataset seed sets.
    repeats = []
    for _ in range(2):
        ds.config.set_seed(7)
        repeats.append(images(random_erasing=0.5))
    assert np.array_equal(*repeats)


def test_cifar10_binary_pipeline(fake_data: dict[str, Path]) -> None:
    images, labels = _batches(create_dataset("cifar10", "test", 500,
                                             data_dir=str(fake_data["cifar10"])))
    assert images.shape == (10000, 3, 32, 32) and labels.dtype == np.int32
    assert set(np.unique(labels)) == set(range(10))


def test_cifar10_from_the_downloaded_tarball(tmp_path: Path, fake_data: dict[str, Path]) -> None:
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz", compresslevel=1) as tar:
        tar.add(fake_data["cifar10"] / "cifar-10-batches-bin" / "test_batch.bin",
                arcname="cifar-10-batches-bin/test_batch.bin")
    data = create_dataset("cifar10", "test", 1000, data_dir=str(tmp_path))
    assert data.get_dataset_size() == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-binary.tar.gz"]


def test_cifar10_pickle_version_is_explained(tmp_path: Path) -> None:
    fakedata.make_cifar10_python(tmp_path)
    with pytest.raises(DataError, match="holds the Python \\(pickle\\) version of CIFAR-10; "
                                        "MindSpore's Cifar10Dataset reads the binary version"):
        prepare_split(get_dataset_info("cifar10"), tmp_path, "train")


def test_cifar10_truncated_batch_is_refused(tmp_path: Path, fake_data: dict[str, Path]) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    source = fake_data["cifar10"] / "cifar-10-batches-bin" / "test_batch.bin"
    (folder / "test_batch.bin").write_bytes(source.read_bytes()[:-3073])
    with pytest.raises(DataError, match="test_batch.bin: truncated or corrupt CIFAR-10 batch: "
                                        "30726927 bytes, expected 30730000"):
        prepare_split(get_dataset_info("cifar10"), tmp_path, "test")


def test_svhn_pipeline_maps_label_10_to_digit_0(fake_data: dict[str, Path]) -> None:
    labels_written = fakedata.make_svhn_mat(fake_data["svhn"].parent / "svhn2", 20, 12, seed=3)
    data = create_dataset("svhn", "test", 4, data_dir=str(fake_data["svhn"].parent / "svhn2"))
    images, labels = _batches(data)
    assert images.shape == (12, 3, 32, 32)
    np.testing.assert_array_equal(labels, labels_written["test"])
    assert 0 in labels


def test_svhn_truncated_file_is_refused(tmp_path: Path, fake_data: dict[str, Path]) -> None:
    source = fake_data["svhn"] / "train_32x32.mat"
    (tmp_path / "train_32x32.mat").write_bytes(source.read_bytes()[:2000])
    with pytest.raises(DataError, match="train_32x32.mat: truncated or corrupt SVHN file"):
        prepare_split(get_dataset_info("svhn"), tmp_path, "train")


def test_stl10_pipeline(fake_data: dict[str, Path]) -> None:
    images, labels = _batches(create_dataset("stl10", "test", 16,
                                             data_dir=str(fake_data["stl10"])))
    assert images.shape == (40, 3, 96, 96)
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() <= 9


def test_stl10_truncated_file_is_refused(tmp_path: Path, fake_data: dict[str, Path]) -> None:
    shutil.copytree(fake_data["stl10"], tmp_path / "stl")
    images = tmp_path / "stl" / "stl10_binary" / "test_X.bin"
    images.write_bytes(images.read_bytes()[:-1])
    with pytest.raises(DataError, match="test_X.bin: truncated or corrupt STL-10 file"):
        prepare_split(get_dataset_info("stl10"), tmp_path / "stl", "test")


def test_archive_entries_may_not_escape_the_target(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"owned"
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(DataError, match=r"refusing archive entry '\.\./escaped\.txt'"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_download_checks_md5_and_deletes_a_wrong_file(tmp_path: Path) -> None:
    source = tmp_path / "upstream" / "t10k-labels-idx1-ubyte.gz"
    source.parent.mkdir()
    source.write_bytes(gzip.compress(b"labels"))
    good = RemoteFile(source.name, file_md5(source), (source.as_uri(),))
    assert download_file(good, tmp_path).read_bytes() == source.read_bytes()

    target = tmp_path / "bad"
    target.mkdir()
    bad = RemoteFile(source.name, "0" * 32, (source.as_uri(),))
    with pytest.raises(DataError, match=r"md5 .* != expected 0{32} \(file deleted\)"):
        download_file(bad, target)
    assert list(target.iterdir()) == []


def test_local_files_reports_presence(tmp_path: Path, mnist_small: Path) -> None:
    info = get_dataset_info("mnist")
    assert all(present for _, present in local_files(info, mnist_small))
    assert not any(present for _, present in local_files(info, tmp_path))
