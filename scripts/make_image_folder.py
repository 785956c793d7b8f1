#!/usr/bin/env python
"""Write some Fashion-MNIST classes as a folder of ordinary image files, the way users have
their own pictures: DIR/train/<class>/*.png|jpg|bmp and DIR/test/<class>/..., with mixed file
formats (PNG, JPEG, a few BMP), mixed sizes (28 to 64 pixels) and mixed modes (grey, and RGB
tinted with a random colour).

The training images come from the end of Fashion-MNIST's training split (from --train_offset
on) and the test images from the end of its test split (from --test_offset on), so a checkpoint
trained on the first images of each split (`--num_samples 3000 --eval_num_samples 2000`) never
saw any of them: the fine-tuning example of docs/own_images.md relies on that.

    python scripts/make_image_folder.py /work/scratch/fashion3 \\
        --source /work/shared/datasets/fashion_mnist
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SIZES = (28, 36, 48, 64)


def read_idx(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = (source / name for name in FILES[split])
    with gzip.open(images_file) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_file) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def folder_name(name: str) -> str:
    return name.replace("/", "_").replace(" ", "_")


def save_image(pixels: np.ndarray, path: Path, rng: np.random.Generator) -> Path:
    """One image in a random size, mode and format."""
    image = Image.fromarray(pixels, "L")
    size = int(rng.choice(SIZES))
    if size != 28:
        image = image.resize((size, size), Image.BICUBIC)
    if rng.random() < 0.5:
        tint = rng.uniform(0.5, 1.0, 3)
        rgb = np.asarray(image, np.float32)[..., None] * tint
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    kind = rng.random()
    if kind < 0.45:
        path = path.with_suffix(".png")
        image.save(path)
    elif kind < 0.9:
        path = path.with_suffix(".jpg")
        image.save(path, quality=int(rng.integers(80, 96)))
    else:
        path = path.with_suffix(".bmp")
        image.save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to create (must not exist)")
    parser.add_argument("--source", type=Path, default=Path("data/fashion_mnist"),
                        help="Fashion-MNIST IDX .gz files (default: data/fashion_mnist)")
    parser.add_argument("--classes", default="T-shirt/top,Trouser,Sneaker",
                        help="comma-separated Fashion-MNIST class names or label numbers "
                             "(default: T-shirt/top,Trouser,Sneaker)")
    parser.add_argument("--names", help="comma-separated folder names, one per class (default: "
                        "the Fashion-MNIST names, '/' and ' ' replaced by '_'); e.g. for MNIST "
                        "digits: --classes 0,1,7 --names zero,one,seven")
    parser.add_argument("--train_per_class", type=int, default=400)
    parser.add_argument("--test_per_class", type=int, default=100)
    parser.add_argument("--train_offset", type=int, default=30000,
                        help="first training image used (default: 30000)")
    parser.add_argument("--test_offset", type=int, default=5000,
                        help="first test image used (default: 5000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    wanted = [c.strip() for c in args.classes.split(",")]
    unknown = [c for c in wanted if c not in CLASSES and not (c.isdigit() and int(c) < 10)]
    if unknown:
        sys.exit(f"error: unknown class {unknown[0]!r}; expected a label 0-9 or one of: "
                 f"{', '.join(CLASSES)}")
    labels_wanted = [int(c) if c.isdigit() else CLASSES.index(c) for c in wanted]
    names = ([n.strip() for n in args.names.split(",")] if args.names
             else [folder_name(CLASSES[label]) for label in labels_wanted])
    if len(names) != len(wanted):
        sys.exit(f"error: --names gives {len(names)} names for {len(wanted)} classes")
    if args.out.exists():
        sys.exit(f"error: {args.out} already exists")
    rng = np.random.default_rng(args.seed)
    counts = {"train": args.train_per_class, "test": args.test_per_class}
    offsets = {"train": args.train_offset, "test": args.test_offset}
    for split in ("train", "test"):
        images, labels = read_idx(args.source, split)
        for label, name in zip(labels_wanted, names):
            target = args.out / split / name
            target.mkdir(parents=True)
            index = np.nonzero(labels[offsets[split]:] == label)[0]
            index = index[:counts[split]] + offsets[split]
            for i in index:
                save_image(images[i], target / f"{split}_{i:05d}", rng)
            print(f"{target}: {len(index)} images")


if __name__ == "__main__":
    main()
