"""The commands as users type them: listings, help, and one-line errors with a non-zero exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ms_resnet.data import DATASETS
from ms_resnet.models import list_models
from tests import fakedata
from tests.conftest import run_command


def _one_line_error(result, *parts: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for part in parts:
        assert part in lines[0]


def test_models_lists_every_registered_model() -> None:
    result = run_command("-m", "ms_resnet", "models")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == list_models()
    assert {"resnet18", "resnet50", "resnet20", "resnet110", "tutorial_resnet"} <= set(
        result.stdout.split())


def test_datasets_lists_files_and_local_presence(tmp_path: Path, mnist_small: Path) -> None:
    shutil.copytree(mnist_small, tmp_path / "mnist")
    result = run_command("-m", "ms_resnet", "datasets", env={"MS_RESNET_DATA": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    for name in DATASETS:
        assert f"\n{name} " in "\n" + result.stdout
    assert "[present] train-images-idx3-ubyte.gz" in result.stdout
    assert "[missing] cifar-10-binary.tar.gz" in result.stdout
    assert result.stdout.count("[present]") == 4


def test_train_help_lists_every_config_key() -> None:
    result = run_command("train.py", "--help")
    assert result.returncode == 0
    for key in ("--epochs", "--batch_size", "--lr_schedule", "--data_dir", "--num_samples"):
        assert key in result.stdout


def test_missing_data_dir(tmp_path: Path) -> None:
    result = run_command("scripts/run_train.sh", "--data_dir", str(tmp_path / "nowhere"),
                         "--ckpt_dir", str(tmp_path / "ckpt"))
    _one_line_error(result, "does not exist", "ms-resnet download mnist")


def test_missing_data_dir_from_environment(tmp_path: Path) -> None:
    result = run_command("train.py", "--ckpt_dir", str(tmp_path / "ckpt"),
                         env={"MS_RESNET_DATA": str(tmp_path)})
    _one_line_error(result, f"{tmp_path / 'mnist'} does not exist")


def test_truncated_idx_file(tmp_path: Path) -> None:
    fakedata.make_mnist_like(tmp_path / "data", n_train=50, n_test=20, gz=False)
    images = tmp_path / "data" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    result = run_command("train.py", "--data_dir", str(tmp_path / "data"),
                         "--ckpt_dir", str(tmp_path / "ckpt"))
    _one_line_error(result, str(images), "truncated or corrupt IDX file")


@pytest.mark.parametrize(("args", "parts"), [
    (("--epoch", "3"), ("unknown key 'epoch'", "did you mean 'epochs'")),
    (("--batch_size", "0"), ("batch_size: must be >= 1, got 0",)),
    (("--model", "resnet7"), ("'resnet7' is not one of:", "resnet20")),
    (("--eval_flip", "true"), ("command line: eval_flip: mnist images change meaning",
                               "expected false")),
    (("--augment", "false", "--random_erasing", "0.5"),
     ("command line: random_erasing: 0.5 needs augment: true", "expected 0.0")),
])
def test_bad_config_on_the_command_line(args: tuple, parts: tuple) -> None:
    _one_line_error(run_command("scripts/run_train.sh", *args), *parts)


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    config = tmp_path / "my.yaml"
    config.write_text("dataset: mnist\nlearning_rate: 0.1\n")
    _one_line_error(run_command("scripts/run_train.sh", str(config)),
                    str(config), "unknown key 'learning_rate'")


def test_eval_of_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("dataset: mnist\nmodel: resnet20\n")
    (tmp_path / "best.ckpt").write_bytes(b"\x00" * 100)
    _one_line_error(run_command("eval.py", "--ckpt", str(tmp_path / "best.ckpt")),
                    "best.ckpt: not a readable MindSpore checkpoint")


def test_unknown_command() -> None:
    result = run_command("-m", "ms_resnet", "fly")
    assert result.returncode == 2 and "unknown command 'fly'" in result.stderr


def test_xihe_training_job_argument_names(tmp_path: Path) -> None:
    """XiHe starts the boot file with --data_url and --output_path (also as --name=value)."""
    result = run_command("train.py", f"--data_url={tmp_path / 'obs_data'}",
                         "--output_path", str(tmp_path / "out"), "--epochs", "1")
    _one_line_error(result, f"data folder {tmp_path / 'obs_data'} does not exist")
    # The output folder was created to be checked for writing (test_resume.py::
    # test_unwritable_ckpt_dir), and removed again as the run stopped before writing anything.
    assert not (tmp_path / "out").exists()
