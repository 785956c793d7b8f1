"""Grad-CAM (Selvaraju et al., 2017) and Grad-CAM++ (Chattopadhay et al., 2018) heat maps for
the ResNets of this package, computed by MindSpore itself.

`GradCam` splits a trained ResNet at one of its layers (`layer_names`) and computes, in one graph,
the logits and the class-activation map of each image: the ReLU of the layer's feature maps
weighted by the gradient of the target class's logit with respect to them, upsampled to the input
size and scaled to a maximum of 1. Being an ordinary cell, it also exports to a MindIR
(`<name>_explain.mindir`, beside the model) that needs no model code: that is how the XiHe app
draws its heat maps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ms_resnet.errors import UserError
from ms_resnet.models import FlipAverage, ResNet

METHODS = ("gradcam", "gradcam++")
UPSAMPLING = ("bilinear", "nearest")
DEFAULT_METHOD = "gradcam"
DEFAULT_UPSAMPLING = "bilinear"
# Coarser maps cannot follow the object: on MNIST digits, fast_resnet8's 4x4 last stage put 47%
# of the heat on the strokes (37% of the area), its 7x7 stage 77% (docs/explain.md).
MIN_MAP_SIZE = 7
PREDICTED = -1  # a target of -1 explains the predicted class
_EPS = 1e-7


def _units(net: ResNet) -> list[tuple[str, nn.Cell]]:
    """The network's cells in the order they run, up to the pooling: the stem, then each block."""
    units = [("stem", net.stem)]
    for s, stage in enumerate(net.layers):
        units += [(f"layers.{s}.{b}", block) for b, block in enumerate(stage)]
    return units


def layer_names(net: ResNet) -> list[str]:
    """The layers a map can be taken at: "stem", each stage "layers.S" (its last block's output)
    and each block "layers.S.B"."""
    names = ["stem"]
    for s, stage in enumerate(net.layers):
        names += [f"layers.{s}"] + [f"layers.{s}.{b}" for b in range(len(stage))]
    return names


def default_layer(net: ResNet, in_channels: int, image_size: int) -> str:
    """The output of the last residual stage whose map is at least MIN_MAP_SIZE pixels wide:
    the last stage itself in resnet20 (8x8 on CIFAR), resnet18-152 (7x7 at 224 px) and
    tutorial_resnet; the stage before in the fast ResNets on 28 px, whose last stage is 4x4."""
    shapes = dict(layer_shapes(net, in_channels, image_size))
    stages = [f"layers.{s}" for s in range(len(net.layers))]
    wide = [name for name in stages if min(shapes[name][1:]) >= MIN_MAP_SIZE]
    return wide[-1] if wide else stages[-1]


@contextmanager
def _pynative() -> Iterator[None]:
    # A single small forward pass: not worth compiling a graph per cell.
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=mode)


def layer_shapes(net: ResNet, in_channels: int, image_size: int
                 ) -> list[tuple[str, tuple[int, ...]]]:
    """Each layer of `layer_names` and the shape (C, H, W) of its output for one input image."""
    net.set_train(False)
    x = ms.Tensor(np.zeros((1, in_channels, image_size, image_size), np.float32))
    outputs = {}
    with _pynative():
        for name, cell in _units(net):
            x = cell(x)
            outputs[name] = tuple(x.shape[1:])
    for s, stage in enumerate(net.layers):
        outputs[f"layers.{s}"] = outputs[f"layers.{s}.{len(stage) - 1}"]
    return [(name, outputs[name]) for name in layer_names(net)]


def _split_at(net: ResNet, layer: str) -> int:
    """Number of units (`_units`) whose output is `layer`'s output."""
    if layer not in layer_names(net):
        raise UserError(f"--layer {layer!r}: no such layer; choose one of "
                        f"{', '.join(layer_names(net))} (ms-resnet models --layers MODEL)")
    if layer == "stem":
        return 1
    stage, *block = (int(part) for part in layer.split(".")[1:])
    done = sum(len(net.layers[s]) for s in range(stage))
    return 1 + done + (block[0] + 1 if block else len(net.layers[stage]))


class _Run(nn.Cell):
    """Some of a network's cells, one after the other (a view: the parameters keep their
    names, and so their checkpoint entries)."""

    def __init__(self, cells: Sequence[nn.Cell]) -> None:
        super().__init__(auto_prefix=False)
        self.steps = nn.CellList(list(cells), auto_prefix=False)

    def construct(self, x):
        for cell in self.steps:
            x = cell(x)
        return x


class _Head(nn.Cell):
    """The rest of the network after the split, then the network's own `head`."""

    def __init__(self, rest: _Run, net: ResNet) -> None:
        super().__init__(auto_prefix=False)
        self.rest, self.net = rest, net

    def construct(self, features):
        return self.net.head(self.rest(features))


class _Score(nn.Cell):
    """(the sum over the batch of each image's target logit, the logits). With flip averaging, the
    logits are the mean of the two views'. A target of -1 picks the image's predicted class. Each
    image's score depends on its own features only (BatchNorm is in inference mode), so one
    gradient gives every image's."""

    def __init__(self, head: _Head) -> None:
        super().__init__(auto_prefix=False)
        self.head = head

    def construct(self, features, mirrored, targets):
        logits = self.head(features)
        if mirrored is not None:
            logits = (logits + self.head(mirrored)) / 2
        chosen = ops.where(targets < 0, logits.argmax(1).astype(targets.dtype), targets)
        onehot = ops.one_hot(chosen, logits.shape[1], ms.Tensor(1.0, ms.float32),
                             ms.Tensor(0.0, ms.float32))
        return (logits * onehot).sum(), logits


