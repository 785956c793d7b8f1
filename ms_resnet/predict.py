"""`ms-resnet predict`: classify your own image files with a checkpoint or an exported MindIR."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ms_resnet.config import CommandParser, number_option
from ms_resnet.inference import (
    DEFAULT_MAX_PIXELS,
    add_device_argument,
    load_classifier,
    load_image,
    softmax,
)


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet predict",
        description="Print the top-k classes of image files (PNG, JPEG, ...; any size or mode: "
                    "converted to the dataset's channels and size, then normalised as in "
                    "training).")
    parser.add_argument("images", nargs="+", help="image files")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint (with config.yaml beside it, or --config)")
    source.add_argument("--mindir", help="exported MindIR (with its .json sidecar beside it)")
    parser.add_argument("--config", help="YAML config for --ckpt")
    parser.add_argument("--top_k", type=number_option(int, 1), default=3,
                        help="classes to print per image")
    parser.add_argument("--invert", action="store_true",
                        help="invert grey levels first (dark digit on a light background, while "
                             "MNIST-style data is light on dark)")
    parser.add_argument("--max_pixels", type=number_option(int, 1),
                        default=DEFAULT_MAX_PIXELS,
                        help="refuse larger images before decoding them")
    add_device_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    classifier = load_classifier(args.ckpt, args.mindir, args.config,
                                 device_target=args.device_target)
    top_k = max(1, min(args.top_k, len(classifier.classes)))
    for name in args.images:
        image = load_image(Path(name), classifier, args.invert, args.max_pixels)
        probabilities = softmax(classifier.logits(image[None]))[0]
        best = np.argsort(-probabilities)[:top_k]
        ranked = ", ".join(f'"{classifier.classes[i]}" {probabilities[i]:.4f}' for i in best)
        print(f"{name}: {ranked}")
