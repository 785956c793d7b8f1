"""ResNet (He et al., "Deep Residual Learning for Image Recognition", 2016) in MindSpore.

Layout follows torchvision: ``BasicBlock``/``Bottleneck`` with an ``expansion`` attribute, one
``ResNet`` class with ``_make_layer`` and thin per-depth factories. Each block exposes ``branch``
and ``shortcut`` so that ``block(x) == relu(branch(x) + shortcut(x))``. With ``shortcut="none"``
a block has no shortcut (``block.shortcut is None``) and computes ``relu(branch(x))``: the paper's
"plain" network of the same depth, used to show the degradation problem (Sec. 4.1, Fig. 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeNormal

from .registry import register_model

# "none": no shortcut at all, not even the identity (a plain network).
SHORTCUTS = ("A", "B", "none")


def _he_normal() -> HeNormal:
    # Paper / torchvision init: Kaiming normal, fan_out, ReLU gain.
    return HeNormal(mode="fan_out", nonlinearity="relu")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BN follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride, pad_mode="pad", padding=1,
                     has_bias=False, weight_init=_he_normal())


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BN follows)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride, pad_mode="pad", padding=0,
                     has_bias=False, weight_init=_he_normal())


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int) -> nn.SequentialCell:
    """Conv-BN-ReLU, used for the stems."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad_mode="pad",
                     padding=padding, has_bias=False, weight_init=_he_normal())
    return nn.SequentialCell([conv, nn.BatchNorm2d(out_channels), nn.ReLU()])


def _check_shortcut(shortcut: str) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")


def _dirac_init(cells: nn.Cell) -> None:
    """Every 3x3 convolution starts as the identity on its first in_channels filters (the others
    keep their random init), so that each block starts close to passing its input on: airbench's
    "identity initialization" (Jordan 2024), which saves epochs on short schedules."""
    for _, conv in cells.cells_and_names():
        if isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (3, 3) and conv.group == 1:
            weight = conv.weight.asnumpy()
            shared = min(weight.shape[0], weight.shape[1])
            weight[:shared] = 0
            weight[np.arange(shared), np.arange(shared), 1, 1] = 1
            conv.weight.set_data(Tensor(weight))


def _set_batchnorm(bn: nn.BatchNorm2d, momentum: float, freeze_gamma: bool) -> None:
    """`momentum` in MindSpore's convention (running = momentum * running + (1 - momentum) *
    batch; 0.9 is MindSpore's and PyTorch's default); a frozen gamma stays at its init (1)."""
    if momentum != 0.9:
        # nn.BatchNorm2d fixes its momentum in the training primitive it builds in __init__.
        bn.momentum = 1.0 - momentum
        bn.bn_train = ops.BatchNorm(is_training=True, epsilon=bn.eps, momentum=bn.momentum,
                                    data_format=bn.format)
    bn.gamma.requires_grad = not freeze_gamma


class ZeroPadShortcut(nn.Cell):
    """Option A shortcut: strided subsampling plus zero channels; has no parameters.

    The extra ``out_channels - in_channels`` zero channels are split evenly before and after
    the input channels (the odd one, if any, goes at the end).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("ZeroPadShortcut cannot reduce the number of channels")
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = ops.Pad(((0, 0), (extra // 2, extra - extra // 2), (0, 0), (0, 0)))

    def construct(self, x: Tensor) -> Tensor:
        # stride is a Python int attribute, so graph mode folds this branch at compile time.
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return self.pad(x)


def make_shortcut(in_channels: int, out_channels: int, stride: int,
                  shortcut: str) -> nn.Cell | None:
    """Identity if shapes match, else option A (zero-pad) or B (1x1 conv + BN projection);
    None (no shortcut) for a plain network."""
    _check_shortcut(shortcut)
    if shortcut == "none":
        return None
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if shortcut == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.SequentialCell([conv1x1(in_channels, out_channels, stride),
                              nn.BatchNorm2d(out_channels)])


def _last_bn(channels: int, zero_init: bool) -> nn.BatchNorm2d:
    # A zero gamma makes the block start as (ReLU of) its shortcut (Goyal et al., 2017).
    return nn.BatchNorm2d(channels, gamma_init="zeros" if zero_init else "ones")


class BasicBlock(nn.Cell):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 shortcut: str = "B", zero_init_residual: bool = False) -> None:
        super().__init__()
        self.branch = nn.SequentialCell([
            conv3x3(in_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            conv3x3(out_channels, out_channels),
            _last_bn(out_channels, zero_init_residual),
        ])
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut)
        self.relu = nn.ReLU()

    def construct(self, x: Tensor) -> Tensor:
        # `shortcut is None` is fixed when the block is built, so graph mode folds the test.
        if self.shortcut is None:
            return self.relu(self.branch(x))
        return self.relu(self.branch(x) + self.shortcut(x))


class Bottleneck(nn.Cell):
    """1x1-3x3(stride)-1x1 bottleneck; outputs ``channels * expansion`` channels.

    The stride sits on the 3x3 conv (torchvision's "ResNet v1.5"), not on the first 1x1.
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 shortcut: str = "B", zero_init_residual: bool = False) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.branch = nn.SequentialCell([
            conv1x1(in_channels, channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            conv3x3(channels, channels, stride),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            conv1x1(channels, out_channels),
            _last_bn(out_channels, zero_init_residual),
        ])
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut)
        self.relu = nn.ReLU()

    def construct(self, x: Tensor) -> Tensor:
        # `shortcut is None` is fixed when the block is built, so graph mode folds the test.
        if self.shortcut is None:
            return self.relu(self.branch(x))
        return self.relu(self.branch(x) + self.shortcut(x))


