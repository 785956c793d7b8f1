"""Shared fixtures: a private dataset cache, the shipped real MNIST subset, fake datasets in the
exact upstream formats, and a helper that runs the project's commands as a user would."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import fakedata

ROOT = Path(__file__).resolve().parents[1]
MNIST_SMALL = ROOT / "tests" / "data" / "mnist_small"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep prepared datasets out of the user's ~/.cache and data folders."""
    os.environ["MS_RESNET_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("MS_RESNET_DATA", None)


@pytest.fixture(scope="session", autouse=True)
def _cpu_isa(_private_cache: None) -> None:
    """The tests run MindSpore kernels in this process too: choose oneDNN's ISA before the
    first one, as every entry point does (the subprocesses inherit the choice)."""
    from ms_resnet.cpu_isa import choose_cpu_isa

    choose_cpu_isa()


@pytest.fixture(scope="session")
def mnist_small() -> Path:
    """Real MNIST: first 2,000 training and first 1,000 test images (IDX .gz)."""
    return MNIST_SMALL


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small learnable datasets in each upstream format, as a user would have them on disk."""
    root = tmp_path_factory.mktemp("fake_data")
    dirs = {name: root / name for name in ("kmnist", "cifar10", "svhn", "stl10")}
    fakedata.make_mnist_like(dirs["kmnist"], n_train=300, n_test=100, gz=True, seed=1)
    fakedata.make_cifar10_bin(dirs["cifar10"], seed=2)
    fakedata.make_svhn_mat(dirs["svhn"], n_train=300, n_test=100, seed=3)
    fakedata.make_stl10_bin(dirs["stl10"], n_train=100, n_test=40, seed=4)
    return dirs


def need_torch() -> None:
    """Skip a test that needs PyTorch when it is not installed, except under CI, which installs
    the bench extra (.ci/run) and must run it."""
    if importlib.util.find_spec("torch") is None:
        assert not os.environ.get("CI"), "CI installs the bench extra (torch): see .ci/run"
        pytest.skip("torch is not installed (pip install -e '.[bench]')")


def run_command(*args: str, cwd: Path = ROOT, env: dict | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command of the project (python script or bash script) the way a user would."""
    command = list(args)
    if command[0].endswith(".py") or command[0] == "-m":
        command.insert(0, sys.executable)
    elif command[0].endswith(".sh"):
        command.insert(0, "bash")
    return subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})},
                          stdin=subprocess.DEVNULL)


# A recipe that converges steadily within 124 steps, so runs that differ only in data order or
# process count land within a point or two of each other. It pins resnet20, on which that
# stability was measured (the default config's fast_resnet8 is covered by test_train.py).
QUICK_MNIST = ("--model", "resnet20", "--epochs", "2", "--optimizer", "adam", "--lr", "0.003",
               "--weight_decay", "0", "--label_smoothing", "0", "--augment", "false")


@pytest.fixture(scope="session")
def mnist_run(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """ResNet-20 trained by `scripts/run_train.sh` for 2 epochs on 2,000 real MNIST images and
    tested on 1,000; its folder holds best.ckpt, best.mindir, metrics.json and config.yaml."""
    ckpt_dir = tmp_path_factory.mktemp("mnist_run")
    result = run_command("scripts/run_train.sh", "configs/mnist.yaml", "--data_dir",
                         str(mnist_small), "--ckpt_dir", str(ckpt_dir), "--batch_size", "32",
                         *QUICK_MNIST)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": ckpt_dir, "stdout": result.stdout, "stderr": result.stderr,
            "metrics": json.loads((ckpt_dir / "metrics.json").read_text())}


DIGIT_FOLDERS = ("one", "seven", "zero")  # sorted: the class order of the folder dataset


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real MNIST digits 0, 1 and 7 of mnist_small as PNG/JPEG/BMP files of mixed sizes (28-64
    px) and modes (grey, tinted RGB): DIR/train/{zero,one,seven}/ (60 each) and test/ (20 each),
    written by scripts/make_image_folder.py."""
    folder = tmp_path_factory.mktemp("digits") / "digits"
    result = run_command("scripts/make_image_folder.py", str(folder), "--source",
                         str(MNIST_SMALL), "--classes", "0,1,7", "--names", "zero,one,seven",
                         "--train_per_class", "60", "--test_per_class", "20",
                         "--train_offset", "0", "--test_offset", "0")
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="session")
def folder_run(digit_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """fast_resnet8 trained by train.py on digit_folder (`--dataset folder`, grey 28x28) for 6
    short epochs; its folder holds best.ckpt, best.mindir + best.json, metrics.json and
    config.yaml."""
    ckpt_dir = tmp_path_factory.mktemp("folder_run")
    result = run_command("train.py", "--config", "configs/own_images.yaml", "--data_dir",
                         str(digit_folder), "--ckpt_dir", str(ckpt_dir), "--augmentation",
                         "crop", "--batch_size", "20", "--epochs", "6", "--optimizer", "adam",
                         "--lr", "0.003", "--weight_decay", "0", "--num_parallel_workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": ckpt_dir, "stdout": result.stdout, "stderr": result.stderr,
            "data": digit_folder,
            "metrics": json.loads((ckpt_dir / "metrics.json").read_text())}
