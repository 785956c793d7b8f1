"""ema_decay: the exponential moving average of the weights is what gets evaluated, saved to
best.ckpt and resumed, and it leaves the training itself exactly as it is without EMA."""

from __future__ import annotations

import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from ms_resnet.ema import WeightAverage
from tests.conftest import run_command


def test_average_follows_the_warmed_up_decay() -> None:
    ms.set_context(mode=ms.GRAPH_MODE)
    net, average_net = nn.Dense(3, 2), nn.Dense(3, 2)
    start = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    averager = WeightAverage(net, average_net, decay=0.5)
    for entry in averager.network_entries():  # starts as a copy of the network
        np.testing.assert_array_equal(entry["data"].asnumpy(), start[entry["name"]])
    for param in net.get_parameters():
        param.set_data(ms.Tensor(np.full(param.shape, 2.0, np.float32)))
    for _ in range(3):
        averager.update()
    # d_n = min(0.5, (1 + n) / (10 + n)): 2/11, 3/12, 4/13 (below 0.5 for n < 8)
    remaining = (2 / 11) * (3 / 12) * (4 / 13)
    for entry in averager.network_entries():
        expected = 2.0 + (start[entry["name"]] - 2.0) * remaining
        np.testing.assert_allclose(entry["data"].asnumpy(), expected, rtol=1e-5)
    for _ in range(10):
        averager.update()
    remaining *= np.prod([(1 + n) / (10 + n) for n in range(4, 9)]) * 0.5 ** 5
    for entry in averager.network_entries():
        expected = 2.0 + (start[entry["name"]] - 2.0) * remaining
        np.testing.assert_allclose(entry["data"].asnumpy(), expected, rtol=1e-5)
    assert {e["name"] for e in averager.network_entries()} == set(start)
    state = {param.name: param.asnumpy() for param in averager.state_parameters()}
    assert set(state) == {f"ema.{name}" for name in start} | {"ema.updates"}
    assert state["ema.updates"] == 13


def _train(mnist_small: Path, ckpt_dir: Path, *extra: str) -> dict:
    # random_erasing draws from NumPy's global RNG, which building the averaged network uses too.
    result = run_command("train.py", "--data_dir", str(mnist_small), "--num_samples", "320",
                         "--eval_num_samples", "200", "--epochs", "2", "--batch_size", "32",
                         "--random_erasing", "0.5", "--ckpt_dir", str(ckpt_dir),
                         "--export_mindir", "false", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((ckpt_dir / "metrics.json").read_text())


def test_ema_is_evaluated_and_saved_without_changing_the_training(mnist_small: Path,
                                                                  tmp_path: Path) -> None:
    plain = _train(mnist_small, tmp_path / "plain")
    averaged = _train(mnist_small, tmp_path / "ema", "--ema_decay", "0.9")
    assert [e["train_loss"] for e in averaged["epochs"]] == [e["train_loss"]
                                                             for e in plain["epochs"]]
    assert [e["test_loss"] for e in averaged["epochs"]] != [e["test_loss"]
                                                            for e in plain["epochs"]]
    assert averaged["config"]["ema_decay"] == 0.9
    report = tmp_path / "eval.json"
    result = run_command("eval.py", "--ckpt", str(tmp_path / "ema" / "best.ckpt"),
                         "--num_samples", "200", "--json", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(report.read_text())
    assert evaluated["accuracy"] == averaged["best_accuracy"]
    best_epoch = averaged["epochs"][averaged["best_epoch"] - 1]
    assert evaluated["loss"] == pytest.approx(best_epoch["test_loss"], rel=1e-4)
    saved = ms.load_checkpoint(str(tmp_path / "ema" / "last.ckpt"))
    assert saved["ema.updates"].asnumpy() == 2 * (320 // 32)


def test_ema_decay_must_be_below_one(mnist_small: Path, tmp_path: Path) -> None:
    result = run_command("train.py", "--data_dir", str(mnist_small), "--ema_decay", "1",
                         "--ckpt_dir", str(tmp_path))
    assert result.returncode != 0
    assert "ema_decay" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
