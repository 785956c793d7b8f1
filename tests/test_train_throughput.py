"""benchmarks/train_throughput.py: timing MindSpore alone, and a clear error without PyTorch."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_command

SCRIPT = "benchmarks/train_throughput.py"


def test_mindspore_alone_runs_without_pytorch(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    result = run_command(SCRIPT, "--quick", "--frameworks", "ms", "ms",  # a repeat is timed once
                         "--models", "fast_resnet8:1x28",
                         "--mnist_dir", str(ROOT / "tests/data/mnist_small"), "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| fast_resnet8"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[4]) > 0  # MindSpore images/s
    assert cells[5] == cells[6] == cells[9] == "n/a"  # PyTorch img/s, ratio, PyTorch RSS
    record = json.loads(out.read_text())
    assert record["train_rate"]["fast_resnet8:1x28"] == pytest.approx(float(cells[4]), abs=0.06)
    assert record["results"]["fast_resnet8:1x28"]["ratio_ms_torch"] is None
    assert len(record["results"]["fast_resnet8:1x28"]["runs"]["ms"]) == 1  # --quick: 1 rep


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
