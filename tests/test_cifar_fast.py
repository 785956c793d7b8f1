"""The fast CIFAR-10 recipe (configs/cifar10_fast.yaml): pool_resnet8 with a frozen patch-whitening
stem, trained on real CIFAR-10 JPEGs, resumed exactly, exported and reproduced by the MindIR."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from ms_resnet.config import build_config
from ms_resnet.dataspec import complete_folder_config
from ms_resnet.errors import ConfigError
from ms_resnet.models import create_model
from ms_resnet.whitening import patch_whitening, whiten, whitening_conv, whitening_sample
from tests.conftest import ROOT, run_command
from tests.test_cifar_folder import CIFAR_SMALL
from tests.test_resume import _stop_during_epoch_2

EPOCHS = 3
RUN = ("--config", "configs/cifar10_fast.yaml", "--data_dir", str(CIFAR_SMALL), "--epochs",
       str(EPOCHS), "--batch_size", "20", "--eval_batch_size", "40")


def _ckpt(path: Path) -> dict[str, np.ndarray]:
    return {name: value.asnumpy() for name, value in ms.load_checkpoint(str(path)).items()}


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The recipe for 3 epochs on 200 real CIFAR-10 JPEGs, tested on 80."""
    ckpt_dir = tmp_path_factory.mktemp("fast_run")
    result = run_command("train.py", *RUN, "--ckpt_dir", str(ckpt_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": ckpt_dir, "metrics": json.loads((ckpt_dir / "metrics.json").read_text())}


def test_whitening_decorrelates_the_patches() -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    images[:, 1] += 0.8 * images[:, 0] + 0.5  # correlated channels, one with an offset
    images[:, :, :, 1:] += 0.9 * images[:, :, :, :-1]  # and correlated neighbours
    conv = nn.Conv2d(3, 24, 2, pad_mode="valid", has_bias=True)
    whiten(conv, images)
    out = conv(ms.Tensor(images)).asnumpy().transpose(0, 2, 3, 1).reshape(-1, 24)
    # Centred, unit variance and uncorrelated (up to the small epsilon), then the same negated.
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(out[:, :12], rowvar=False), np.eye(12), atol=5e-3)
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-5)


def test_dirac_init_starts_every_3x3_conv_as_the_identity_on_its_first_channels() -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = create_model("pool_resnet8", dirac_init=True)
    convs = [cell for _, cell in net.layers.cells_and_names() if isinstance(cell, nn.Conv2d)]
    assert len(convs) == 6
    rng = np.random.default_rng(0)
    for conv in convs:
        x = rng.standard_normal((2, conv.in_channels, 5, 5)).astype(np.float32)
        out = conv(ms.Tensor(x)).asnumpy()
        shared = min(conv.in_channels, conv.out_channels)
        np.testing.assert_allclose(out[:, :shared], x[:, :shared], atol=1e-6)
        if conv.out_channels > shared:  # the other filters keep their random init
            assert np.abs(out[:, shared:]).mean() > 0.1
    plain = create_model("pool_resnet8")
    assert not np.allclose(plain.layers[1][0].branch[0].weight.asnumpy(),
                           net.layers[1][0].branch[0].weight.asnumpy())


@pytest.mark.parametrize("momentum", [0.9, 0.6])
def test_bn_momentum_sets_how_fast_the_running_mean_follows_the_batch(momentum: float) -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = create_model("pool_resnet8", bn_momentum=momentum)
    net.set_train(True)
    images = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)), ms.float32)
    net(images)
    down = net.layers[0][0].down
    normalised = down[1](down[0](net.stem(images))).asnumpy()  # what the first BN saw
    np.testing.assert_allclose(down[2].moving_mean.asnumpy(),
                               (1 - momentum) * normalised.mean(axis=(0, 2, 3)), rtol=1e-4,
                               atol=1e-6)


