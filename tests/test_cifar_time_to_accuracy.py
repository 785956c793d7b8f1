"""benchmarks/cifar_time_to_accuracy.py: the PyTorch twin of the fast recipe and the tutorial's
recipe train on a CIFAR-10 folder, and the report compares them with the ms_resnet runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_command
from tests.test_cifar_folder import CIFAR_SMALL
from tests.test_time_to_accuracy import write_metrics

SCRIPT = "benchmarks/cifar_time_to_accuracy.py"
sys.path.insert(0, str(ROOT / "benchmarks"))


def _rows(stdout: str) -> dict[str, str]:
    return {line.split(" | ")[0]: line for line in stdout.splitlines() if line.startswith("| ")}


def test_crop_flip_takes_a_window_of_the_zero_padded_image() -> None:
    torch = pytest.importorskip("torch")
    from cifar_time_to_accuracy import _crop_flip

    batch = torch.randint(1, 256, (64, 3, 6, 6), dtype=torch.uint8)
    out = _crop_flip(batch, torch.Generator().manual_seed(0), padding=2)
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2))
    windows = set()
    for image, original in zip(out, padded):
        found = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                 if torch.equal(image, torch.flip(original[:, dy:dy + 6, dx:dx + 6], (2,))
                                if flip else original[:, dy:dy + 6, dx:dx + 6])]
        assert found, "not a (flipped) window of the padded image"
        windows.add(found[0])
    assert len(windows) > 20 and {w[2] for w in windows} == {False, True}  # random, both ways


@pytest.mark.slow  # CI's second step: keeps the default run under 12 minutes
def test_pytorch_runs_train_on_the_folder(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = run_command(SCRIPT, "--runs", "fast_torch", "tutorial_torch", "--epochs", "1",
                         "--batch_size", "50", "--data_dir", str(CIFAR_SMALL), "--out",
                         str(tmp_path), "--fast_ms", str(tmp_path / "none"), "--resnet20",
                         str(tmp_path / "none"), "--plot", str(tmp_path / "plot.png"))
    assert result.returncode == 0, result.stderr[-3000:]
    for run, planned in (("fast_torch", 16), ("tutorial_torch", 10)):
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        assert metrics["config"]["epochs"] == planned and len(metrics["epochs"]) == 1
        epoch = metrics["epochs"][0]
        assert 0 <= epoch["test_accuracy"] <= 1 and epoch["seconds"] > 0
        assert metrics["framework"].startswith("pytorch")
    fast = json.loads((tmp_path / "fast_torch" / "metrics.json").read_text())
    assert fast["config"]["whiten_stem"] and fast["config"]["model"] == "pool_resnet8"
    rows = _rows(result.stdout)
    assert "1 of 16 (extrapolated)" in rows["| the same recipe, PyTorch twin"]
    assert "1 of 10 (extrapolated)" in rows["| tutorial recipe (colour), PyTorch"]


def test_report_says_how_much_sooner_the_recipe_reaches_the_tutorials_accuracy(
        tmp_path: Path) -> None:
    # The tutorial: 10 epochs of 600 s, ending at 78%; the recipe passes 78% after 4 x 300 s.
    write_metrics(tmp_path, "tutorial_torch", [600.0] * 10, [0.6 + 0.02 * i for i in range(10)])
    write_metrics(tmp_path, "fast_ms", [300.0] * 16, [0.5, 0.7, 0.75, 0.8] + [0.9] * 12)
    result = run_command(SCRIPT, "--report", "--out", str(tmp_path), "--fast_ms",
                         str(tmp_path / "fast_ms"), "--resnet20", str(tmp_path / "none"),
                         "--plot", str(tmp_path / "plot.png"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "takes 6000 s to its final 78.00%; the fast recipe reaches it after 1200 s: " \
           "5.0x sooner" in result.stdout
    fast = _rows(result.stdout)["| ms_resnet fast recipe (configs/cifar10_fast.yaml)"]
    assert "| 1200 s (20.0 min) | 1500 s (25.0 min) | 1500 s (25.0 min) | not reached |" in fast
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_the_pytorch_twin_takes_the_recipes_model_keys() -> None:
    torch = pytest.importorskip("torch")
    from torch_models import create_torch_model

    from ms_resnet.config import build_config
    from ms_resnet.models import create_model
    from ms_resnet.network import model_kwargs

    config = build_config(ROOT / "configs" / "cifar10_fast.yaml", {
        "dirac_init": "true", "bn_momentum": "0.6", "freeze_bn_gamma": "true"})
    kwargs = model_kwargs(config)
    twin, net = create_torch_model("pool_resnet8", **kwargs), create_model("pool_resnet8", **kwargs)
    assert sum(p.numel() for p in twin.parameters() if p.requires_grad) == \
        sum(p.size for p in net.trainable_params())
    norms = [m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == pytest.approx(0.4) for m in norms)
    twin_conv = twin.layers[1][0].branch[0].weight.detach().numpy()
    assert (twin_conv == net.layers[1][0].branch[0].weight.asnumpy()).all()  # both identities
