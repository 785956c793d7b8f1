"""Training throughput, or evaluation time, of 1 process vs N msrun data-parallel workers.

`--measure train` (default): runs `scripts/run_train.sh` and `scripts/run_distribute_train.sh N`
with the same global batch, and reads images/s of every epoch after the first (the first
includes graph compilation) from each run's metrics.json.

`--measure eval`: the same two commands on a few hundred training images, each evaluating the
full test set after every epoch (10,000 images for MNIST); reads eval_seconds of every epoch
after the first. Under N workers each rank evaluates its shard of the test set and the totals
are all-reduced (docs/distributed.md).

Both setups run in turn, `--repeats` times (1 process first, then N workers, then again), and
the table gives the median over all timed epochs. Run on an otherwise idle machine:

    MS_RESNET_DATA=../shared/datasets python benchmarks/distributed_throughput.py --workers 2
    MS_RESNET_DATA=../shared/datasets python benchmarks/distributed_throughput.py \\
        --measure eval --repeats 3
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
# What each measurement reads from metrics.json, and how it is printed.
MEASURES = {"train": ("images_per_second", "images/s", "{:.1f}"),
            "eval": ("eval_seconds", "evaluation seconds", "{:.2f}")}


def _run(command: list[str], ckpt_dir: Path, key: str) -> tuple[list[float], dict]:
    """`key` of every epoch after the first, and the last epoch's record."""
    result = subprocess.run(command + ["--ckpt_dir", str(ckpt_dir)], cwd=ROOT, check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command[:3])} failed: {result.stderr.strip()[-500:]}")
    epochs = json.loads((ckpt_dir / "metrics.json").read_text())["epochs"]
    return [e[key] for e in epochs[1:]], epochs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", choices=sorted(MEASURES), default="train",
                        help="training images/s, or seconds to evaluate the test set")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", default="configs/mnist.yaml")
    parser.add_argument("--global_batch", type=int, default=128)
    parser.add_argument("--num_samples", type=int,
                        help="training images per epoch (default: 6400 for train, 512 for eval)")
    parser.add_argument("--eval_num_samples", type=int,
                        help="test images (default: 500 for train, the whole test set for eval)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each setup, in turn (the median covers all of them)")
    args = parser.parse_args()
    warn_if_busy()
    key, label, number = MEASURES[args.measure]
    train_images = args.num_samples or (512 if args.measure == "eval" else 6400)
    test_images = args.eval_num_samples or (500 if args.measure == "train" else None)
    common = [args.config, "--epochs", str(args.epochs), "--num_samples", str(train_images),
              "--export_mindir", "false"]
    if test_images:
        common += ["--eval_num_samples", str(test_images)]
    setups = {"1 process": ["bash", "scripts/run_train.sh", *common,
                            "--batch_size", str(args.global_batch)],
              f"{args.workers} msrun workers": [
                  "bash", "scripts/run_distribute_train.sh", str(args.workers), *common,
                  "--batch_size", str(args.global_batch // args.workers)]}
    values: dict[str, list[float]] = {name: [] for name in setups}
    last: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for index, (name, command) in enumerate(setups.items()):
                timed, last[name] = _run(command, Path(tmp) / f"{repeat}-{index}", key)
                values[name] += timed
    medians = {name: statistics.median(v) for name, v in values.items()}
    timed = (args.epochs - 1) * args.repeats
    extra = " test images |" if args.measure == "eval" else ""
    print(f"| setup | global batch | {label} (median of {timed} epochs) |{extra}")
    print("| --- | --- | --- |" + (" --- |" if extra else ""))
    for name, median in medians.items():
        row = f"| {name} | {args.global_batch} | {number.format(median)} |"
        if extra:
            row += f" {last[name]['test_images']} |"
        print(row)
    one, many = medians.values()
    ratio = many / one if args.measure == "train" else one / many
    print(f"speed-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
