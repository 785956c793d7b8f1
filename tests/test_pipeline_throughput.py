"""benchmarks/pipeline_throughput.py: where each dataset's real files are read from (--data_dir
is a root holding <dataset>/ folders, like $MS_RESNET_DATA; else $MS_RESNET_DATA; else ./data)."""

from pathlib import Path

import pytest

from tests.conftest import MNIST_SMALL, ROOT


@pytest.fixture()
def pipeline(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import pipeline_throughput

    return pipeline_throughput


def data_root(path: Path, *names: str) -> Path:
    """A data root whose <name>/ folders hold real MNIST files."""
    path.mkdir()
    for name in names:
        (path / name).symlink_to(MNIST_SMALL)
    return path


def test_real_files_come_from_data_dir_before_ms_resnet_data(pipeline, monkeypatch,
                                                             tmp_path: Path) -> None:
    env_root = data_root(tmp_path / "env", "mnist", "fashion_mnist")
    given = data_root(tmp_path / "given", "mnist")
    monkeypatch.setenv("MS_RESNET_DATA", str(env_root))
    # Without --data_dir: $MS_RESNET_DATA/<dataset>, Fashion-MNIST's own files.
    assert pipeline.data_dir_for("mnist", tmp_path, True, None) == (env_root / "mnist",
                                                                     "real files")
    assert pipeline.data_dir_for("fashion_mnist", tmp_path, True, None) == (
        env_root / "fashion_mnist", "real files")
    # --data_dir wins; it has no fashion_mnist/, so its MNIST files stand in.
    assert pipeline.data_dir_for("mnist", tmp_path, True, given) == (given / "mnist",
                                                                      "real files")
    assert pipeline.data_dir_for("fashion_mnist", tmp_path, True, given) == (
        given / "mnist", "real mnist files (stand-in)")


def test_dot_data_then_the_shipped_subset(pipeline, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MS_RESNET_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert pipeline.data_dir_for("mnist", tmp_path, True, None) == (
        MNIST_SMALL, "tests/data/mnist_small (2,000 real MNIST images)")
    data_root(tmp_path / "data", "mnist")
    assert pipeline.data_dir_for("fashion_mnist", tmp_path, True, None) == (
        Path("data") / "mnist", "real mnist files (stand-in)")
