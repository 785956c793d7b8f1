"""End-to-end training through the user-facing scripts, on real MNIST and format-exact fakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ms_resnet.optim import lr_per_step
from tests.conftest import ROOT, run_command


def test_training_beats_chance_by_far(mnist_run: dict) -> None:
    metrics = mnist_run["metrics"]
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["best_accuracy"] >= 0.80
    assert metrics["best_accuracy"] == max(e["test_accuracy"] for e in metrics["epochs"])
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    for epoch in metrics["epochs"]:
        assert epoch["seconds"] > 0 and epoch["images_per_second"] > 0
        assert np.isfinite(epoch["test_loss"])
    # Training accuracy over the batches as seen: above chance, and rising as the loss falls.
    train_accuracy = [e["train_accuracy"] for e in metrics["epochs"]]
    assert 0.3 < train_accuracy[0] < train_accuracy[1] <= 1.0


def test_progress_bar_and_epoch_lines_are_printed(mnist_run: dict) -> None:
    stdout, stderr = mnist_run["stdout"], mnist_run["stderr"]
    assert "epoch 1/2:" in stderr and "62/62" in stderr and "img/s" in stderr  # tqdm bar
    lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    for line in lines:
        assert "train loss" in line and "test loss" in line and "test accuracy" in line
    epoch = mnist_run["metrics"]["epochs"][-1]
    assert f"train loss {epoch['train_loss']:.4f}, accuracy {epoch['train_accuracy']:.2%} |" \
        in lines[-1]
    assert "best test accuracy" in stdout


def test_best_checkpoint_reproduces_the_best_accuracy(mnist_run: dict, tmp_path: Path) -> None:
    ckpt_dir = mnist_run["dir"]
    assert (ckpt_dir / "config.yaml").is_file()
    assert not list(ckpt_dir.glob(".*tmp*")), "temporary files were left behind"
    report = tmp_path / "eval.json"
    result = run_command("eval.py", "--ckpt", str(ckpt_dir / "best.ckpt"), "--json", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(report.read_text())
    assert evaluated["num_samples"] == 1000
    assert evaluated["accuracy"] == mnist_run["metrics"]["best_accuracy"]
    assert evaluated["loss"] == pytest.approx(
        next(e["test_loss"] for e in mnist_run["metrics"]["epochs"]
             if e["epoch"] == mnist_run["metrics"]["best_epoch"]), rel=1e-4)
    assert set(evaluated["per_class_accuracy"]) == {str(d) for d in range(10)}


def test_same_seed_gives_the_same_metrics(mnist_small: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        result = run_command("train.py", "--data_dir", str(mnist_small), "--num_samples", "256",
                             "--eval_num_samples", "200", "--epochs", "1", "--batch_size", "32",
                             "--random_erasing", "0.5", "--ckpt_dir", str(tmp_path / name),
                             "--export_mindir", "false")
        assert result.returncode == 0, result.stderr[-3000:]
        epochs = json.loads((tmp_path / name / "metrics.json").read_text())["epochs"]
        runs.append([(e["train_loss"], e["test_loss"], e["test_accuracy"]) for e in epochs])
    assert runs[0] == runs[1]


CONFIG_DATA = {"mnist": "mnist_small", "mnist_tutorial": "mnist_small",
               "fashion_mnist": "kmnist", "kmnist": "kmnist", "cifar10": "cifar10",
               "cifar10_resnet50": "cifar10", "svhn": "svhn", "stl10": "stl10"}
# Exported (MindIR + explain graph, with their checks) where the network differs from every
# other test's: the tutorial's, a flip-averaged one, the 96-px stem with its max-pool. The
# rest skip the export, which the other tests cover, to keep the suite's time.
EXPORTED = {"mnist_tutorial", "fashion_mnist", "stl10"}


@pytest.mark.parametrize("config", sorted(CONFIG_DATA))
def test_every_config_trains_one_epoch(config: str, fake_data: dict[str, Path],
                                       mnist_small: Path, tmp_path: Path) -> None:
    """`bash scripts/run_train.sh configs/<name>.yaml --epochs 1 --num_samples N` runs."""
    source = CONFIG_DATA[config]
    data_dir = mnist_small if source == "mnist_small" else fake_data[source]
    result = run_command("scripts/run_train.sh", f"configs/{config}.yaml", "--epochs", "1",
                         "--num_samples", "64", "--batch_size", "32", "--eval_num_samples", "32",
                         "--data_dir", str(data_dir), "--ckpt_dir", str(tmp_path),
                         "--export_mindir", str(config in EXPORTED).lower())
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == config.split("_resnet")[0].replace("_tutorial", "")
    assert len(metrics["epochs"]) == 1 and (tmp_path / "best.ckpt").is_file()
    assert (tmp_path / "best_explain.mindir").is_file() == (config in EXPORTED)


def _trained_steps(steps: int, **fine_tuning) -> tuple[dict, list[dict]]:
    """fast_resnet8's trainable weights at the start, and after each of `steps` SGD steps on one
    fixed batch (constant lr, 2 steps per epoch)."""
    import mindspore as ms
    from mindspore import nn

    from ms_resnet.config import build_config
    from ms_resnet.network import build_network
    from ms_resnet.optim import create_optimizer

    config = build_config(ROOT / "configs" / "mnist.yaml", {
        "model": "fast_resnet8", "lr_schedule": "constant", "lr": 0.05,
        "pretrained": "a.ckpt" if fine_tuning.get("freeze_epochs") else None, **fine_tuning})
    ms.set_seed(0)
    net = build_network(config)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()),
                               create_optimizer(net, config, steps_per_epoch=2))
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((8, 1, 28, 28)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, 10, 8).astype(np.int32))

    def weights() -> dict:
        return {p.name: p.asnumpy().copy() for p in net.trainable_params()}

    start, after = weights(), []
    for _ in range(steps):
        step(images, labels)
        after.append(weights())
    return start, after


def test_backbone_lr_and_freeze_epochs_move_only_the_backbone_slower() -> None:
    """Fine-tuning: backbone_lr scales the backbone's step (not the classifier's); freeze_epochs
    keeps the backbone still for its epochs, then trains it."""
    start, (same,) = _trained_steps(1)
    scaled_start, (scaled,) = _trained_steps(1, backbone_lr=0.25)
    frozen_start, frozen = _trained_steps(3, freeze_epochs=1)
    for name, value in start.items():  # the same initial weights
        assert (scaled_start[name] == value).all() and (frozen_start[name] == value).all(), name
    head = {"fc.weight", "fc.bias"}
    assert head < set(start)
    for name, value in start.items():
        full_step, scaled_step = same[name] - value, scaled[name] - value
        assert np.abs(full_step).max() > 0, name
        if name in head:
            np.testing.assert_allclose(scaled_step, full_step, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(frozen[0][name], same[name], rtol=1e-6)
        else:
            # The first SGD step is lr x gradient: a quarter here (to float32 rounding of w).
            np.testing.assert_allclose(scaled_step, 0.25 * full_step, rtol=1e-3, atol=1e-7)
            # Epoch 1 (steps 1-2) leaves the backbone as it was; step 3 (epoch 2) moves it.
            assert (frozen[1][name] == value).all(), name
            assert (frozen[2][name] != value).any(), name


@pytest.mark.parametrize("schedule", ["constant", "cosine", "multistep", "onecycle"])
def test_lr_schedules(schedule: str) -> None:
    lr = lr_per_step(schedule, 0.1, epochs=4, steps_per_epoch=10, warmup_epochs=1)
    assert lr.shape == (40,) and lr.dtype == np.float32
    assert lr.max() == pytest.approx(0.1)
    if schedule == "onecycle":
        assert lr[0] == pytest.approx(0.1 / 25) and lr.argmax() == 12
        assert lr[-1] < 1e-4
    else:
        assert lr[0] == pytest.approx(0.01)  # warm-up starts at lr / warmup steps
    if schedule == "multistep":
        assert lr[25] == pytest.approx(0.01) and lr[35] == pytest.approx(0.001)
    if schedule == "cosine":
        assert np.all(np.diff(lr[10:]) <= 0) and lr[-1] < 1e-3