class GradCam(nn.Cell):
    """(images NCHW float32, targets N int32) -> (logits N x K, maps N x H x W float32).

    A target of -1 (`PREDICTED`) explains the image's predicted class. Each map is >= 0 and
    scaled to a maximum of 1 (all zeros when no feature speaks for the class). With
    `flip=True` (a model evaluated flip-averaged, config `eval_flip`) the logits are the two
    views' mean, as in evaluation, and the map is the mean of both views' maps. (Under
    `eval_translate` they stay the two views' mean: `explained_network`.)
    """

    def __init__(self, net: ResNet, layer: str, method: str = DEFAULT_METHOD,
                 flip: bool = False, upsampling: str = DEFAULT_UPSAMPLING) -> None:
        super().__init__(auto_prefix=False)
        if method not in METHODS:
            raise UserError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
        if upsampling not in UPSAMPLING:
            raise UserError(f"upsampling {upsampling!r}: choose one of {', '.join(UPSAMPLING)}")
        self.layer = layer
        self.method, self.flip, self.upsampling = method, flip, upsampling
        units = [cell for _, cell in _units(net)]
        split = _split_at(net, self.layer)
        self.body = _Run(units[:split])
        self.score = _Score(_Head(_Run(units[split:]), net))
        # The logits come out beside the score (has_aux), from the same pass: the network's
        # parameters then appear in one differentiated graph only.
        self.score_and_gradients = ms.value_and_grad(self.score, (0, 1) if flip else 0,
                                                     has_aux=True)
        # The primitives, not ops.interpolate / Tensor.max: those do not survive a MindIR export
        # with a dynamic batch size (MindSpore 2.10 cannot load the exported graph again).
        self.resize = (ops.ResizeBilinearV2(half_pixel_centers=True) if upsampling == "bilinear"
                       else ops.ResizeNearestNeighborV2(half_pixel_centers=True))

    def _weights(self, features, gradients):
        if self.method == "gradcam":
            return gradients.mean((2, 3), keep_dims=True)
        # Grad-CAM++: pixel-wise weights alpha for the positive gradients (their Eq. 19, with
        # the exponential of the score, whose derivatives are powers of the gradient).
        squared = gradients * gradients
        total = features.sum((2, 3), keepdims=True)
        alpha = squared / (2 * squared + total * squared * gradients + _EPS)
        alpha = ops.where(gradients != 0, alpha, ops.zeros_like(alpha))
        return (alpha * ops.relu(gradients)).sum((2, 3), keepdims=True)

    def _map(self, features, gradients, size):
        cam = ops.relu((self._weights(features, gradients) * features).sum(1, keepdims=True))
        return self.resize(cam, size)

    def construct(self, images, targets):
        size = (images.shape[2], images.shape[3])
        features = self.body(images)
        mirrored = self.body(ops.flip(images, (3,))) if self.flip else None
        (_, logits), gradients = self.score_and_gradients(features, mirrored, targets)
        if self.flip:
            maps = self._map(features, gradients[0], size)
            maps = (maps + ops.flip(self._map(mirrored, gradients[1], size), (3,))) / 2
        else:
            maps = self._map(features, gradients, size)
        maps = ops.relu(maps.squeeze(1))  # bilinear weights are >= 0; this clears rounding
        peak = ops.amax(maps, (1, 2), True)
        return logits, ops.where(peak > 0, maps / ops.maximum(peak, _EPS), maps)


def bare_network(network: nn.Cell) -> nn.Cell:
    """The ResNet inside an evaluation wrapper (FlipAverage), or `network` itself."""
    return network.network if isinstance(network, FlipAverage) else network


def explained_network(network: nn.Cell) -> nn.Cell:
    """The network whose logits a Grad-CAM graph of `network` gives: `network` itself, except
    that translate averaging (`eval_translate`) is left out; the graph explains the
    flip-averaged logits, whose maps need no shifting back."""
    if isinstance(network, FlipAverage) and network.translate:
        return FlipAverage(network.network)
    return network


def explainable(network: nn.Cell) -> bool:
    return isinstance(bare_network(network), ResNet)


@dataclass
class Explanation:
    """Heat maps of a batch: `maps` N x H x W in [0, 1]; `logits` and `probabilities` N x K;
    `targets` the explained class of each image."""

    maps: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    targets: np.ndarray


def dilate(masks: np.ndarray, pixels: int) -> np.ndarray:
    """Boolean N x H x W masks grown by `pixels` in every direction (a square neighbourhood)."""
    grown = masks.copy()
    height, width = masks.shape[1:]
    for dy in range(-pixels, pixels + 1):
        for dx in range(-pixels, pixels + 1):
            shifted = np.zeros_like(masks)
            shifted[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
                masks[:, max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
            grown |= shifted
    return grown


def heat_share(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, the fraction of the map's total heat that lies inside the mask (NaN for an
    all-zero map): compare it with the mask's share of the area, `masks.mean((1, 2))`."""
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
