"""Data-parallel training with msrun: 2 CPU workers on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import mindspore as ms
import pytest

from ms_resnet.checkpoint import read_extras
from ms_resnet.models import create_model
from ms_resnet.runtime import parameter_digest
from tests.conftest import QUICK_MNIST, ROOT, run_command

WORKERS = 2


def _digests(log_dir: Path) -> dict[int, str]:
    found = {}
    for rank in range(WORKERS):
        text = (log_dir / f"worker_{rank}.log").read_text(errors="replace")
        match = re.search(rf"rank {rank}: trainable parameter sha256 ([0-9a-f]{{64}})", text)
        assert match, f"worker_{rank}.log has no parameter digest"
        found[rank] = match.group(1)
    return found


@pytest.fixture(scope="module")
def distributed_run(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The `mnist_run` recipe on 2 workers: 16 images each (the same global batch of 32) and
    lr 0.0015 scaled linearly to the same 0.003."""
    ckpt_dir = tmp_path_factory.mktemp("distributed")
    started = time.monotonic()
    result = run_command("scripts/run_distribute_train.sh", str(WORKERS), "configs/mnist.yaml",
                         "--data_dir", str(mnist_small), "--ckpt_dir", str(ckpt_dir),
                         *QUICK_MNIST, "--batch_size", "16", "--lr", "0.0015", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": ckpt_dir, "stdout": result.stdout, "seconds": time.monotonic() - started,
            "metrics": json.loads((ckpt_dir / "metrics.json").read_text())}


def test_ranks_end_with_identical_weights(distributed_run: dict) -> None:
    digests = _digests(distributed_run["dir"] / "logs")
    assert digests[0] == digests[1]
    # best.ckpt is the last epoch here, so it holds exactly those weights.
    metrics = distributed_run["metrics"]
    assert metrics["best_epoch"] == 2
    net = create_model("resnet20", 10, 1, 28)
    ms.load_param_into_net(net, ms.load_checkpoint(str(distributed_run["dir"] / "best.ckpt")))
    assert parameter_digest(net) == digests[0]


def test_only_rank_0_reports_and_writes(distributed_run: dict) -> None:
    folder = distributed_run["dir"]
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        "best.ckpt", "best.json", "best.mindir", "config.yaml", "last.ckpt", "metrics.json"]
    rank0 = (folder / "logs" / "worker_0.log").read_text(errors="replace")
    rank1 = (folder / "logs" / "worker_1.log").read_text(errors="replace")
    assert "epoch 2/2: train loss" in rank0 and "saved" in rank0 and "exported" in rank0
    assert "epoch 2/2" not in rank1 and "saved" not in rank1 and "img/s" not in rank1
    # The user sees rank 0's progress and per-epoch lines in the terminal.
    assert "epoch 1/2: train loss" in distributed_run["stdout"]
    assert "on 2 workers" in distributed_run["stdout"]


def test_accuracy_matches_a_single_process_run(distributed_run: dict, mnist_run: dict) -> None:
    single, parallel = mnist_run["metrics"], distributed_run["metrics"]
    assert single["config"]["batch_size"] == 2 * parallel["config"]["batch_size"]
    assert abs(single["best_accuracy"] - parallel["best_accuracy"]) <= 0.02
    # The test set is evaluated whole, on rank 0, with the BN statistics of rank 0 that are
    # saved in best.ckpt: re-evaluating the checkpoint gives the same number.
    report = distributed_run["dir"] / "eval.json"
    result = run_command("eval.py", "--ckpt", str(distributed_run["dir"] / "best.ckpt"),
                         "--json", str(report))
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = json.loads(report.read_text())
    assert evaluated["num_samples"] == 1000
    assert evaluated["accuracy"] == parallel["best_accuracy"]


def test_weight_average_under_data_parallel(mnist_small: Path, tmp_path: Path) -> None:
    """--ema_decay with 2 workers: the ranks still train identical weights, and rank 0 saves
    and evaluates the average, not the trained weights."""
    result = run_command("scripts/run_distribute_train.sh", str(WORKERS), "configs/mnist.yaml",
                         "--data_dir", str(mnist_small), "--ckpt_dir", str(tmp_path),
                         "--num_samples", "512", "--batch_size", "32", "--epochs", "1",
                         "--ema_decay", "0.9", "--export_mindir", "false", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = _digests(tmp_path / "logs")
    assert trained[0] == trained[1]
    # One epoch: best.ckpt and last.ckpt are written after the same step.
    best = ms.load_checkpoint(str(tmp_path / "best.ckpt"))
    last = ms.load_checkpoint(str(tmp_path / "last.ckpt"))
    assert last["ema.updates"].asnumpy() == 512 // WORKERS // 32  # each rank's steps
    weights = [name for name in best if f"ema.{name}" in last]
    assert weights and all(
        (best[name].asnumpy() == last[f"ema.{name}"].asnumpy()).all() for name in weights)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    net = create_model(metrics["config"]["model"], 10, 1, 28)
    ms.load_param_into_net(net, last)
    assert parameter_digest(net) == trained[0] and any(
        (best[name].asnumpy() != last[name].asnumpy()).any() for name in weights)
    report = tmp_path / "eval.json"
    evaluated = run_command("eval.py", "--ckpt", str(tmp_path / "best.ckpt"), "--json", str(report))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(report.read_text())["accuracy"] == metrics["best_accuracy"]


def _rank_pid(rank: int, ckpt_dir: Path) -> int | None:
    """The main process of worker `rank` of the run writing to `ckpt_dir` (its children share
    its command line and environment, and after pid wrap-around may have lower pids)."""
    candidates = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if (b"train.py" in cmdline and str(ckpt_dir).encode() in cmdline
                and f"RANK_ID={rank}".encode() in environ):
            candidates[int(pid)] = parent
    roots = [pid for pid, parent in candidates.items() if parent not in candidates]
    return roots[0] if roots else None


def test_a_dead_worker_stops_the_job(mnist_small: Path, tmp_path: Path) -> None:
    process = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "run_distribute_train.sh"), str(WORKERS),
         "configs/mnist.yaml", "--model", "resnet20", "--data_dir", str(mnist_small),
         "--ckpt_dir", str(tmp_path), "--epochs", "4", "--batch_size", "16",
         "--export_mindir", "false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.startswith("epoch 1/4: train loss"):
                break
        time.sleep(2)
        victim = _rank_pid(1, tmp_path)
        assert victim, "rank 1 not found"
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = process.communicate(timeout=300)
        waited = time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert waited < 180
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("error: distributed training failed (msrun exit code")
    assert "--resume" in message
    assert _rank_pid(0, tmp_path) is None, "rank 0 is still running"
    assert read_extras(tmp_path / "last.ckpt")["epoch"] >= 1
    net = create_model("resnet20", 10, 1, 28)
    assert ms.load_param_into_net(net, ms.load_checkpoint(str(tmp_path / "last.ckpt")))[0] == []