class PoolBlock(nn.Cell):
    """conv3x3-maxpool(stride)-BN-ReLU, then conv3x3-BN-ReLU around an identity shortcut.

    The downsampling stage of ResNet-9 (Page 2018) and airbench (Jordan 2024): the first conv runs
    at full resolution and a max-pool halves it, which trains better per epoch than a strided conv
    and keeps few, wide layers (MindSpore's CPU convolutions are fastest per FLOP when wide).
    ``block(x) == h + branch(h)`` with ``h = down(x)``; with ``shortcut="none"`` it is
    ``branch(h)``, airbench's plain block.
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2,
                 shortcut: str = "B", zero_init_residual: bool = False) -> None:
        super().__init__()
        _check_shortcut(shortcut)
        down = [conv3x3(in_channels, out_channels)]
        down += [nn.MaxPool2d(stride, stride)] if stride > 1 else []
        self.down = nn.SequentialCell(down + [nn.BatchNorm2d(out_channels), nn.ReLU()])
        self.branch = nn.SequentialCell([conv3x3(out_channels, out_channels),
                                         _last_bn(out_channels, zero_init_residual), nn.ReLU()])
        self.shortcut = None if shortcut == "none" else nn.Identity()

    def construct(self, x: Tensor) -> Tensor:
        x = self.down(x)
        if self.shortcut is None:
            return self.branch(x)
        return self.shortcut(x) + self.branch(x)


Block = Union[type[BasicBlock], type[Bottleneck], type[PoolBlock]]  # not `|`: Python 3.9


class ResNet(nn.Cell):
    """Generic ResNet: ``stem`` -> stages of residual blocks -> global average pool -> Dense.

    ``widths[i]``/``strides[i]``/``layers[i]`` describe stage ``i``; ``stem_channels`` is the
    number of channels the stem outputs.
    """

    def __init__(self, block: Block, layers: Sequence[int], widths: Sequence[int],
                 strides: Sequence[int], stem: nn.Cell, stem_channels: int,
                 num_classes: int = 10, shortcut: str = "B",
                 zero_init_residual: bool = False, global_pool: str = "avg",
                 logit_scale: float = 1.0, dirac_init: bool = False, bn_momentum: float = 0.9,
                 freeze_bn_gamma: bool = False) -> None:
        super().__init__()
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")
        if freeze_bn_gamma and zero_init_residual:
            raise ValueError("zero_init_residual sets gammas that freeze_bn_gamma would keep at "
                             "0 for ever")
        _check_shortcut(shortcut)
        if shortcut == "none" and zero_init_residual:
            # A zero last-BN gamma would make every plain block output zero.
            raise ValueError("zero_init_residual needs a shortcut; a plain network "
                             "(shortcut 'none') would start with every block at zero")
        if not len(layers) == len(widths) == len(strides):
            raise ValueError("layers, widths and strides must have the same length")
        self.in_channels = stem_channels
        self.stem = stem
        self.layers = nn.SequentialCell([
            self._make_layer(block, w, n, s, shortcut, zero_init_residual)
            for n, w, s in zip(layers, widths, strides)
        ])
        self.pool = ops.ReduceMean() if global_pool == "avg" else ops.ReduceMax()
        # Dense keeps MindSpore's default init, which matches torch.nn.Linear / torchvision:
        # weight HeUniform(a=sqrt(5)), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        self.fc = nn.Dense(self.in_channels, num_classes)
        self.logit_scale = logit_scale
        if dirac_init:
            _dirac_init(self.layers)
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.BatchNorm2d):
                _set_batchnorm(cell, bn_momentum, freeze_bn_gamma)

    def _make_layer(self, block: Block, channels: int, blocks: int, stride: int,
                    shortcut: str, zero_init_residual: bool) -> nn.SequentialCell:
        cells = []
        for i in range(blocks):
            cells.append(block(self.in_channels, channels, stride if i == 0 else 1,
                               shortcut, zero_init_residual))
            self.in_channels = channels * block.expansion
        return nn.SequentialCell(cells)

    def head(self, features: Tensor) -> Tensor:
        """Logits from the last stage's features: global pool, Dense, logit scale (Grad-CAM's
        explain graph calls it too, so both graphs classify alike)."""
        logits = self.fc(self.pool(features, (2, 3)))
        # A Python float fixed at build time: graph mode drops the multiply when it is 1.
        return logits * self.logit_scale if self.logit_scale != 1.0 else logits

    def construct(self, x: Tensor) -> Tensor:
        return self.head(self.layers(self.stem(x)))


# How the 7x7 stem's 3x3/2 max-pool pads: "symmetric", 1 pixel on every side as in torchvision
# and timm; "same", MindSpore's pad_mode="same" as in MindCV (on even sizes: 0 before, 1 after).
# The same weights give other outputs under the other padding (ms_resnet.convert).
STEM_POOL_PADDINGS = ("symmetric", "same")
# The depths of the paper's ImageNet table (and of torchvision, timm and MindCV).
IMAGENET_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _imagenet_resnet(block: Block, layers: Sequence[int], num_classes: int, in_channels: int,
                     image_size: int, stem_pool_padding: str = "symmetric", **kwargs) -> ResNet:
    if stem_pool_padding not in STEM_POOL_PADDINGS:
        raise ValueError(f"stem_pool_padding must be one of {STEM_POOL_PADDINGS}, "
                         f"got {stem_pool_padding!r}")
    if image_size <= 64:
        # Small images: a 7x7/2 conv plus max-pool would discard most of the resolution.
        stem = conv_bn_relu(in_channels, 64, 3, 1, 1)
    elif stem_pool_padding == "same":
        stem = conv_bn_relu(in_channels, 64, 7, 2, 3)
        stem.append(nn.MaxPool2d(3, 2, pad_mode="same"))
    else:
        stem = conv_bn_relu(in_channels, 64, 7, 2, 3)
        # Zero padding + a valid max-pool equals torchvision's MaxPool2d(3, 2, padding=1) here,
        # because the inputs come out of a ReLU (>= 0); unlike pad_mode="pad", it also exports
        # to a dynamic-batch MindIR that MindSpore 2.10 can load again.
        stem.append(nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1))))
        stem.append(nn.MaxPool2d(3, 2, pad_mode="valid"))
    return ResNet(block, layers, (64, 128, 256, 512), (1, 2, 2, 2), stem, 64,
                  num_classes=num_classes, **kwargs)


def _cifar_resnet(depth: int, num_classes: int, in_channels: int, **kwargs) -> ResNet:
    # He et al. 2016, Sec. 4.2: 6n+2 layers, option A shortcuts.
    n = (depth - 2) // 6
    kwargs.setdefault("shortcut", "A")
    return ResNet(BasicBlock, (n, n, n), (16, 32, 64), (1, 2, 2),
                  conv_bn_relu(in_channels, 16, 3, 1, 1), 16, num_classes=num_classes, **kwargs)


@register_model
def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **kwargs) -> ResNet:
    """ResNet-18."""
    return _imagenet_resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, image_size,
                            **kwargs)


@register_model
def resnet34(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **kwargs) -> ResNet:
    """ResNet-34."""
    return _imagenet_resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, image_size,
                            **kwargs)


@register_model
def resnet50(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **kwargs) -> ResNet:
    """ResNet-50."""
    return _imagenet_resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, image_size,
                            **kwargs)


@register_model
def resnet101(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
              **kwargs) -> ResNet:
    """ResNet-101."""
    return _imagenet_resnet(Bottleneck, (3, 4, 23, 3), num_classes, in_channels, image_size,
                            **kwargs)


@register_model
def resnet152(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
              **kwargs) -> ResNet:
    """ResNet-152."""
    return _imagenet_resnet(Bottleneck, (3, 8, 36, 3), num_classes, in_channels, image_size,
                            **kwargs)


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **kwargs) -> ResNet:
    """CIFAR ResNet-20 (n=3)."""
    return _cifar_resnet(20, num_classes, in_channels, **kwargs)


@register_model
def resnet32(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **kwargs) -> ResNet:
    """CIFAR ResNet-32 (n=5)."""
    return _cifar_resnet(32, num_classes, in_channels, **kwargs)


@register_model
def resnet44(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **kwargs) -> ResNet:
    """CIFAR ResNet-44 (n=7)."""
    return _cifar_resnet(44, num_classes, in_channels, **kwargs)


@register_model
def resnet56(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **kwargs) -> ResNet:
    """CIFAR ResNet-56 (n=9)."""
    return _cifar_resnet(56, num_classes, in_channels, **kwargs)


@register_model
def resnet110(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
              **kwargs) -> ResNet:
    """CIFAR ResNet-110 (n=18)."""
    return _cifar_resnet(110, num_classes, in_channels, **kwargs)


def _fast_resnet(depth: int, num_classes: int, in_channels: int, width: int = 32,
                 **kwargs) -> ResNet:
    # MindSpore's CPU convolutions are slowest per FLOP at few channels and large maps: in
    # resnet20 on 28x28 the 16-channel 28x28 stage takes half the convolution time. A stride-2 stem
    # to `width` (32) channels at 14x14 removes that stage; stages then run at 14, 7 and 4 px.
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), (width, 2 * width, 4 * width), (1, 2, 2),
                  conv_bn_relu(in_channels, width, 3, 2, 1), width, num_classes=num_classes,
                  **kwargs)


@register_model
def fast_resnet8(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 **kwargs) -> ResNet:
    """ResNet-8 for 28-32 px inputs: stride-2 stem, one BasicBlock per stage, widths 32/64/128,
    1x1 projection shortcuts. About 3x resnet20's training speed on a CPU."""
    return _fast_resnet(8, num_classes, in_channels, **kwargs)


