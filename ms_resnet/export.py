"""`python export.py` / `ms-resnet export`: checkpoint -> MindIR (or ONNX) + JSON sidecar, then a
parity check of the exported file against the checkpoint on real test images."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import mindspore as ms
import numpy as np

from ms_resnet.config import CommandParser, number_option
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.errors import DataError, UserError
from ms_resnet.explain import explain_path, gradcam_cell, load_explainer
from ms_resnet.files import NewFile, check_writable, write_files
from ms_resnet.gradcam import explainable, explained_network
from ms_resnet.inference import (
    Classifier,
    add_device_argument,
    device_overrides,
    from_checkpoint,
    from_mindir,
    sidecar_path,
)

_SUFFIX = {"MINDIR": ".mindir", "ONNX": ".onnx"}
PARITY_TOLERANCE = 1e-4


class ParityError(UserError):
    """The exported model does not reproduce the checkpoint's outputs."""


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet export",
        description="Export a checkpoint with mindspore.export, write <file_name>.json beside it "
                    "(input shape, mean/std, class names), and check that the exported MINDIR "
                    "gives the checkpoint's logits on real test images.")
    parser.add_argument("--ckpt", required=True, help="checkpoint, e.g. ckpt/mnist/best.ckpt")
    parser.add_argument("--config", help="YAML config (default: config.yaml beside --ckpt)")
    parser.add_argument("--file_name", help="output path without suffix "
                        "(default: the checkpoint's path without .ckpt)")
    parser.add_argument("--file_format", default="MINDIR", choices=sorted(_SUFFIX))
    parser.add_argument("--batch_size", type=number_option(int, 1),
                        help="fixed batch size of the input "
                        "(default: any batch size for MINDIR, 1 for ONNX, which has no "
                        "dynamic shapes in MindSpore)")
    parser.add_argument("--data_dir", help="dataset folder for the parity check "
                        "(default: as in training)")
    parser.add_argument("--parity_samples", type=number_option(int, 0), default=256,
                        help="test images used for the parity check (0: skip it)")
    add_device_argument(parser)
    return parser


def export_model(classifier: Classifier, base: Path, file_format: str = "MINDIR",
                 batch_size: int | None = None) -> Path:
    """Write `base` + .mindir/.onnx and `base`.json, and for a MINDIR of a ResNet its Grad-CAM
    graph `base`_explain.mindir (ms_resnet.explain); return the model file."""
    if file_format == "ONNX" and batch_size is None:
        batch_size = 1
    shape = [batch_size, classifier.channels, classifier.image_size, classifier.image_size]
    example = (ms.Tensor(shape=shape, dtype=ms.float32) if batch_size is None
               else ms.Tensor(np.zeros(shape, np.float32)))
    path = base.with_name(base.name + _SUFFIX[file_format])
    weights = sum(p.nbytes for p in classifier.network.get_parameters()) + (1 << 20)
    files = [NewFile(path, lambda tmp: ms.export(classifier.network, example, file_name=str(tmp),
                                                 file_format=file_format), weights)]
    sidecar = classifier.sidecar(shape)
    if file_format == "MINDIR" and explainable(classifier.network):
        cell = gradcam_cell(classifier)
        targets = (ms.Tensor(shape=[batch_size], dtype=ms.int32) if batch_size is None
                   else ms.Tensor(np.zeros(batch_size, np.int32)))
        explain_file = explain_path(path)
        files.append(NewFile(explain_file, lambda tmp: ms.export(
            cell, example, targets, file_name=str(tmp), file_format="MINDIR"), weights))
        sidecar["explain"] = {"file": explain_file.name, "layer": cell.layer,
                              "method": cell.method,
                              "inputs": ["images", "targets (-1: the predicted class)"],
                              "outputs": ["logits", "maps N x H x W, 0..1"]}
    text = json.dumps(sidecar, indent=2, ensure_ascii=False)
    files.append(NewFile(sidecar_path(path), lambda tmp: tmp.write_text(text, encoding="utf-8")))
    # The model, its explain graph and its sidecar are replaced together or not at all.
    write_files(files)
    return path


