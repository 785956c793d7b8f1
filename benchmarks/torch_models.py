#!/usr/bin/env python
"""PyTorch references of the ms_resnet networks, layer for layer.

Each factory builds the same layers, in the same order and with the same shapes, as
``ms_resnet.models.create_model(name, num_classes, in_channels, image_size)``: convolutions
without bias, BatchNorm with affine weight + bias, a Linear head with bias, option-A shortcuts
(``x[:, :, ::2, ::2]`` plus zero channels split evenly before/after) for the CIFAR ResNets and
1x1 conv + BN projections elsewhere. Used by the benchmarks as the PyTorch side.

Check parameter counts and, with MindSpore's weights copied in, that both give the same logits:

    python benchmarks/torch_models.py --check
    python benchmarks/torch_models.py --check --models resnet20:1x28 resnet50:3x32
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from specs import parse_spec
from torch import nn
from torch.nn import functional as F

DEFAULT_CHECKS = ("resnet20:1x28", "resnet20:3x32", "fast_resnet8:1x28", "fast_resnet14:1x28",
                  "fast_resnet14_wide:1x28", "fullres_resnet14:1x28", "resnet18:3x32",
                  "tutorial_resnet:1x28", "resnet50:3x32", "resnet18:3x96",
                  "pool_resnet8:3x32")


def _init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    # Same init as ms_resnet: He normal, fan_out, ReLU gain.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return _init_conv(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False))


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return _init_conv(nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False))


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int) -> nn.Sequential:
    conv = _init_conv(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def _last_bn(channels: int, zero_init: bool) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return bn


class ZeroPadShortcut(nn.Module):
    """Option A: strided subsampling, then ``out - in`` zero channels, half before and half
    (plus the odd one) after the input channels. No parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("ZeroPadShortcut cannot reduce the number of channels")
        self.stride = stride
        extra = out_channels - in_channels
        self.before, self.after = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        # F.pad pads the last dimensions first: (W, W, H, H, C, C).
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))


def make_shortcut(in_channels: int, out_channels: int, stride: int, shortcut: str) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if shortcut == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 shortcut: str = "B", zero_init_residual: bool = False) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            conv3x3(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True), conv3x3(out_channels, out_channels),
            _last_bn(out_channels, zero_init_residual))
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1-3x3(stride)-1x1, stride on the 3x3 (ResNet v1.5), as ms_resnet."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 shortcut: str = "B", zero_init_residual: bool = False) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.branch = nn.Sequential(
            conv1x1(in_channels, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            conv3x3(channels, channels, stride), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            conv1x1(channels, out_channels), _last_bn(out_channels, zero_init_residual))
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))