@register_model
def fast_resnet14(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                  **kwargs) -> ResNet:
    """ResNet-14 variant of fast_resnet8: two BasicBlocks per stage."""
    return _fast_resnet(14, num_classes, in_channels, **kwargs)


@register_model
def fast_resnet14_wide(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                       **kwargs) -> ResNet:
    """fast_resnet14 at 1.5x the width (48/96/192 channels, 2.25x the parameters). Fashion-MNIST
    epochs took 1.83x-1.97x fast_resnet14's training time on the 2-core build machine."""
    return _fast_resnet(14, num_classes, in_channels, width=48, **kwargs)


@register_model
def fullres_resnet14(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                     **kwargs) -> ResNet:
    """ResNet-14 for 28-32 px inputs that keeps the input resolution in its first stage: 3x3
    stride-1 stem to 16 channels, then 1/2/2/1 basic blocks at 16/32/64/128 channels (28, 14, 7
    and 4 px on MNIST). 40 Fashion-MNIST epochs took 1.14x fast_resnet14's training time on the
    2-core build machine."""
    return ResNet(BasicBlock, (1, 2, 2, 1), (16, 32, 64, 128), (1, 2, 2, 2),
                  conv_bn_relu(in_channels, 16, 3, 1, 1), 16, num_classes=num_classes, **kwargs)


@register_model
def pool_resnet8(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 widths: Sequence[int] = (64, 256, 256), **kwargs) -> ResNet:
    """CIFAR-speed ResNet of 8 weighted layers for 32 px inputs (configs/cifar10_fast.yaml).

    A 2x2 conv stem (no padding) to 8 x in_channels channels, meant to be set to the whitening of
    the training images' 2x2 patches and frozen (config ``whiten_stem``; ms_resnet.whitening),
    then three PoolBlocks at 64/256/256 channels (31 -> 15 -> 7 -> 3 px), a global max-pool and a
    Dense layer: the layer sizes of airbench94 (Jordan 2024) with a shortcut in every block.
    """
    stem_channels = 8 * in_channels  # each whitened patch direction with both signs (ReLU)
    stem = nn.SequentialCell([nn.Conv2d(in_channels, stem_channels, 2, pad_mode="valid",
                                        has_bias=True), nn.ReLU()])
    kwargs.setdefault("global_pool", "max")
    kwargs.setdefault("logit_scale", 0.125)
    return ResNet(PoolBlock, (1,) * len(widths), widths, (2,) * len(widths), stem,
                  stem_channels, num_classes=num_classes, **kwargs)
