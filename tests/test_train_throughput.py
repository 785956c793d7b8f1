"""benchmarks/train_throughput.py: timing MindSpore alone, a clear error without PyTorch, and
the MNIST folder found as train.py finds it (--data_dir, $MS_RESNET_DATA/mnist, ./data/mnist)."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, need_torch, run_command

SCRIPT = "benchmarks/train_throughput.py"


def test_mindspore_alone_runs_without_pytorch(tmp_path: Path, mnist_small: Path) -> None:
    out = tmp_path / "train.json"
    empty = tmp_path / "empty"  # --data_dir wins over $MS_RESNET_DATA, which holds no mnist/
    empty.mkdir()
    result = run_command(SCRIPT, "--quick", "--frameworks", "ms", "ms",  # a repeat is timed once
                         "--models", "fast_resnet8:1x28", "--data_dir", str(mnist_small),
                         "--json", str(out), env={"MS_RESNET_DATA": str(empty)})
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| fast_resnet8"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[4]) > 0  # MindSpore images/s
    assert cells[5] == cells[6] == cells[9] == "n/a"  # PyTorch img/s, ratio, PyTorch RSS
    record = json.loads(out.read_text())
    assert record["train_rate"]["fast_resnet8:1x28"] == pytest.approx(float(cells[4]), abs=0.06)
    assert record["results"]["fast_resnet8:1x28"]["ratio_ms_torch"] is None
    assert len(record["results"]["fast_resnet8:1x28"]["runs"]["ms"]) == 1  # --quick: 1 rep
    assert record["settings"]["data_dir"] == str(mnist_small)  # the folder read


def test_asking_for_pytorch_without_it_is_one_error_line(monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import train_throughput

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" else find_spec(name, *args))
    with pytest.raises(SystemExit) as stop:
        train_throughput.main(["--quick"])
    assert "PyTorch is not installed" in str(stop.value)
    assert "\n" not in str(stop.value)
    assert "--frameworks ms" in str(stop.value)
    assert "training throughput" not in capsys.readouterr().out  # stopped before any work


def mnist_error(result) -> str:
    """The one error line of a run stopped for want of MNIST files."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "training throughput" not in result.stdout  # stopped before any work
    return lines[0]


def test_mnist_folder_is_data_dir_then_ms_resnet_data_then_dot_data(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    env = {"MS_RESNET_DATA": str(root)}
    line = mnist_error(run_command(SCRIPT, "--quick", "--frameworks", "ms", env=env))
    assert line.startswith(f"error: MNIST files not found in {root / 'mnist'}: "
                           "train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz);")
    line = mnist_error(run_command(SCRIPT, "--quick", "--frameworks", "ms",
                                   "--data_dir", str(elsewhere), env=env))
    assert f"not found in {elsewhere}: " in line
    # Neither: ./data/mnist of the directory it runs in (the session fixture unsets the variable).
    line = mnist_error(run_command(str(ROOT / SCRIPT), "--quick", "--frameworks", "ms",
                                   cwd=tmp_path))
    assert f"not found in {tmp_path / 'data' / 'mnist'}: " in line


def test_find_mnist_reads_ms_resnet_data_unless_given_a_folder(
        monkeypatch, tmp_path: Path, mnist_small: Path) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import specs

    (tmp_path / "mnist").symlink_to(mnist_small)
    monkeypatch.setenv("MS_RESNET_DATA", str(tmp_path))
    assert specs.find_mnist(None, ["train", "test"]) == tmp_path / "mnist"
    assert specs.find_mnist(mnist_small, ["train"]) == mnist_small
    monkeypatch.setenv("MS_RESNET_DATA", str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match="not found in .*empty/mnist"):
        specs.find_mnist(None, ["train"])


def test_both_sides_of_the_training_benchmark_run(tmp_path: Path, mnist_small: Path) -> None:
    """The PyTorch worker runs in a process without MindSpore; a light module that starts
    importing it makes this fail (as it did when ms_resnet.data loaded mindspore)."""
    need_torch()
    out = tmp_path / "train.json"
    result = run_command(SCRIPT, "--quick", "--models", "fast_resnet8:1x28",
                         "--data_dir", str(mnist_small), "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(out.read_text())["results"]["fast_resnet8:1x28"]
    assert record["ratio_ms_torch"] > 0
    assert len(record["runs"]["torch"]) == len(record["runs"]["ms"]) == 1


def test_both_sides_of_the_inference_benchmark_run() -> None:
    need_torch()
    result = run_command("benchmarks/infer_throughput.py", "--quick", "--models",
                         "fast_resnet8:1x28", "--no_jit")
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines()[::-1]
               if line.startswith("| fast_resnet8:1x28"))  # the batch-256 table comes last
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[1]) > 0 and float(cells[2]) > 0  # MindIR and PyTorch img/s
