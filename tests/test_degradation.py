"""benchmarks/degradation.py (plain vs residual networks, He et al. 2016 Fig. 1): end to end on a
tiny subset, and the committed runs show the degradation and are quoted in docs/degradation.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from matplotlib import image

from tests.conftest import ROOT, run_command

COMMITTED = ROOT / "results" / "degradation"
RUNS = ("plain20", "plain56", "resnet20", "resnet56")


def test_script_trains_resumes_and_draws_on_a_tiny_subset(mnist_small: Path,
                                                          tmp_path: Path) -> None:
    # The real MNIST files of tests/data stand in for Fashion-MNIST's (same IDX format).
    args = ("benchmarks/degradation.py", "--depths", "20", "--num_samples", "192",
            "--eval_num_samples", "100", "--epochs", "1", "--batch_size", "64",
            "--data_dir", str(mnist_small), "--out", str(tmp_path / "out"),
            "--work_dir", str(tmp_path / "work"), "--figure", str(tmp_path / "fig.png"))
    result = run_command(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    for run, shortcut in (("plain20", "none"), ("resnet20", "A")):
        out = tmp_path / "out" / run
        assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json",
                                                         "train.log"]  # no checkpoints
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["config"]["shortcut"] == shortcut
        assert metrics["config"]["model"] == "resnet20" and not metrics["config"]["augment"]
        (epoch,) = metrics["epochs"]
        assert 0.0 <= epoch["train_accuracy"] <= 1.0
        assert f"accuracy {epoch['train_accuracy']:.2%}" in (out / "train.log").read_text()
        assert f"| {run} | resnet20, " in result.stdout
    picture = image.imread(tmp_path / "fig.png")
    assert picture.ndim == 3 and picture.shape[1] > 2 * picture.shape[0] > 400
    assert np.ptp(picture[..., :3]) > 0.5  # drawn, not blank
    # The same command again continues the (finished) runs instead of starting over.
    again = run_command(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("training already finished") == 2
    resumed = json.loads((tmp_path / "out" / "plain20" / "metrics.json").read_text())
    assert [e["epoch"] for e in resumed["epochs"]] == [1]


def test_gradient_norms_at_initialisation(mnist_small: Path, tmp_path: Path) -> None:
    result = run_command("benchmarks/degradation.py", "--grad_norms", "20", "--batch_size", "16",
                         "--num_samples", "64", "--data_dir", str(mnist_small),
                         "--out", str(tmp_path), "--figure", str(tmp_path / "fig.png"))
    assert result.returncode == 0, result.stderr[-3000:]
    norms = json.loads((tmp_path / "grad_norms_20.json").read_text())
    # One norm per convolution: the stem and 2 per block (option A adds none).
    assert {run: len(values) for run, values in norms.items()} == {"plain20": 19, "resnet20": 19}
    assert all(np.isfinite(values).all() and min(values) > 0 for values in norms.values())
    assert image.imread(tmp_path / "fig_grad_norms.png").shape[0] > 200


PROBE_MODES = """
import argparse, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
import degradation
real, modes = degradation._gradients, []
def recording(loss, weights):
    modes.append(all(cell.training for _, cell in loss.cells_and_names()))
    return real(loss, weights)
degradation._gradients = recording
args = argparse.Namespace(lr=0.025, batch_size=8, epochs=1, num_samples=16, eval_num_samples=16,
                          seed=42, data_dir=Path(sys.argv[1]), work_dir=Path(sys.argv[2]))
print(sorted(degradation.gradient_norms(20, args)), modes)
"""


def test_gradient_norms_are_taken_in_training_mode(mnist_small: Path, tmp_path: Path) -> None:
    """The runs train with BN on batch statistics; the norms at initialisation must too (a Cell
    starts in inference mode, where BN uses its initial running statistics). In a subprocess:
    the probe sets MindSpore's context, which must not leak into the test session."""
    result = run_command(sys.executable, "-c", PROBE_MODES, str(mnist_small), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "['plain20', 'resnet20'] [True, True]"


def test_bad_depths_are_one_line(tmp_path: Path) -> None:
    result = run_command("benchmarks/degradation.py", "--depths", "18", "--report",
                         "--out", str(tmp_path))
    assert result.returncode == 2
    assert "--depths: expected comma-separated values of 20, 32, 44, 56, 110" in result.stderr


def test_committed_runs_show_the_degradation_and_are_quoted(tmp_path: Path) -> None:
    """plain56 ends with a higher training error than plain20 (the degradation), resnet56 with
    one no higher than resnet20's, and docs/degradation.md quotes the table and the verdict
    lines that --report prints."""
    errors = {}
    for run in RUNS:
        metrics = json.loads((COMMITTED / run / "metrics.json").read_text())
        assert all(0 <= epoch["train_accuracy"] <= 1 for epoch in metrics["epochs"])
        assert (COMMITTED / run / "train.log").is_file()
        errors[run] = 1 - metrics["epochs"][-1]["train_accuracy"]
    assert errors["plain56"] > errors["plain20"]
    assert errors["resnet56"] <= errors["resnet20"]
    result = run_command("benchmarks/degradation.py", "--report",
                         "--figure", str(tmp_path / "fig.png"))
    verdicts = [line for line in result.stdout.splitlines() if line[:4] in ("yes:", "NO :")]
    assert len(verdicts) == 2, result.stdout + result.stderr
    # The exit code is the verdict: 0 only if both lines say yes.
    assert result.returncode == (0 if all(v.startswith("yes") for v in verdicts) else 1)
    table = "\n".join(line for line in result.stdout.splitlines() if line.startswith("|"))
    assert table.count("\n") == 5  # header, rule and four runs
    document = (ROOT / "docs" / "degradation.md").read_text()
    assert table in document
    for verdict in verdicts:
        assert verdict in document