def sample_test_images(classifier: Classifier, count: int, data_dir: str | None) -> np.ndarray:
    data = create_dataset(classifier.dataset, "test", count, data_dir=data_dir,
                          num_samples=count, folder=classifier.folder)
    return next(data.create_tuple_iterator(num_epochs=1, output_numpy=True))[0]


def check_parity(reference: Classifier, exported: Classifier, images: np.ndarray,
                 batch_size: int | None) -> float:
    """Max |logit difference|; raises ParityError above PARITY_TOLERANCE or on any top-1 change."""
    step = batch_size or len(images)
    usable = len(images) - len(images) % step
    ref = reference.logits(images[:usable])
    out = np.concatenate([exported.logits(images[i:i + step]) for i in range(0, usable, step)])
    difference = float(np.abs(ref - out).max())
    changed = int((ref.argmax(axis=1) != out.argmax(axis=1)).sum())
    if difference > PARITY_TOLERANCE or changed:
        raise ParityError(f"{exported.source}: exported model differs from the checkpoint: max "
                          f"|logit difference| {difference:.3g} (limit {PARITY_TOLERANCE:g}), "
                          f"{changed} of {usable} top-1 predictions changed")
    return difference


def export_checkpoint(ckpt: Path, config_path: str | None = None, file_name: str | None = None,
                      file_format: str = "MINDIR", batch_size: int | None = None,
                      data_dir: str | None = None, parity_samples: int = 256,
                      device_target: str | None = None) -> Path:
    """Export `ckpt` and, for MINDIR, verify the file against it; return the exported file."""
    base = Path(file_name) if file_name else ckpt.with_suffix("")
    check_writable(base.parent, "--file_name")
    classifier = from_checkpoint(ckpt, config_path, device_overrides(device_target))
    path = export_model(classifier, base, file_format, batch_size)
    print(f"exported {path} (+ {sidecar_path(path).name})")
    if file_format != "MINDIR" or parity_samples <= 0:
        return path
    try:
        images = sample_test_images(classifier, parity_samples,
                                    data_dir or classifier.config.data_dir)
        origin = f"{len(images)} real test images"
    except DataError:
        # Exporting must not need the dataset; random inputs still catch a broken export.
        images = np.random.default_rng(0).standard_normal(
            (parity_samples, classifier.channels, classifier.image_size,
             classifier.image_size)).astype(np.float32)
        origin = f"{len(images)} random inputs (test data not found)"
    exported = from_mindir(path)
    difference = check_parity(classifier, exported, images, batch_size)
    print(f"parity check on {origin}: max |logit difference| {difference:.3g}, "
          "all top-1 predictions equal")
    if explainable(classifier.network):
        difference = check_explain_graph(classifier, exported, images, batch_size)
        print(f"explain graph {explain_path(path).name}: max |logit difference| "
              f"{difference:.3g}, maps in [0, 1]")
    return path


def check_explain_graph(reference: Classifier, exported: Classifier, images: np.ndarray,
                        batch_size: int | None) -> float:
    """Load and run the exported explain graph: its logits must be the checkpoint's (so its
    weights and forward pass are), its maps within [0, 1] and scaled to 1 or all 0; return the
    max |logit difference|. (Its maps equal the checkpoint's Grad-CAM: tests/test_explain.py;
    checking that here too would compile a second gradient graph for every export.)"""
    # A few images are enough: every row of a batch comes from the same graph.
    sample = images[:batch_size or 32]
    result = load_explainer(exported).explain(sample)
    expected = explained_network(reference.network)(
        ms.Tensor(np.ascontiguousarray(sample, np.float32))).asnumpy()
    difference = float(np.abs(result.logits - expected).max())
    peaks = result.maps.max(axis=(1, 2))
    if difference > PARITY_TOLERANCE or result.maps.min() < 0 or not np.all(
            np.isclose(peaks, 1) | (peaks == 0)):
        raise ParityError(f"{explain_path(Path(exported.source))}: exported explain graph "
                          f"differs from the checkpoint: max |logit difference| "
                          f"{difference:.3g} (limit {PARITY_TOLERANCE:g}), maps in "
                          f"[{result.maps.min():.3g}, {peaks.max():.3g}]")
    return difference


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    export_checkpoint(Path(args.ckpt), args.config, args.file_name, args.file_format,
                      args.batch_size, args.data_dir, args.parity_samples, args.device_target)