class PoolBlock(nn.Module):
    """conv3x3-maxpool-BN-ReLU, then h + (conv3x3-BN-ReLU)(h), as ms_resnet's PoolBlock."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2,
                 shortcut: str = "B", zero_init_residual: bool = False) -> None:
        super().__init__()
        down = [conv3x3(in_channels, out_channels)]
        down += [nn.MaxPool2d(stride, stride)] if stride > 1 else []
        self.down = nn.Sequential(*down, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        self.branch = nn.Sequential(conv3x3(out_channels, out_channels),
                                    _last_bn(out_channels, zero_init_residual), nn.ReLU())
        self.residual = shortcut != "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.branch(x) if self.residual else self.branch(x)


class ResNet(nn.Module):
    """stem -> stages -> global average (or max) pool -> Linear (x logit_scale), with ms_resnet's
    attribute names."""

    def __init__(self, block, layers: Sequence[int], widths: Sequence[int],
                 strides: Sequence[int], stem: nn.Module, stem_channels: int,
                 num_classes: int = 10, shortcut: str = "B",
                 zero_init_residual: bool = False, global_pool: str = "avg",
                 logit_scale: float = 1.0, dirac_init: bool = False, bn_momentum: float = 0.9,
                 freeze_bn_gamma: bool = False) -> None:
        super().__init__()
        self.global_pool, self.logit_scale = global_pool, logit_scale
        self.in_channels = stem_channels
        self.stem = stem
        self.layers = nn.Sequential(*[
            self._make_layer(block, w, n, s, shortcut, zero_init_residual)
            for n, w, s in zip(layers, widths, strides)])
        self.fc = nn.Linear(self.in_channels, num_classes)
        for module in self.layers.modules():
            if dirac_init and isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                shared = min(module.out_channels, module.in_channels)
                nn.init.dirac_(module.weight.data[:shared])
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 1.0 - bn_momentum  # ms_resnet's bn_momentum is MindSpore's
                module.weight.requires_grad_(not freeze_bn_gamma)

    def _make_layer(self, block, channels: int, blocks: int, stride: int, shortcut: str,
                    zero_init_residual: bool) -> nn.Sequential:
        cells = []
        for i in range(blocks):
            cells.append(block(self.in_channels, channels, stride if i == 0 else 1, shortcut,
                               zero_init_residual))
            self.in_channels = channels * block.expansion
        return nn.Sequential(*cells)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        x = x.mean(dim=(2, 3)) if self.global_pool == "avg" else x.amax(dim=(2, 3))
        return self.fc(x) * self.logit_scale


def _imagenet_resnet(block, layers, num_classes, in_channels, image_size, **kwargs) -> ResNet:
    if image_size <= 64:
        stem = conv_bn_relu(in_channels, 64, 3, 1, 1)
    else:
        stem = conv_bn_relu(in_channels, 64, 7, 2, 3)
        # As ms_resnet: zero padding + valid max-pool (== MaxPool2d(3, 2, 1) after a ReLU).
        stem.append(nn.ZeroPad2d(1))
        stem.append(nn.MaxPool2d(3, 2))
    return ResNet(block, layers, (64, 128, 256, 512), (1, 2, 2, 2), stem, 64,
                  num_classes=num_classes, **kwargs)


def _cifar_resnet(depth, num_classes, in_channels, **kwargs) -> ResNet:
    n = (depth - 2) // 6
    kwargs.setdefault("shortcut", "A")
    return ResNet(BasicBlock, (n, n, n), (16, 32, 64), (1, 2, 2),
                  conv_bn_relu(in_channels, 16, 3, 1, 1), 16, num_classes=num_classes, **kwargs)


def _tutorial_resnet(num_classes, in_channels, image_size, **kwargs) -> ResNet:
    stem = conv_bn_relu(in_channels, 32, 3, 3, 1)
    return ResNet(BasicBlock, (1, 1, 1, 1), (64, 128, 256, 256), (1, 1, 1, 1), stem, 32,
                  num_classes=num_classes, **kwargs)


def _fast_resnet(depth, width, num_classes, in_channels, **kwargs) -> ResNet:
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), (width, 2 * width, 4 * width), (1, 2, 2),
                  conv_bn_relu(in_channels, width, 3, 2, 1), width, num_classes=num_classes,
                  **kwargs)


def _fullres_resnet14(num_classes, in_channels, **kwargs) -> ResNet:
    return ResNet(BasicBlock, (1, 2, 2, 1), (16, 32, 64, 128), (1, 2, 2, 2),
                  conv_bn_relu(in_channels, 16, 3, 1, 1), 16, num_classes=num_classes, **kwargs)


def _pool_resnet8(num_classes, in_channels, **kwargs) -> ResNet:
    stem = nn.Sequential(nn.Conv2d(in_channels, 8 * in_channels, 2), nn.ReLU(inplace=True))
    return ResNet(PoolBlock, (1, 1, 1), (64, 256, 256), (2, 2, 2), stem, 8 * in_channels,
                  num_classes=num_classes, global_pool="max", logit_scale=0.125, **kwargs)


_IMAGENET = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
             "resnet50": (Bottleneck, (3, 4, 6, 3)), "resnet101": (Bottleneck, (3, 4, 23, 3)),
             "resnet152": (Bottleneck, (3, 8, 36, 3))}
_CIFAR = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
_FAST = {"fast_resnet8": (8, 32), "fast_resnet14": (14, 32), "fast_resnet14_wide": (14, 48)}
MODEL_NAMES = sorted([*_IMAGENET, *_CIFAR, *_FAST, "fullres_resnet14", "pool_resnet8",
                      "tutorial_resnet"])


def create_torch_model(name: str, num_classes: int = 10, in_channels: int = 3,
                       image_size: int = 32, **kwargs) -> ResNet:
    """The PyTorch twin of ``ms_resnet.models.create_model`` (same arguments)."""
    if name in _IMAGENET:
        block, layers = _IMAGENET[name]
        return _imagenet_resnet(block, layers, num_classes, in_channels, image_size, **kwargs)
    if name in _CIFAR:
        return _cifar_resnet(_CIFAR[name], num_classes, in_channels, **kwargs)
    if name in _FAST:
        return _fast_resnet(*_FAST[name], num_classes, in_channels, **kwargs)
    if name == "fullres_resnet14":
        return _fullres_resnet14(num_classes, in_channels, **kwargs)
    if name == "pool_resnet8":
        return _pool_resnet8(num_classes, in_channels, **kwargs)
    if name == "tutorial_resnet":
        return _tutorial_resnet(num_classes, in_channels, image_size, **kwargs)
    raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(MODEL_NAMES)}")


def count_params(model: nn.Module) -> int:
    """Trainable parameters (conv weights, BN weight + bias, Linear weight + bias)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in model.parameters() if p.requires_grad]