def test_freeze_bn_gamma_and_bn_beta_lr() -> None:
    from tests.test_train import _trained_steps

    start, (plain,) = _trained_steps(1)
    _, (fast,) = _trained_steps(1, bn_beta_lr=64.0, freeze_bn_gamma=True)
    gammas = [name for name in start if name.endswith(".gamma")]
    betas = [name for name in start if name.endswith(".beta")]
    assert gammas and betas and not any(name in fast for name in gammas)  # not trained
    for name in betas:  # the first step is linear in the learning rate
        np.testing.assert_allclose(fast[name] - start[name], 64 * (plain[name] - start[name]),
                                   rtol=1e-3, atol=1e-7)
    conv = next(name for name in start if name.endswith("weight") and start[name].ndim == 4)
    assert not np.allclose(fast[conv], start[conv])


def test_freeze_bn_gamma_refuses_zero_init_residual() -> None:
    with pytest.raises(ConfigError, match="command line: zero_init_residual: true sets gammas "
                                          "to 0 that freeze_bn_gamma: true would keep at 0"):
        build_config(ROOT / "configs" / "cifar10_fast.yaml",
                     {"freeze_bn_gamma": "true", "zero_init_residual": "true"})


def test_eval_translate_needs_eval_flip() -> None:
    with pytest.raises(ConfigError, match="command line: eval_translate: true averages "
                                          "flip-averaged views; expected eval_flip: true"):
        build_config(ROOT / "configs" / "cifar10_fast.yaml",
                     {"eval_translate": "true", "eval_flip": "false"})


def test_whiten_stem_needs_a_2x2_stem() -> None:
    with pytest.raises(ConfigError, match="whiten_stem: model resnet20 does not start with a 2x2"):
        whitening_conv(create_model("resnet20"), "resnet20")
    result = run_command("train.py", *RUN, "--model", "resnet20", "--ckpt_dir", "unused")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: whiten_stem: model resnet20 does not start with a 2x2 convolution")


def test_the_stem_is_the_training_images_whitening_and_stays_frozen(fast_run: dict) -> None:
    config = build_config(ROOT / "configs" / "cifar10_fast.yaml", {"data_dir": str(CIFAR_SMALL)},
                          training=True)
    complete_folder_config(config)
    sample = whitening_sample(config)
    assert sample.shape == (200, 3, 32, 32)  # every training image (fewer than 5,000), as seen
    weight, bias = patch_whitening(sample)
    best = _ckpt(fast_run["dir"] / "best.ckpt")
    np.testing.assert_array_equal(best["stem.0.weight"], weight)  # not trained
    assert np.abs(best["stem.0.bias"] - bias).max() > 1e-3  # the bias is
    accuracies = [e["test_accuracy"] for e in fast_run["metrics"]["epochs"]]
    assert len(accuracies) == EPOCHS and max(accuracies) > 0.1


@pytest.mark.slow  # CI's second step: keeps the default run under 12 minutes
def test_resumed_run_equals_the_uninterrupted_one(fast_run: dict, tmp_path: Path) -> None:
    args = [sys.executable, str(ROOT / "train.py"), *RUN, "--ckpt_dir", str(tmp_path)]
    code, stderr = _stop_during_epoch_2(args, signal.SIGKILL)
    assert code == -signal.SIGKILL, stderr[-2000:]
    result = run_command("train.py", "--resume", str(tmp_path / "last.ckpt"))
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
    reference = fast_run["metrics"]["epochs"]
    # The same weights after every epoch: the same test loss and accuracy, to the bit.
    for key in ("test_loss", "test_accuracy"):
        assert [e[key] for e in resumed] == [e[key] for e in reference], key
    # The interrupted epoch's mean loss continues from a float32 sum saved in last.ckpt.
    assert [e["train_loss"] for e in resumed] == pytest.approx(
        [e["train_loss"] for e in reference], rel=1e-6)
    np.testing.assert_array_equal(_ckpt(tmp_path / "best.ckpt")["stem.0.weight"],
                                  _ckpt(fast_run["dir"] / "best.ckpt")["stem.0.weight"])


def test_the_mindir_reproduces_the_flip_averaged_accuracy(fast_run: dict, tmp_path: Path) -> None:
    result = run_command("eval.py", "--mindir", str(fast_run["dir"] / "best.mindir"),
                         "--data_dir", str(CIFAR_SMALL), "--json", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["num_samples"] == 80
    assert evaluated["accuracy"] == pytest.approx(fast_run["metrics"]["best_accuracy"], abs=1e-9)
