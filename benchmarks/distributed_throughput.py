"""Training throughput of 1 process vs N msrun data-parallel workers on the same data.

Runs `scripts/run_train.sh` and `scripts/run_distribute_train.sh N` with the same global batch,
and reads images/s of every epoch after the first (the first includes graph compilation) from
each run's metrics.json. Prints a table and the speed-up. Run on an otherwise idle machine:

    MS_RESNET_DATA=../shared/datasets python benchmarks/distributed_throughput.py --workers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from specs import warn_if_busy

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], ckpt_dir: Path) -> list[float]:
    result = subprocess.run(command + ["--ckpt_dir", str(ckpt_dir)], cwd=ROOT, check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command[:3])} failed: {result.stderr.strip()[-500:]}")
    epochs = json.loads((ckpt_dir / "metrics.json").read_text())["epochs"]
    return [e["images_per_second"] for e in epochs[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", default="configs/mnist.yaml")
    parser.add_argument("--global_batch", type=int, default=128)
    parser.add_argument("--num_samples", type=int, default=6400,
                        help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    args = parser.parse_args()
    warn_if_busy()
    common = [args.config, "--epochs", str(args.epochs), "--num_samples", str(args.num_samples),
              "--eval_num_samples", "500", "--export_mindir", "false"]
    with tempfile.TemporaryDirectory() as tmp:
        single = _run(["bash", "scripts/run_train.sh", *common,
                       "--batch_size", str(args.global_batch)], Path(tmp) / "single")
        parallel = _run(["bash", "scripts/run_distribute_train.sh", str(args.workers), *common,
                         "--batch_size", str(args.global_batch // args.workers)],
                        Path(tmp) / "parallel")
    one, many = statistics.median(single), statistics.median(parallel)
    print(f"| setup | global batch | images/s (median of {args.epochs - 1} epochs) |")
    print("| --- | --- | --- |")
    print(f"| 1 process | {args.global_batch} | {one:.1f} |")
    print(f"| {args.workers} msrun workers | {args.global_batch} | {many:.1f} |")
    print(f"speed-up: {many / one:.2f}x")


if __name__ == "__main__":
    main()
