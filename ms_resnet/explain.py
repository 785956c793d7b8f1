"""`ms-resnet explain`: Grad-CAM heat maps of image files, from a checkpoint or from the explain
graph exported beside a MindIR (see ms_resnet.gradcam)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mindspore as ms
import numpy as np

from ms_resnet.config import CommandParser, number_option
from ms_resnet.errors import CheckpointError, UserError
from ms_resnet.files import NewFile, check_writable, read_json, write_files
from ms_resnet.gradcam import (
    DEFAULT_METHOD,
    METHODS,
    PREDICTED,
    Explanation,
    GradCam,
    bare_network,
    default_layer,
    explainable,
)
from ms_resnet.inference import (
    DEFAULT_MAX_PIXELS,
    Classifier,
    add_device_argument,
    load_classifier,
    load_graph,
    load_image,
    sidecar_path,
    softmax,
)

BATCH = 64


def explain_path(model_file: Path) -> Path:
    """Where export writes the explain graph of `model_file`: best.mindir -> best_explain.mindir."""
    return model_file.with_name(f"{model_file.stem}_explain.mindir")


def gradcam_cell(classifier: Classifier, layer: str | None = None,
                 method: str | None = None) -> GradCam:
    """The Grad-CAM graph of a classifier loaded from a checkpoint, in inference mode."""
    network = bare_network(classifier.network)
    if not explainable(network):
        raise UserError(f"{classifier.source}: {type(network).__name__} is not a ResNet of "
                        "ms_resnet; Grad-CAM needs its stages")
    layer = layer or default_layer(network, classifier.channels, classifier.image_size)
    cell = GradCam(network, layer, method or DEFAULT_METHOD,
                   flip=bool(getattr(classifier.config, "eval_flip", False)))
    cell.set_train(False)
    return cell


def run_explainer(explainer: Callable, images: np.ndarray,
                  targets: Sequence[int] | None = None) -> Explanation:
    """Run a GradCam cell, or its exported MindIR, on one batch of normalised NCHW images."""
    if targets is None:
        targets = [PREDICTED] * len(images)
    logits, maps = explainer(ms.Tensor(np.ascontiguousarray(images, np.float32)),
                             ms.Tensor(np.asarray(targets, np.int32)))
    logits = logits.asnumpy().astype(np.float64)
    targets = np.where(np.asarray(targets) < 0, logits.argmax(axis=1), targets)
    return Explanation(maps.asnumpy().astype(np.float32), logits, softmax(logits), targets)


@dataclass
class Explainer:
    """A Grad-CAM graph (a `GradCam` cell, or one exported beside a MindIR) and what it
    explains; `batch` is the fixed batch size of an exported graph (None: any)."""

    graph: Callable
    layer: str
    method: str
    batch: int | None = None

    def explain(self, images: np.ndarray, targets: Sequence[int] | None = None) -> Explanation:
        """Maps of any number of normalised NCHW images, in batches of one shape (the last one
        padded, so that graph mode compiles once); `targets` None: the predicted classes."""
        if not len(images):
            raise ValueError("no images to explain")
        batch = self.batch or min(BATCH, len(images))
        parts = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            chosen = None if targets is None else list(targets[start:start + batch])
            pad = batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                chosen = None if chosen is None else chosen + [0] * pad
            result = run_explainer(self.graph, chunk, chosen)
            keep = batch - pad
            parts.append(Explanation(result.maps[:keep], result.logits[:keep],
                                     result.probabilities[:keep], result.targets[:keep]))
        return Explanation(*(np.concatenate([getattr(p, key) for p in parts])
                             for key in ("maps", "logits", "probabilities", "targets")))


def load_explainer(classifier: Classifier, layer: str | None = None,
                   method: str | None = None) -> Explainer:
    """The Grad-CAM graph built from the checkpoint, or the explain graph exported beside the
    MindIR (whose layer and method were fixed at export)."""
    if classifier.config is not None:
        cell = gradcam_cell(classifier, layer, method)
        return Explainer(cell, cell.layer, cell.method)
    model_file = Path(classifier.source)
    sidecar = read_json(sidecar_path(model_file))
    entry = sidecar.get("explain")
    if not isinstance(entry, dict) or not entry.get("file"):
        raise CheckpointError(f"{model_file}: no explain graph beside it (export it again with "
                              f"`ms-resnet export`, which writes {explain_path(model_file).name}, "
                              "or use --ckpt)")
    path = model_file.with_name(str(entry["file"]))
    exported = (str(entry.get("layer")), str(entry.get("method")))
    if (layer or exported[0], method or exported[1]) != exported:
        raise UserError(f"{path}: explains layer {exported[0]} with {exported[1]}; for another "
                        "--layer or --method use --ckpt")
    if not path.is_file():
        raise CheckpointError(f"{path}: explain graph named in {sidecar_path(model_file).name} "
                              "not found")
    return Explainer(load_graph(path), *exported, batch=sidecar["input_shape"][0])


def display_images(inputs: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised NCHW network inputs back to NHWC uint8 pixels, for drawing."""
    pixels = (inputs * np.array(std, np.float32)[:, None, None]
              + np.array(mean, np.float32)[:, None, None]) * 255.0
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def class_index(target: str, classes: Sequence[str]) -> int:
    """--target as a class name, else as a class number."""
    if target in classes:
        return list(classes).index(target)
    if target.isdigit() and int(target) < len(classes):
        return int(target)
    raise UserError(f"--target {target!r}: not a class of this model; choose a name or a number "
                    f"0-{len(classes) - 1}: {', '.join(classes)}")


