#!/usr/bin/env python
"""Images/s of each config's training data pipeline alone, and its headroom over training.

For every configs/*.yaml: `create_dataset(dataset, "train", batch_size, augment=True,
random_erasing=<config>, num_parallel_workers=<config>)` - the reader, random crop (+ flip where
the dataset allows it), rescale, normalise, HWC->CHW, random erasing where the config has it,
batching - iterated with
`create_tuple_iterator(output_numpy=True)`, nothing else running. The first --warmup batches
(reader start-up, e.g. parsing the whole .mat or IDX file) are not timed.

Data: MNIST and Fashion-MNIST from their real files in DATA/mnist/ and DATA/fashion_mnist/,
DATA being --data_dir, else $MS_RESNET_DATA, else ./data (each folder found as train.py finds
it). Fashion-MNIST falls back to the MNIST files if absent (same format and size), and both to
the 2,000 real images of tests/data/mnist_small. KMNIST, CIFAR-10, SVHN and STL-10 from
format-exact files written by tests/fakedata.py into a temporary folder (the reader and
transforms do the same work on them; only the pixel values differ).

"headroom" = pipeline images/s / training images/s of the config's model and input. Training
rates come from --train_rate (a JSON file or string: {"resnet20:1x28": 150.0, ...}, or the
--json output of train_throughput.py); by default, the build machine's rates recorded in
benchmarks/RESULTS.md. Headroom well above 1 means the pipeline is not what limits training -
but note that during training the pipeline shares the CPU cores with the network.

    MS_RESNET_DATA=../shared/datasets python benchmarks/pipeline_throughput.py
    python benchmarks/pipeline_throughput.py --data_dir ~/datasets --train_rate train.json --reps 5
    python benchmarks/pipeline_throughput.py --quick     # smoke run, not a measurement
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from specs import has_idx, resolve_data_dir, warn_if_busy

ROOT = Path(__file__).resolve().parents[1]
# MindSpore medians of train_throughput.py on the 2-core build machine (benchmarks/RESULTS.md,
# session 3); they stand in until train_throughput.py has been run on the machine at hand.
DEFAULT_TRAIN_RATE = {"resnet20:1x28": 200.4, "resnet20:3x32": 159.3, "fast_resnet8:1x28": 825.7,
                      "fast_resnet14:1x28": 438.2, "tutorial_resnet:1x28": 78.0,
                      "resnet18:3x32": 26.4, "resnet50:3x32": 11.7, "resnet18:3x96": 34.4}
DEFAULT_SOURCE = "benchmarks/RESULTS.md, session 3 (2-core build machine)"
REAL = {"mnist": ("mnist",), "fashion_mnist": ("fashion_mnist", "mnist")}


def data_dir_for(dataset: str, work: Path, quick: bool, root: Path | None) -> tuple[Path, str]:
    """Folder to read `dataset` from, and where its files came from. The real files are looked
    for in `root`/<name>, or without `root` where train.py looks: $MS_RESNET_DATA/<name>, else
    ./data/<name>."""
    sys.path.insert(0, str(ROOT))
    from tests import fakedata

    if dataset in REAL:
        for name in REAL[dataset]:
            folder = resolve_data_dir(name, root / name if root else None)
            if has_idx(folder):
                note = "real files" if name == dataset else f"real {name} files (stand-in)"
                return folder, note
        folder = ROOT / "tests" / "data" / "mnist_small"
        return folder, "tests/data/mnist_small (2,000 real MNIST images)"
    folder = work / dataset
    counts = {"kmnist": 2000 if quick else 60000, "cifar10": 50000,
              "svhn": 1000 if quick else 20000, "stl10": 512 if quick else 5000}
    if dataset not in counts:
        raise ValueError(f"no data source for dataset '{dataset}'")
    origin = f"fakedata, {counts[dataset]:,} images"
    if folder.is_dir():
        return folder, origin
    if dataset == "kmnist":
        fakedata.make_mnist_like(folder, counts[dataset], 100)
    elif dataset == "cifar10":
        fakedata.make_cifar10_bin(folder)  # the reader needs all 5 x 10,000 records
    elif dataset == "svhn":
        fakedata.make_svhn_mat(folder, counts[dataset], 100)
    else:
        fakedata.make_stl10_bin(folder, counts[dataset], 100)
    return folder, origin


def measure(dataset: str, folder: Path, batch_size: int, workers: int, random_erasing: float,
            warmup: int, batches: int) -> tuple[float, int]:
    """Images/s over `batches` batches after `warmup` untimed ones; also the batches seen."""
    from ms_resnet.data.pipeline import create_dataset

    data = create_dataset(dataset, "train", batch_size, data_dir=str(folder), augment=True,
                          random_erasing=random_erasing, num_parallel_workers=workers)
    available = data.get_dataset_size()
    wanted = min(warmup + batches, available)
    if wanted <= warmup:
        raise SystemExit(f"{dataset}: only {available} batches of {batch_size}; lower --warmup")
    data = data.take(wanted)
    iterator = data.create_tuple_iterator(num_epochs=1, output_numpy=True)
    seen, start, last, images = 0, 0.0, 0.0, 0
    for image, _ in iterator:
        seen += 1
        if seen == warmup:
            start = time.perf_counter()
        elif seen > warmup:
            images += len(image)
            # Timed at the arrival of the last batch: ending the iteration (pipeline
            # shut-down) takes seconds and is no part of the throughput.
            last = time.perf_counter()
    return images / (last - start), seen - warmup


def read_train_rates(value: str | None) -> tuple[dict[str, float], str]:
    if value is None:
        return dict(DEFAULT_TRAIN_RATE), DEFAULT_SOURCE
    path = Path(value)
    text = path.read_text(encoding="utf-8") if path.is_file() else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise SystemExit(f"--train_rate: neither a file nor JSON: {value!r}") from None
    rates = data.get("train_rate", data)
    return {str(k): float(v) for k, v in rates.items()}, f"--train_rate {value}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Images/s of every config's training pipeline alone (mindspore.dataset, "
                    "augmentation on), and the ratio to training throughput.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=None, metavar="YAML",
                        help="config files (default: %(default)s, every configs/*.yaml)")
    parser.add_argument("--batches", type=int, default=50, help="timed batches per repetition")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument("--train_rate", metavar="JSON",
                        help="training images/s per MODEL:CxS, as a file or a JSON string "
                        "(train_throughput.py --json output works); default: "
                        f"{DEFAULT_TRAIN_RATE} ({DEFAULT_SOURCE})")
    parser.add_argument("--data_dir", type=Path,
                        help="folder holding the real mnist/ and fashion_mnist/ folders, like "
                        "$MS_RESNET_DATA (default: %(default)s, that is $MS_RESNET_DATA, else "
                        "./data)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 warm-up + 3 timed batches, 1 repetition, small "
                        "generated files")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.warmup, args.reps = 3, 1, 1
    if min(args.batches, args.warmup, args.reps) < 1:
        parser.error("--batches, --warmup and --reps must be >= 1")
    rates, source = read_train_rates(args.train_rate)
    configs = [Path(c) for c in args.configs] if args.configs else \
        sorted((ROOT / "configs").glob("*.yaml"))

    import mindspore as ms

    from ms_resnet.config import build_config
    from ms_resnet.data import get_dataset_info

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    load = os.getloadavg()[0]
    print(f"# pipeline throughput: {os.cpu_count()} cores, 1-minute load average {load:.2f} "
          f"at start; {args.warmup} untimed + {args.batches} timed batches, {args.reps} "
          "repetitions, median (min-max)")
    print(f"# training rates for the headroom column: {source}")
    warn_if_busy()
    if args.quick:
        print("# --quick: SMOKE RUN with tiny settings - these figures are not measurements")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ms_resnet_pipe_") as tmp:
        work = Path(tmp)
        os.environ["MS_RESNET_CACHE"] = str(work / "cache")
        for path in configs:
            config = build_config(path)
            if config.dataset == "folder":  # your own images: benchmarks/folder_throughput.py
                print(f"#   {path.name}: skipped (a folder dataset; see folder_throughput.py)",
                      file=sys.stderr, flush=True)
                continue
            info = get_dataset_info(config.dataset)
            folder, origin = data_dir_for(config.dataset, work, args.quick, args.data_dir)
            values = []
            for _ in range(args.reps):
                rate, timed = measure(config.dataset, folder, config.batch_size,
                                      config.num_parallel_workers, config.random_erasing,
                                      args.warmup, args.batches)
                values.append(rate)
            median = statistics.median(values)
            spread = "" if len(values) == 1 else f" ({min(values):.0f}-{max(values):.0f})"
            key = f"{config.model}:{info.channels}x{info.image_size}"
            train = rates.get(key)
            headroom = f"{median / train:.1f}x ({train:.0f} img/s)" if train else "n/a"
            augment = "off" if not config.augment else (
                f"on, erasing {config.random_erasing:g}" if config.random_erasing else "on")
            rows.append(f"| {path.name} | {config.dataset} ({origin}) | {config.batch_size} | "
                        f"{augment} | {median:.0f}{spread} | "
                        f"{timed} | {key} | {headroom} |")
            print(f"#   {path.name}: done", file=sys.stderr, flush=True)
    print("| config | dataset (data) | batch | config's augment | pipeline img/s (augment on) | "
          "timed batches | model:input | headroom (pipeline / training) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
