"""Crash safety: last.ckpt every epoch, --resume after SIGKILL or Ctrl-C, and nothing saved is
lost when training fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import pytest

from ms_resnet.callbacks import checkpoint_file
from ms_resnet.checkpoint import read_extras
from ms_resnet.errors import UserError
from ms_resnet.files import write_files, write_json
from ms_resnet.models import create_model
from tests.conftest import ROOT, run_command

EPOCHS = 3
# resnet20, not the default fast_resnet8: its slower steps leave time to interrupt mid-epoch.
# With a weight average, whose decay 0.99 is still in its warm-up here: an average restarted at
# the resume (update count 0) would be much closer to the current weights and evaluate
# differently, so every resume below also checks that the average continues.
RUN = ("--model", "resnet20", "--epochs", str(EPOCHS), "--batch_size", "32", "--num_samples", "640",
       "--eval_num_samples", "300", "--export_mindir", "false", "--ema_decay", "0.99")


def _train_args(mnist_small: Path, ckpt_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--data_dir", str(mnist_small),
            "--ckpt_dir", str(ckpt_dir), *RUN, *extra]


def _metrics(ckpt_dir: Path) -> dict:
    return json.loads((ckpt_dir / "metrics.json").read_text())


def _stop_during_epoch_2(args: list[str], sig: int, env: dict | None = None
                         ) -> tuple[int, str]:
    """Start training, send `sig` a few steps into epoch 2, return (exit code, stderr)."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env={**os.environ, **(env or {})})
    for line in process.stdout:
        if line.startswith(f"epoch 1/{EPOCHS}:"):
            break
    time.sleep(1.5)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    ckpt_dir = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess.run(_train_args(mnist_small, ckpt_dir), capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return _metrics(ckpt_dir)


def _check_resumed(ckpt_dir: Path, uninterrupted: dict) -> None:
    result = run_command("scripts/run_train.sh", "--ckpt_dir", str(ckpt_dir), "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 2/3", "epoch 3/3"]
    metrics = _metrics(ckpt_dir)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    # Same seed, restored optimizer and data position: the run continues where it stopped.
    final, reference = metrics["epochs"][-1], uninterrupted["epochs"][-1]
    assert abs(final["test_accuracy"] - reference["test_accuracy"]) <= 0.005
    # last.ckpt carries the interrupted epoch's loss sum, so its mean covers all its steps.
    assert [e["train_loss"] for e in metrics["epochs"]] == pytest.approx(
        [e["train_loss"] for e in uninterrupted["epochs"]], rel=1e-4)
    # ... and its training-accuracy counts (Parameters of the training network).
    assert [e["train_accuracy"] for e in metrics["epochs"]] == pytest.approx(
        [e["train_accuracy"] for e in uninterrupted["epochs"]], abs=0.01)
    # ... and the weight average (evaluated and saved as best.ckpt) goes on where it was.
    assert [e["test_loss"] for e in metrics["epochs"]] == pytest.approx(
        [e["test_loss"] for e in uninterrupted["epochs"]], rel=1e-4)
    assert metrics["best_accuracy"] == max(e["test_accuracy"] for e in metrics["epochs"])
    best = read_extras(ckpt_dir / "best.ckpt")
    assert best["accuracy"] == pytest.approx(metrics["best_accuracy"])
    net = create_model("resnet20", 10, 1, 28)
    assert ms.load_param_into_net(net, ms.load_checkpoint(str(ckpt_dir / "best.ckpt")))[0] == []


def test_sigkill_in_epoch_2_then_resume(mnist_small: Path, tmp_path: Path,
                                        uninterrupted: dict) -> None:
    code, _ = _stop_during_epoch_2(_train_args(mnist_small, tmp_path), signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert read_extras(tmp_path / "last.ckpt") == pytest.approx(
        {"epoch": 1, "step": 0, "loss_sum": 0.0,
         "best_accuracy": _metrics(tmp_path)["best_accuracy"], "best_epoch": 1, "workers": 1})
    _check_resumed(tmp_path, uninterrupted)


def test_sigkill_while_writing_last_ckpt_then_resume(mnist_small: Path, tmp_path: Path,
                                                     uninterrupted: dict) -> None:
    # Kill the process inside the second write of last.ckpt: after the temporary file is
    # written, before it replaces the previous last.ckpt.
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import os, runpy, signal, sys\n"
        "real_replace, calls = os.replace, []\n"
        "def replace(src, dst):\n"
        "    if str(dst).endswith('last.ckpt'):\n"
        "        calls.append(dst)\n"
        "        if len(calls) == 2:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real_replace(src, dst)\n"
        "os.replace = replace\n"
        f"sys.argv = {[str(ROOT / 'train.py')]!r} + sys.argv[1:]\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    ckpt_dir = tmp_path / "run"
    args = _train_args(mnist_small, ckpt_dir)
    args[1] = str(launcher)
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert list(ckpt_dir.glob(".staging-*/last.ckpt")), "the kill did not happen during the write"
    assert read_extras(ckpt_dir / "last.ckpt")["epoch"] == 1
    _check_resumed(ckpt_dir, uninterrupted)
    assert not list(ckpt_dir.glob(".staging-*")), "the killed run's staged files were left"


def test_ctrl_c_saves_last_ckpt_and_says_how_to_resume(mnist_small: Path, tmp_path: Path,
                                                      uninterrupted: dict) -> None:
    code, stderr = _stop_during_epoch_2(_train_args(mnist_small, tmp_path), signal.SIGINT)
    assert code == 130, stderr[-2000:]
    message = stderr.strip().splitlines()[-1]
    assert "stopped at epoch 2, step" in message
    assert f"Resume with: python train.py --resume {tmp_path / 'last.ckpt'}" in message
    state = read_extras(tmp_path / "last.ckpt")
    assert state["epoch"] == 1 and 0 < state["step"] < 20
    assert state["loss_sum"] > 0
    counts = ms.load_checkpoint(str(tmp_path / "last.ckpt"),
                                choice_func=lambda name: name.startswith("train_accuracy."))
    # The interrupted epoch's counts so far: `step` batches of 32 images.
    assert int(counts["train_accuracy.seen"].asnumpy()) == 32 * state["step"]
    assert 0 < int(counts["train_accuracy.correct"].asnumpy()) <= 32 * state["step"]
    updates = ms.load_checkpoint(str(tmp_path / "last.ckpt"),
                                 choice_func=lambda name: name == "ema.updates")["ema.updates"]
    assert updates.asnumpy() == 20 + state["step"]  # epoch 1's 20 steps, then epoch 2's so far
    _check_resumed(tmp_path, uninterrupted)


def test_resume_of_a_finished_run_does_nothing(mnist_small: Path, tmp_path: Path) -> None:
    args = ("--data_dir", str(mnist_small), "--ckpt_dir", str(tmp_path), "--epochs", "1",
            "--batch_size", "32", "--num_samples", "64", "--eval_num_samples", "64",
            "--export_mindir", "false")
    assert run_command("train.py", *args).returncode == 0
    before = (tmp_path / "best.ckpt").read_bytes()
    result = run_command("train.py", "--ckpt_dir", str(tmp_path), "--resume")
    assert result.returncode == 0 and "training already finished" in result.stdout
    assert (tmp_path / "best.ckpt").read_bytes() == before


def test_resume_refuses_to_change_the_recipe(mnist_small: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("dataset: mnist\nlr: 0.1\n")
    (tmp_path / "last.ckpt").write_bytes(b"")
    result = run_command("train.py", "--ckpt_dir", str(tmp_path), "--resume", "--lr", "0.5")
    assert result.returncode == 2
    assert "lr cannot change when resuming (the run used 0.1)" in result.stderr


def test_resume_without_a_last_ckpt(tmp_path: Path) -> None:
    result = run_command("train.py", "--ckpt_dir", str(tmp_path), "--resume")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: cannot resume: {tmp_path / 'last.ckpt'} not found "
                                     "(was the run started with this --ckpt_dir?)")


def test_a_new_run_does_not_clobber_an_earlier_one(tmp_path: Path, mnist_small: Path) -> None:
    (tmp_path / "best.ckpt").write_bytes(b"earlier")
    result = run_command("train.py", "--data_dir", str(mnist_small), "--ckpt_dir", str(tmp_path))
    assert result.returncode == 2 and "already holds a training run (best.ckpt)" in result.stderr
    assert (tmp_path / "best.ckpt").read_bytes() == b"earlier"


def test_nan_loss_stops_at_once_and_keeps_the_earlier_checkpoints(mnist_small: Path,
                                                                  tmp_path: Path) -> None:
    common = ("--data_dir", str(mnist_small), "--ckpt_dir", str(tmp_path), "--batch_size", "32",
              "--num_samples", "128", "--eval_num_samples", "64", "--export_mindir", "false")
    assert run_command("train.py", *common, "--epochs", "1").returncode == 0
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = run_command("train.py", *common, "--epochs", "2", "--lr", "1e30",
                         "--lr_schedule", "constant", "--overwrite")
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: training loss became ") and "at epoch 1, step " in message
    assert "checkpoints already saved are untouched" in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == saved


def test_unwritable_ckpt_dir(tmp_path: Path, mnist_small: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_command("train.py", "--data_dir", str(mnist_small),
                         "--ckpt_dir", str(blocker / "ckpt"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: ckpt_dir {blocker / 'ckpt'}: cannot write")


def test_disk_full_while_saving_keeps_the_previous_best(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    net = create_model("resnet20", 10, 1, 28)
    best = tmp_path / "best.ckpt"
    write_files([checkpoint_file(net, best, {"epoch": 1, "accuracy": 0.5})])
    before = best.read_bytes()

    def full_disk(obj, path, **kwargs) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ms, "save_checkpoint", full_disk)
    with pytest.raises(UserError, match=f"cannot write best.ckpt in {tmp_path}: No space left "
                                        "on device; best.ckpt unchanged"):
        write_files([checkpoint_file(net, best, {"epoch": 2, "accuracy": 0.9})])
    assert best.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "best.ckpt"]
    assert read_extras(best) == {"epoch": 1, "accuracy": 0.5}

    monkeypatch.setattr(Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    with pytest.raises(UserError, match="metrics.json in .*: No space left on device; no "
                                        "metrics.json written"):
        write_json(tmp_path / "metrics.json", {})
