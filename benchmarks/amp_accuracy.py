#!/usr/bin/env python
"""Accuracy and speed of mixed precision against float32: the same seeded `train.py` recipe run
once per precision setting, on the same data, with the test accuracy and training images/s that
each run recorded in its metrics.json.

By default: configs/mnist.yaml (fast_resnet8) with --batch_size 32 --lr 0.05 for 3 epochs on
the 2,000 training / 1,000 test real MNIST images kept for the tests, in float32 (amp O0) and
in amp O2 with a fixed loss scale of 1024 (the GPU/Ascend recipe's precision). On CPU, float16
is emulated, so amp is slower there; the accuracy is what this measures. Accuracy from a seeded
run does not depend on load; the speed does:

    python benchmarks/amp_accuracy.py
    python benchmarks/amp_accuracy.py --settings "O0" "O2 fixed" "O3 none" --epochs 4
    python benchmarks/amp_accuracy.py --out_dir results/amp_mnist_small   # keep the runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from specs import cpu_name

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ("--config", str(ROOT / "configs" / "mnist.yaml"), "--batch_size", "32",
          "--lr", "0.05", "--export_mindir", "false")


def run(setting: str, args: argparse.Namespace, out_dir: Path) -> dict:
    """Train once with `setting` ("O2 fixed": amp_level and loss_scale); its metrics.json."""
    amp_level, _, loss_scale = setting.partition(" ")
    ckpt_dir = out_dir / setting.replace(" ", "_")
    command = [sys.executable, str(ROOT / "train.py"), *RECIPE,
               "--data_dir", str(args.data_dir.resolve()),
               "--epochs", str(args.epochs), "--ckpt_dir", str(ckpt_dir), "--overwrite",
               "--amp_level", amp_level, "--loss_scale", loss_scale or "none"]
    print(f"# {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode:
        sys.exit(f"error: {setting}: train.py failed: {result.stderr.strip().splitlines()[-1]}")
    for leftover in ckpt_dir.glob("*.ckpt"):
        leftover.unlink()  # only metrics.json and config.yaml are kept
    return json.loads((ckpt_dir / "metrics.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["O0", "O2 fixed"],
                        help='amp_level and loss_scale per run (default: "O0" "O2 fixed")')
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data_dir", type=Path, default=ROOT / "tests" / "data" / "mnist_small",
                        help="MNIST folder (default: the 2,000/1,000 real images of the tests)")
    parser.add_argument("--out_dir", type=Path,
                        help="keep each run's metrics.json and config.yaml here "
                             "(default: a temporary folder)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = (args.out_dir or Path(scratch)).resolve()  # train.py runs in ROOT
        results = {setting: run(setting, args, out_dir) for setting in args.settings}
    print(f"# {os.cpu_count()}-core {cpu_name()}, 1-minute load average {load:.2f} at start")
    print("| amp_level | loss_scale | best test accuracy | at epoch | train img/s per epoch |")
    print("| --- | --- | --- | --- | --- |")
    for setting, metrics in results.items():
        amp_level, _, loss_scale = setting.partition(" ")
        rates = ", ".join(f"{e['images_per_second']:.0f}" for e in metrics["epochs"])
        print(f"| {amp_level} | {loss_scale or 'none'} | {metrics['best_accuracy']:.2%} | "
              f"{metrics['best_epoch']} | {rates} |")


if __name__ == "__main__":
    main()
