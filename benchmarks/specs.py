"""What the benchmark scripts share: model specs "MODEL:CxS" (e.g. "resnet20:1x28"), argument
checks, finding the MNIST files, the CPU name and the idle check.

Kept free of torch and mindspore so that each framework's worker process imports only its own
framework (peak RSS is measured per framework).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# ms_resnet.data.prepare is a light import (no mindspore): the project's own rules and names.
from ms_resnet.data.prepare import IDX_NAMES, resolve_data_dir


def has_idx_file(folder: Path, name: str) -> bool:
    return (folder / f"{name}.gz").is_file() or (folder / name).is_file()


def has_idx(folder: Path, splits: Sequence[str] = ("train",)) -> bool:
    """Whether `folder` holds the IDX image and label files of `splits` (.gz or raw)."""
    return all(has_idx_file(folder, name) for split in splits for name in IDX_NAMES[split])


def find_mnist(data_dir: str | os.PathLike | None, splits: Sequence[str]) -> Path:
    """The MNIST folder as `train.py --data_dir` finds it: `data_dir` if given, else
    `$MS_RESNET_DATA/mnist`, else `./data/mnist`; made absolute, as the scripts run their
    workers from the repository root. Stops with one error line when its files are missing."""
    folder = resolve_data_dir("mnist", data_dir).absolute()
    missing = [f"{name}(.gz)" for split in splits for name in IDX_NAMES[split]
               if not has_idx_file(folder, name)]
    if missing:
        sys.exit(f"error: MNIST files not found in {folder}: {', '.join(missing)}; pass "
                 "--data_dir (the MNIST folder) or set MS_RESNET_DATA (the folder holding mnist/)")
    return folder


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores are busy now, sampled over `seconds` (the 1-minute load average, used
    where /proc/stat is missing, still counts a job that ended a minute ago)."""
    try:
        busy, total = _cpu_times()
        time.sleep(seconds)
        busy_after, total_after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    return (busy_after - busy) / max(total_after - total, 1) * (os.cpu_count() or 1)


def warn_if_busy(limit: float = 0.5, seconds: float = 2.0) -> None:
    """Other work on the machine skews every figure, and PyTorch's OpenMP threads most: with
    one of 2 cores busy, a 2-thread PyTorch step can take many times longer."""
    busy = busy_cores(seconds)
    if busy > limit:
        print(f"# WARNING: the machine is not idle ({busy:.2f} of {os.cpu_count()} cores busy "
              f"over {seconds:g} s at start); these figures are not comparable with an idle "
              "run")


def parse_spec(spec: str, inputs: Collection[tuple[int, int]] | None = None
               ) -> tuple[str, int, int]:
    """'resnet20:1x28' -> ('resnet20', 1, 28); `inputs` limits the (channels, size) allowed."""
    try:
        name, shape = spec.split(":")
        channels, size = (int(v) for v in shape.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL:CxS such as resnet20:1x28, "
                                         f"got {spec!r}") from None
    if inputs is not None and (channels, size) not in inputs:
        raise argparse.ArgumentTypeError(f"{spec}: input must be one of "
                                         f"{', '.join(f'{c}x{s}' for c, s in inputs)}")
    return name, channels, size


# The dataset each benchmark input reads: real MNIST files, or format-exact generated files.
DATASET_BY_INPUT = {(1, 28): "mnist", (3, 32): "cifar10", (3, 96): "stl10"}


def parse_input_spec(spec: str) -> tuple[str, int, int]:
    """`parse_spec` limited to the inputs in DATASET_BY_INPUT."""
    return parse_spec(spec, DATASET_BY_INPUT)


def parse_benchmark_args(parser: argparse.ArgumentParser, argv: Sequence[str],
                         quick: dict[str, int], quick_models: Sequence[str],
                         parse: Callable[[str], object],
                         at_least_one: Sequence[str]) -> argparse.Namespace:
    """The command-line steps the throughput scripts share: `--quick` applies its settings
    (and its models unless --models is given), every model spec must parse, and the options
    named in `at_least_one` must be >= 1; anything else stops with one argparse error line."""
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
        if "--models" not in argv:
            args.models = list(quick_models)
    for spec in args.models:
        try:
            parse(spec)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    if min(getattr(args, name) for name in at_least_one) < 1:
        names = [f"--{name}" for name in at_least_one]
        parser.error(f"{', '.join(names[:-1])} and {names[-1]} must be >= 1")
    return args