_MS_TO_TORCH = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                "moving_variance": "running_var"}


def torch_name(ms_name: str) -> str:
    """'stem.1.gamma' -> 'stem.1.weight': the modules carry ms_resnet's names."""
    prefix, _, last = ms_name.rpartition(".")
    return f"{prefix}.{_MS_TO_TORCH.get(last, last)}"


def copy_mindspore_weights(torch_model: nn.Module, ms_net) -> None:
    """Copy every MindSpore parameter (BN moving statistics included) into `torch_model`, by
    name; raises unless names and shapes correspond one to one."""
    state = {k: v for k, v in torch_model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    new_state = {}
    for param in ms_net.get_parameters():
        key = torch_name(param.name)
        value = torch.from_numpy(param.asnumpy().copy())
        if key not in state or tuple(value.shape) != tuple(state[key].shape):
            found = tuple(state[key].shape) if key in state else "missing"
            raise ValueError(f"{param.name} {tuple(value.shape)} vs PyTorch {key}: {found}")
        new_state[key] = value
    if set(new_state) != set(state):
        raise ValueError(f"PyTorch tensors without a MindSpore twin: "
                         f"{sorted(set(state) - set(new_state))[:5]}")
    torch_model.load_state_dict(new_state, strict=False)


def check(spec: str) -> str:
    """Parameter counts, per-tensor shapes and eval-mode logits with shared weights."""
    import mindspore as ms
    import numpy as np

    from ms_resnet.cpu_isa import choose_cpu_isa
    from ms_resnet.models import create_model

    choose_cpu_isa()  # as every ms_resnet entry point, before the first kernel
    name, channels, size = spec
    ms_net = create_model(name, 10, channels, size)
    torch_model = create_torch_model(name, 10, channels, size)
    ms_count = sum(p.size for p in ms_net.trainable_params())
    torch_count = count_params(torch_model)
    ms_shapes = [tuple(p.shape) for p in ms_net.trainable_params()]
    if ms_count != torch_count or ms_shapes != trainable_shapes(torch_model):
        raise SystemExit(f"{name} {channels}x{size}: MindSpore {ms_count} vs PyTorch "
                         f"{torch_count} trainable parameters (or different shapes)")
    copy_mindspore_weights(torch_model, ms_net)
    ms_net.set_train(False)
    torch_model.eval()
    x = np.random.default_rng(0).standard_normal((2, channels, size, size)).astype(np.float32)
    ms_out = ms_net(ms.Tensor(x)).asnumpy()
    with torch.no_grad():
        torch_out = torch_model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(ms_out - torch_out).max())
    ok = diff < 1e-3 * max(1.0, float(np.abs(ms_out).max()))
    return (f"| {name} | {channels}x{size}x{size} | {ms_count:,} | {torch_count:,} | "
            f"{len(ms_shapes)} | {diff:.2e} {'ok' if ok else 'MISMATCH'} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Without --check, prints the PyTorch parameter "
                                     "counts only (no MindSpore import).")
    parser.add_argument("--check", action="store_true",
                        help="compare with ms_resnet: parameter counts, tensor shapes and "
                        "logits with MindSpore's weights copied in (PyNative mode)")
    parser.add_argument("--models", nargs="+", type=parse_spec, metavar="MODEL:CxS",
                        default=[parse_spec(s) for s in DEFAULT_CHECKS],
                        help=f"default: {' '.join(DEFAULT_CHECKS)}")
    args = parser.parse_args(argv)
    if not args.check:
        for name, channels, size in args.models:
            model = create_torch_model(name, 10, channels, size)
            print(f"{name} {channels}x{size}x{size}: {count_params(model):,} trainable parameters")
        return
    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    ms.set_seed(0)
    print("| model | input | MindSpore params | PyTorch params | tensors | max logit diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec in args.models:
        print(check(spec), flush=True)


if __name__ == "__main__":
    main()
