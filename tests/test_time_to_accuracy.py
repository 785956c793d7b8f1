"""benchmarks/time_to_accuracy.py --report: thresholds, extrapolation and the 10x verdict,
from metrics.json files written here (no training)."""

import json
from pathlib import Path

import yaml

from tests.conftest import ROOT, run_command

SCRIPT = "benchmarks/time_to_accuracy.py"


def write_metrics(out: Path, run: str, seconds: list[float], accuracies: list[float]) -> None:
    epochs = [{"epoch": i + 1, "train_loss": 0.5, "test_loss": 0.1, "test_accuracy": acc,
               "seconds": sec, "eval_seconds": 10.0, "images_per_second": 60000 / sec}
              for i, (sec, acc) in enumerate(zip(seconds, accuracies))]
    (out / run).mkdir(parents=True)
    (out / run / "metrics.json").write_text(json.dumps({
        "config": {"epochs": len(epochs)}, "best_accuracy": max(accuracies), "epochs": epochs}))


def default_epochs() -> int:
    return yaml.safe_load((ROOT / "configs" / "mnist.yaml").read_text())["epochs"]


def report(out: Path):
    return run_command(SCRIPT, "--report", "--out", str(out), "--plot", str(out / "plot.png"))


def test_report_extrapolates_a_short_run_and_checks_the_speed_up(tmp_path: Path) -> None:
    # The tutorial stopped after 2 of its 4 epochs: the rest is costed at 800 s each.
    write_metrics(tmp_path, "tutorial_torch", [800.0, 800.0], [0.985, 0.989])
    n = default_epochs()
    write_metrics(tmp_path, "default", [80.0] * n, [0.98] * (n - 1) + [0.996])
    result = report(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split(" | ")[0]: line for line in result.stdout.splitlines()
            if line.startswith("| ")}
    tutorial = rows["| tutorial recipe, PyTorch"]
    assert "2 of 4 (extrapolated)" in tutorial and "~3200 s" in tutorial
    assert "| 800 s (13.3 min) | not reached |" in tutorial
    assert "unknown (98.90% after epoch 2, best 98.90%)" in tutorial
    to_target = 80.0 * n
    assert f"| {to_target:.0f} s" in rows["| ms_resnet default (configs/mnist.yaml)"]
    assert f"= ~{3200 / to_target:.1f}x (target >= 10x)" in result.stdout
    assert "vs tutorial best measured 98.90%: ok" in result.stdout
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_report_fails_when_the_default_misses_the_target(tmp_path: Path) -> None:
    write_metrics(tmp_path, "tutorial_torch", [800.0] * 4, [0.985, 0.989, 0.990, 0.991])
    write_metrics(tmp_path, "default", [80.0] * default_epochs(), [0.99] * default_epochs())
    result = report(tmp_path)
    assert result.returncode == 1
    assert "default config: never reached 99.5%" in result.stdout


def test_report_without_runs_is_one_error_line(tmp_path: Path) -> None:
    result = report(tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: no {tmp_path}/<run>/metrics.json found; run the benchmark first"]


def test_training_without_mnist_files_is_one_error_line_naming_the_folder(
        tmp_path: Path, mnist_small: Path) -> None:
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)  # $MS_RESNET_DATA/mnist: only the training files
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (root / "mnist" / name).symlink_to(mnist_small / name)
    env = {"MS_RESNET_DATA": str(root)}
    test_split = "t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)"
    everything = f"train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), {test_split}"
    for extra, folder, missing in (
            ((), root / "mnist", test_split),  # it needs the test split too
            (("--data_dir", str(tmp_path / "elsewhere")), tmp_path / "elsewhere", everything)):
        result = run_command(SCRIPT, "--runs", "default", "--epochs", "1",
                             "--out", str(tmp_path / "out"), *extra, env=env)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: MNIST files not found in {folder}: {missing}; ")
        assert "train.py" not in result.stdout  # stopped before any run
        assert not (tmp_path / "out").exists()
