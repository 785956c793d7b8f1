"""A trained classifier, loaded from a checkpoint (+ config) or from an exported MindIR (+ its
JSON sidecar), and the preprocessing of user image files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mindspore as ms
import numpy as np
from mindspore import nn

from ms_resnet.checkpoint import config_for_checkpoint, load_weights
from ms_resnet.config import DEVICE_TARGETS
from ms_resnet.cpu_isa import choose_cpu_isa
from ms_resnet.data import FOLDER, FolderSpec
from ms_resnet.dataspec import dataset_info, folder_spec
from ms_resnet.device import environment_device_id, select_device
from ms_resnet.errors import CheckpointError, UserError
from ms_resnet.files import read_json
from ms_resnet.network import build_network, inference_network
from ms_resnet.runtime import set_up_context

DEFAULT_MAX_PIXELS = 50_000_000


@dataclass
class Classifier:
    """Runs a network on normalised NCHW float32 batches; knows its dataset's metadata."""

    network: Callable
    dataset: str
    classes: tuple[str, ...]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    config: Any = None  # the training Config when loaded from a checkpoint
    folder: FolderSpec | None = None  # for --dataset folder: how its test split is read
    title: str = ""
    eval_crop: float = 1.0

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.network(ms.Tensor(np.ascontiguousarray(images, np.float32))).asnumpy()

    def sidecar(self, input_shape: Sequence[int | None]) -> dict:
        """What an exported model needs beside it to be used without this repository."""
        return {"dataset": self.dataset, "model": getattr(self.config, "model", None),
                "flip_averaged": bool(getattr(self.config, "eval_flip", False)),
                "translate_averaged": bool(getattr(self.config, "eval_translate", False)),
                "input_shape": list(input_shape), "channel_order": "NCHW",
                "pixel_scale": 1 / 255, "mean": list(self.mean), "std": list(self.std),
                "classes": list(self.classes), "title": self.title or self.dataset,
                "eval_crop": self.eval_crop,
                **({"val_split": self.folder.val_split, "seed": self.folder.seed}
                   if self.folder else {})}


def from_checkpoint(ckpt: Path, config_path: str | None = None,
                    overrides: dict | None = None) -> Classifier:
    # Inference is one process, even for a model trained with --distribute.
    config = config_for_checkpoint(ckpt, config_path, {**(overrides or {}), "distribute": False})
    set_up_context(config)
    net = build_network(config)
    load_weights(net, ckpt)
    net = inference_network(net, config)
    net.set_train(False)
    info = dataset_info(config)
    return Classifier(net, info.name, info.classes, info.channels, info.image_size, info.mean,
                      info.std, str(ckpt), config, folder_spec(config), info.title,
                      config.eval_crop)


def sidecar_path(model_file: Path) -> Path:
    return model_file.with_suffix(".json")


def from_mindir(path: Path, device_target: str | None = None) -> Classifier:
    """Load an exported MindIR; the network comes from the file, not from this package."""
    if device_target:
        select_device(device_target, environment_device_id())
    meta_path = sidecar_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: MindIR file not found")
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: {meta_path.name} (written by export.py) must be beside "
                              "it: it holds the class names and normalisation")
    choose_cpu_isa(ms.get_context("device_target"))
    meta = read_json(meta_path)
    try:
        _, channels, size, _ = meta["input_shape"]
        classes, mean, std = tuple(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"])
        eval_crop = float(meta.get("eval_crop", 1.0))
        meta["dataset"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: not a sidecar written by export.py (bad or missing "
                              f"{exc})") from None
    graph = load_graph(path)
    mismatch = (f"{path}: does not take the {channels}x{size}x{size} input that "
                f"{meta_path.name} describes; the two files come from different exports "
                "(re-export, or put the matching .json beside it)")
    graph = _FirstCallChecked(graph, mismatch)
    folder = None
    if meta["dataset"] == FOLDER:
        # Enough to read the test split of a folder again (the folder itself: --data_dir).
        folder = FolderSpec(classes, channels, size, mean, std, eval_crop,
                            float(meta.get("val_split", 0.1)), int(meta.get("seed", 42)),
                            title=str(meta.get("title", FOLDER)))
    return Classifier(graph, meta["dataset"], classes, channels, size, mean, std, str(path),
                      folder=folder, title=str(meta.get("title", meta["dataset"])),
                      eval_crop=eval_crop)


def load_graph(path: Path) -> nn.GraphCell:
    """A MindIR file as a callable graph; a file MindSpore cannot load is one CheckpointError."""
    try:
        return nn.GraphCell(ms.load(str(path)))
    except (ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot load ({str(exc).strip().splitlines()[0]})") from None


class _FirstCallChecked:
    """A MindIR graph whose first call, the first input shaped as its sidecar says, turns a
    shape error (a MindIR beside another export's .json) into one CheckpointError line."""

    def __init__(self, graph: Callable, mismatch: str) -> None:
        self.graph, self.mismatch, self.checked = graph, mismatch, False

    def __call__(self, images: ms.Tensor) -> ms.Tensor:
        if self.checked:
            return self.graph(images)
        try:
            result = self.graph(images)
        except (ValueError, RuntimeError, TypeError):
            raise CheckpointError(self.mismatch) from None
        self.checked = True
        return result


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device_target", choices=DEVICE_TARGETS,
                        help="device to run on (default: the training config's for a "
                        "checkpoint, CPU for a MindIR); e.g. CPU for a model trained on a GPU")


def device_overrides(device_target: str | None) -> dict:
    """Config overrides for a --device_target given to eval, export or predict."""
    return {"device_target": device_target} if device_target else {}


def load_classifier(ckpt: str | None, mindir: str | None, config_path: str | None = None,
                    overrides: dict | None = None, device_target: str | None = None
                    ) -> Classifier:
    if bool(ckpt) == bool(mindir):
        raise UserError("give exactly one of --ckpt and --mindir")
    if ckpt:
        return from_checkpoint(Path(ckpt), config_path,
                               {**(overrides or {}), **device_overrides(device_target)})
    return from_mindir(Path(mindir), device_target)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def centre_crop(image: Any, size: int, ratio: float) -> Any:
    """The centre size x size square after scaling the shorter side to size / ratio."""
    from PIL import Image

    scale = size / ratio / min(image.size)
    width, height = round(image.width * scale), round(image.height * scale)
    image = image.resize((width, height), Image.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: Path, classifier: Classifier, invert: bool = False,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any PNG/JPEG/... file as the network's normalised CHW input.

    The image is converted to the dataset's channels (grey or RGB) and resized to its size
    (with eval_crop < 1: shorter side to size / eval_crop, then the centre square, as in
    evaluation).
    Images above `max_pixels` are refused from their header, before being decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, expected an image")
    pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our limit applies below
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise UserError(f"{path}: {image.width}x{image.height} image is larger than "
                                f"the limit of {max_pixels} pixels (--max_pixels)")
            image = image.convert("L" if classifier.channels == 1 else "RGB")
            size = (classifier.image_size, classifier.image_size)
            if classifier.eval_crop < 1.0:
                image = centre_crop(image, classifier.image_size, classifier.eval_crop)
            pixels = np.asarray(image.resize(size, Image.BILINEAR), np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    if invert:
        pixels = 255.0 - pixels
    pixels = pixels.reshape(*size, classifier.channels) / 255.0
    pixels = (pixels - np.array(classifier.mean, np.float32)) / np.array(classifier.std,
                                                                            np.float32)
    return pixels.transpose(2, 0, 1)
