#!/usr/bin/env python
"""Does the Grad-CAM map lie on the object? For each layer, method and upsampling of
`ms_resnet.gradcam.GradCam`: the mean share of the heat that falls on the object's pixels
(slightly dilated), against the object's share of the image area. Lift = the first / the second;
1.0 is a map that ignores the image.

The object is every pixel brighter than --threshold (of 255) in the network's input: the strokes
of an MNIST digit, the garment of a Fashion-MNIST image (light on a dark background). Used to
choose explain's defaults (docs/explain.md).

    python benchmarks/gradcam_focus.py --ckpt ckpt/mnist/best.ckpt \
        --data_dir ../shared/datasets/mnist
    python benchmarks/gradcam_focus.py --ckpt ckpt/fashion_mnist/best.ckpt --threshold 25
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specs import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint (config.yaml beside it)")
    parser.add_argument("--data_dir", help="dataset folder (default: as in training)")
    parser.add_argument("--num_samples", type=int, default=100, help="first N test images")
    parser.add_argument("--threshold", type=float, default=127.5,
                        help="object pixels: brighter than this (0-255; default 127.5)")
    parser.add_argument("--dilation", type=int, default=2, help="grow the object by N pixels")
    parser.add_argument("--blocks", action="store_true", help="every block, not only the stages")
    parser.add_argument("--json", help="also write the table to this file")
    args = parser.parse_args()

    from ms_resnet.cpu_isa import choose_cpu_isa

    choose_cpu_isa()
    from ms_resnet.data.pipeline import create_dataset
    from ms_resnet.explain import Explainer, display_images
    from ms_resnet.gradcam import (
        METHODS,
        UPSAMPLING,
        GradCam,
        bare_network,
        dilate,
        heat_share,
        layer_names,
    )
    from ms_resnet.inference import from_checkpoint

    classifier = from_checkpoint(Path(args.ckpt))
    data = create_dataset(classifier.dataset, "test", args.num_samples,
                          data_dir=args.data_dir or classifier.config.data_dir,
                          num_samples=args.num_samples, folder=classifier.folder)
    images, labels = next(data.create_tuple_iterator(num_epochs=1, output_numpy=True))
    pixels = display_images(images, classifier.mean, classifier.std).mean(axis=3)
    objects = dilate(pixels > args.threshold, args.dilation)
    area = float(objects.mean())
    net = bare_network(classifier.network)  # explained as evaluated: flip-averaged if so
    flip = bool(classifier.config.eval_flip)
    layers = [name for name in layer_names(net)
              if args.blocks or name == "stem" or name.count(".") == 1]
    rows = []
    print(f"{args.ckpt}: {len(images)} test images of {classifier.title}; object = pixels > "
          f"{args.threshold:g}/255 grown by {args.dilation} px: {area:.1%} of the area "
          f"(CPU: {cpu_name()})")
    print("| layer | method | upsampling | heat on the object | lift | accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layer in layers:
        for method in METHODS:
            for upsampling in UPSAMPLING:
                cell = GradCam(net, layer, method, flip, upsampling)
                cell.set_train(False)
                result = Explainer(cell, layer, method).explain(images)
                share = float(np.nanmean(heat_share(result.maps, objects)))
                accuracy = float((result.targets == labels).mean())
                rows.append({"layer": layer, "method": method, "upsampling": upsampling,
                             "heat_on_object": share, "object_area": area,
                             "lift": share / area, "accuracy": accuracy})
                print(f"| {layer} | {method} | {upsampling} | {share:.1%} | "
                      f"{share / area:.2f}x | {accuracy:.1%} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"ckpt": args.ckpt, "images": len(images),
                                               "threshold": args.threshold,
                                               "dilation": args.dilation, "cpu": cpu_name(),
                                               "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
