#!/usr/bin/env python
"""Images/s of the `--dataset folder` training pipeline on a folder of JPEG files.

Generates (once) a folder of --images random-content JPEGs of random sizes between --min_size
and --max_size pixels in --classes class folders, then times:

- the up-front image check (`check_images`: Pillow header + end marker of every file), cold;
- `create_dataset("folder", "train", ...)`: ImageFolderDataset -> Decode -> the augmentation
  (default: random-resized crop 224 + flip, as configs/imagenet_resnet50.yaml) -> ToTensor ->
  Normalize -> batch, iterated with `create_tuple_iterator(output_numpy=True)`, nothing else
  running. The first --warmup batches are not timed. Each repetition is one pass (epoch).

    python benchmarks/folder_throughput.py --folder /tmp/jpeg10k
    python benchmarks/folder_throughput.py --folder /tmp/jpeg10k --image_size 64 \\
        --augmentation crop_flip --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from specs import warn_if_busy

ROOT = Path(__file__).resolve().parents[1]


def make_jpeg_folder(folder: Path, images: int, classes: int, min_size: int, max_size: int,
                     seed: int = 0) -> None:
    """`images` JPEGs of smooth random content (so they compress like photos) in train/."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(images):
        target = folder / "train" / f"class_{i % classes:04d}"
        target.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
        coarse = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        image.save(target / f"{i:06d}.jpg", quality=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True,
                        help="JPEG folder (generated here if it does not exist)")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--min_size", type=int, default=64)
    parser.add_argument("--max_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--augmentation", default="resized_crop_flip")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="num_parallel_workers (default: the number of cores)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches")
    parser.add_argument("--reps", type=int, default=3, help="timed passes")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 600 images (when generating), 1 pass; not a measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.reps = 600, 1
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("MS_RESNET_CACHE", str(args.folder) + ".cache")
    from ms_resnet.cpu_isa import choose_cpu_isa

    choose_cpu_isa()
    from ms_resnet.data import FolderSpec
    from ms_resnet.data.folder import cache_dir, check_images, scan_folder
    from ms_resnet.data.pipeline import create_dataset

    if not args.folder.exists():
        started = time.perf_counter()
        make_jpeg_folder(args.folder, args.images, args.classes, args.min_size, args.max_size)
        print(f"# generated {args.images} JPEGs in {time.perf_counter() - started:.0f} s")
    print(f"# {os.cpu_count()} cores, 1-minute load average {os.getloadavg()[0]:.2f} at start")
    warn_if_busy()
    started = time.perf_counter()
    layout = scan_folder(args.folder)
    scanned = time.perf_counter() - started
    (cache_dir(args.folder) / "checked.json").unlink(missing_ok=True)  # time it cold
    started = time.perf_counter()
    check_images(args.folder, layout.train)
    checked = time.perf_counter() - started
    count = len(layout.train)
    print(f"# {count} files in {len(layout.classes)} classes: scan {scanned:.2f} s, image check "
          f"{checked:.2f} s ({count / max(checked, 1e-9):.0f} files/s; cached afterwards)")
    spec = FolderSpec(layout.classes, 3, args.image_size, (0.5,) * 3, (0.25,) * 3,
                      val_split=0.0, augmentation=args.augmentation)
    rates = []
    for _ in range(args.reps):
        data = create_dataset("folder", "train", args.batch_size, data_dir=str(args.folder),
                              folder=spec, num_parallel_workers=args.workers)
        iterator = data.create_tuple_iterator(num_epochs=1, output_numpy=True)
        seen = 0
        for index, (images, _) in enumerate(iterator):
            if index == args.warmup - 1 or (args.warmup == 0 and index == 0):
                started, seen = time.perf_counter(), 0
                continue
            seen += len(images)
        rates.append(seen / (time.perf_counter() - started))
    print(f"| pipeline | batch | workers | img/s (median of {args.reps} passes) | min-max |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| Decode + {args.augmentation} {args.image_size} + normalise | {args.batch_size} "
          f"| {args.workers} | {statistics.median(rates):.0f} | "
          f"{min(rates):.0f}-{max(rates):.0f} |")


if __name__ == "__main__":
    main()