def output_names(paths: Sequence[Path]) -> list[str]:
    """Each image's name in the outputs: its file stem, prefixed with as many of its folders as
    it takes to tell apart images that share a stem (cat/0001.jpg, dog/0001.jpg -> cat_0001,
    dog_0001)."""
    folders = [path.resolve().parent.parts[1:] for path in paths]
    depths = [0] * len(paths)
    while True:
        names = ["_".join((*folder[len(folder) - depth:], path.stem))
                 for path, folder, depth in zip(paths, folders, depths)]
        clashes = [i for i, name in enumerate(names) if names.count(name) > 1]
        if not clashes:
            return names
        if all(depths[i] == len(folders[i]) for i in clashes):
            raise UserError(f"{paths[clashes[0]]}: given more than once")
        for i in clashes:
            depths[i] = min(depths[i] + 1, len(folders[i]))


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet explain",
        description="Grad-CAM heat maps: where in each image the network found the evidence for "
                    "its answer. Writes DIR/<stem>_gradcam.png (the image and the map overlaid, "
                    "the class and its probability in the title) and DIR/gradcam.npz (one "
                    "float32 map per image, keyed by file stem, at the network's input size, "
                    "scaled to a maximum of 1). Files that share a stem are told apart by their "
                    "folders: cat/0001.jpg and dog/0001.jpg give cat_0001 and dog_0001.")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...; any size or mode)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint (with config.yaml beside it, or --config)")
    source.add_argument("--mindir", help="exported MindIR; its explain graph "
                        "(<name>_explain.mindir, written by ms-resnet export) must be beside it")
    parser.add_argument("--config", help="YAML config for --ckpt")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--target", help="explain this class (name or number) instead of the "
                        "predicted one")
    parser.add_argument("--layer", help="where the map is taken: stem, a stage (layers.S) or a "
                        "block (layers.S.B); default: the last stage whose map is at least 7x7. "
                        "`ms-resnet models --layers MODEL` lists them")
    parser.add_argument("--method", choices=METHODS, help=f"default: {DEFAULT_METHOD}")
    parser.add_argument("--invert", action="store_true",
                        help="invert grey levels first (dark digit on a light background)")
    parser.add_argument("--max_pixels", type=number_option(int, 1), default=DEFAULT_MAX_PIXELS,
                        help="refuse larger images before decoding them")
    add_device_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    check_writable(out, "--out")
    paths = [Path(name) for name in args.images]
    stems = output_names(paths)
    classifier = load_classifier(args.ckpt, args.mindir, args.config,
                                 device_target=args.device_target)
    target = None if args.target is None else class_index(args.target, classifier.classes)
    explainer = load_explainer(classifier, args.layer, args.method)
    layer = explainer.layer
    inputs = np.stack([load_image(path, classifier, args.invert, args.max_pixels)
                       for path in paths])
    # The classifier's own prediction by default: under eval_translate the explain graph's
    # logits are the flip-averaged ones only, which may rank the classes differently.
    targets = ([target] * len(paths) if target is not None
               else list(classifier.logits(inputs).argmax(axis=1)))
    result = explainer.explain(inputs, targets)

    from ms_resnet import plots

    pixels = display_images(inputs, classifier.mean, classifier.std)
    kind = "target" if target is not None else "predicted"
    for index, (path, stem) in enumerate(zip(paths, stems)):
        name = classifier.classes[result.targets[index]]
        probability = result.probabilities[index, result.targets[index]]
        title = f"{stem}{path.suffix}: {kind} {plots.display_name(name)} ({probability:.1%})"
        overlay = plots.explanation_file(pixels[index], result.maps[index], title,
                                         out / f"{stem}_gradcam.png")
        write_files([overlay])  # one by one: a figure per image would fill the memory
        # Grad-CAM keeps only evidence *for* the class: when none is positive, the map is empty.
        empty = "" if result.maps[index].max() > 0 else f" (empty map: no evidence at {layer})"
        print(f'{path}: {kind} "{name}" {probability:.4f} -> {overlay.target}{empty}')
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **dict(zip(stems, result.maps)))
    write_files([NewFile(out / "gradcam.npz", lambda tmp: tmp.write_bytes(buffer.getvalue()))])
    size = f"{classifier.image_size}x{classifier.image_size}"
    print(f"saved {out / 'gradcam.npz'}: {len(paths)} maps of {size} ({explainer.method} at "
          f"{layer})")
