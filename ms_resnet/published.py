"""Published ResNet weights (MindCV .ckpt, torchvision .pth, torchvision/timm .safetensors) under
ms_resnet's parameter names: reading, recognising the depth, mapping, loading with checks. Used by
`ms-resnet convert` and by --pretrained (ms_resnet.checkpoint).

What the three sources share with ms_resnet, checked one by one:
- conv weights OIHW and Dense weights (out, in), the same in every framework;
- BatchNorm: eps 1e-5 everywhere; torchvision's running_mean/running_var are MindSpore's
  moving_mean/moving_variance, its weight/bias gamma/beta;
- the downsample path (1x1 conv + BN) is ms_resnet's projection shortcut;
- the bottleneck's stride sits on its 3x3 conv in torchvision ("v1.5"), timm and MindCV, as in
  ms_resnet;
- the stem: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool. The pool pads 1 pixel on each side in
  torchvision and timm, but pad_mode="same" in MindCV (0 before, 1 after): a converted config's
  `stem_pool_padding` keeps the source's, so the outputs are the source's.
Anything else (another depth, a bias where ms_resnet has none, a missing tensor) is refused with
one line.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ms_resnet.errors import CheckpointError, UserError

# Blocks per stage -> depth, for basic blocks and for bottlenecks (He et al. 2016, Table 1).
DEPTHS = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34, (True, (3, 4, 6, 3)): 50,
          (True, (3, 4, 23, 3)): 101, (True, (3, 8, 36, 3)): 152}
# Where each layer of a torchvision/MindCV block sits in ms_resnet's `branch` SequentialCell
# (conv, BN, ReLU, conv, BN, ReLU, conv, BN).
_BRANCH = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
_TORCH_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
             "running_var": "moving_variance"}
_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.")
_BLOCK_MODULE = re.compile(r"layer([1-4])\.(\d+)\.(?:(conv[1-3]|bn[1-3])|(?:downsample|down_sample)"
                           r"\.([01]))")


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .ckpt, .pth or .safetensors file, as NumPy arrays by name."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".ckpt":
            from ms_resnet.runtime import load_ckpt

            return {name: value.asnumpy() for name, value in load_ckpt(path).items()}
        if suffix == ".safetensors":
            try:
                from safetensors.numpy import load_file
            except ImportError:
                raise UserError(f"{path}: reading .safetensors needs the safetensors package "
                                "(pip install safetensors)") from None
            return load_file(str(path))
        if suffix in (".pth", ".pt"):
            return _read_torch(path)
    except (ValueError, TypeError, RuntimeError, OSError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable {suffix} file (truncated or another "
                              f"format?): {first}") from None
    raise UserError(f"{path}: expected a .ckpt (MindSpore, MindCV), .pth (PyTorch) or "
                    ".safetensors file")


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UserError(f"{path}: reading a PyTorch .pth file needs PyTorch (pip install torch); "
                        "the same weights as .safetensors need only `pip install safetensors`"
                        ) from None
    # torch.load's error for a file that is no state dict (the pickle module's, as torch has it).
    unpickling = torch.serialization.pickle.UnpicklingError
    try:
        # weights_only: tensors and containers only, never arbitrary pickled objects.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (unpickling, zipfile.BadZipFile) as exc:
        raise ValueError(str(exc)) from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise TypeError(f"holds a {type(state).__name__}, not a state dict")
    return {name: value.detach().cpu().numpy() for name, value in state.items()
            if isinstance(value, torch.Tensor)}


def source_layout(weights: dict[str, np.ndarray], path: Path) -> str:
    """"torchvision" (also timm's ResNets) or "mindcv", from the names of the stem's BN."""
    if "conv1.weight" in weights and "bn1.running_mean" in weights:
        return "torchvision"
    if "conv1.weight" in weights and "bn1.moving_mean" in weights:
        return "mindcv"
    raise CheckpointError(f"{path}: not a ResNet of torchvision, timm or MindCV (no conv1.weight "
                          "with bn1 running statistics)")


def source_model(weights: dict[str, np.ndarray], path: Path) -> str:
    """resnet18 ... resnet152, from the blocks per stage and the block type."""
    blocks = tuple(len({match.group(2) for match in map(_BLOCK.match, weights)
                        if match and match.group(1) == str(stage)}) for stage in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in weights
    depth = DEPTHS.get((bottleneck, blocks))
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise CheckpointError(f"{path}: a network with {blocks} {kind} blocks per stage, which is "
                              "none of resnet18, 34, 50, 101, 152")
    return f"resnet{depth}"


def _is_batchnorm(module: list[str]) -> bool:
    return module[-1].startswith("bn") or (module[-1] == "1" and len(module) > 1
                                           and module[-2] in ("downsample", "down_sample"))


def ms_resnet_name(name: str, layout: str) -> str | None:
    """The ms_resnet parameter for a source tensor; None for what ms_resnet does not keep
    (BatchNorm's num_batches_tracked); the name itself when it is not a ResNet tensor."""
    *module, leaf = name.split(".")
    if leaf == "num_batches_tracked" or not module:
        return None if leaf == "num_batches_tracked" else name
    if layout == "torchvision" and _is_batchnorm(module):
        leaf = _TORCH_BN.get(leaf, leaf)
    if module == ["conv1"]:
        return f"stem.0.{leaf}"
    if module == ["bn1"]:
        return f"stem.1.{leaf}"
    if module in (["fc"], ["classifier"]):
        return f"fc.{leaf}"
    match = _BLOCK_MODULE.fullmatch(".".join(module))
    if not match:
        return name
    stage, block, layer, shortcut = match.groups()
    prefix = f"layers.{int(stage) - 1}.{block}"
    if shortcut is not None:
        return f"{prefix}.shortcut.{shortcut}.{leaf}"
    return f"{prefix}.branch.{_BRANCH[layer]}.{leaf}"


def to_ms_resnet(weights: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """The source tensors under ms_resnet's names."""
    mapped = {}
    for name, value in weights.items():
        target = ms_resnet_name(name, layout)
        if target is not None:
            mapped[target] = value
    return mapped


def to_torchvision(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ms_resnet's resnet18-152 tensors under torchvision's names (the inverse of
    `ms_resnet_name`), with BatchNorm's num_batches_tracked, which torchvision's strict
    load_state_dict expects. Entries that are not the network's (a checkpoint's epoch, ...) are
    left out."""
    layer_of = {index: layer for layer, index in _BRANCH.items()}
    torch_leaf = {ours: theirs for theirs, ours in _TORCH_BN.items()}
    state = {}
    for name, value in weights.items():
        *module, leaf = name.split(".")
        if module in (["stem", "0"], ["stem", "1"], ["fc"]):
            target = {"stem.0": "conv1", "stem.1": "bn1", "fc": "fc"}[".".join(module)]
        elif len(module) == 5 and module[0] == "layers" and module[3] in ("branch", "shortcut"):
            _, stage, block, kind, index = module
            target = f"layer{int(stage) + 1}.{block}." + (
                layer_of[int(index)] if kind == "branch" else f"downsample.{index}")
        else:
            continue
        if leaf in torch_leaf:
            leaf = torch_leaf[leaf]
            state[f"{target}.num_batches_tracked"] = np.zeros((), np.int64)
        state[f"{target}.{leaf}"] = value
    return state


def load_into(net, mapped: dict[str, np.ndarray], path: Path, model: str,
              reinitialise: bool = False) -> list[str]:
    """Load the mapped tensors into `net` (every parameter must be there; with `reinitialise`,
    parameters of another shape keep their initial values and are returned, as for
    --pretrained); refuse leftovers that would change the output."""
    import mindspore as ms

    params = {param.name: param for param in net.get_parameters()}
    missing = [name for name in params if name not in mapped]
    if missing:
        raise CheckpointError(f"{path}: has no tensor for {model}'s {missing[0]} (and "
                              f"{len(missing) - 1} more): not a {model} of this layout")
    extra = sorted(set(mapped) - set(params))
    if extra:
        raise CheckpointError(f"{path}: holds {extra[0]} (and {len(extra) - 1} more), which "
                              f"{model} in ms_resnet does not have (a bias or a layer of another "
                              "design); refusing a conversion that would change the outputs")
    fitting, skipped = {}, []
    for name, param in params.items():
        shape = tuple(mapped[name].shape)
        if shape == tuple(param.shape):
            fitting[name] = ms.Parameter(ms.Tensor(mapped[name].astype(np.float32)), name=name)
        elif reinitialise:
            skipped.append(f"{name} {shape} -> {tuple(param.shape)}")
        else:
            raise CheckpointError(f"{path}: {name} has shape {shape}, but {model} here has "
                                  f"{tuple(param.shape)}")
    ms.load_param_into_net(net, fitting, strict_load=True)
    return skipped


def load_published(net, path: Path, model: str,
                   weights: dict[str, np.ndarray] | None = None) -> list[str]:
    """--pretrained with published weights: load what fits `net` (a `model` network), return the
    re-initialised parameters (the classifier for another class count, ...). `weights`: the
    file's tensors when the caller has read them already."""
    weights = read_weights(path) if weights is None else weights
    layout = source_layout(weights, path)
    found = source_model(weights, path)
    if found != model:
        raise CheckpointError(f"--pretrained {path}: a {found} file, but this run trains {model}; "
                              f"use {found} weights or --model {found}")
    reinitialised = load_into(net, to_ms_resnet(weights, layout), path, model, reinitialise=True)
    same_pool = any(str(getattr(cell, "pad_mode", "")).upper() == "SAME"
                    for cell in net.stem.cells())
    if layout == "mindcv" and not same_pool:
        print(f"note: {path} is a MindCV model, whose stem max-pool pads as pad_mode same: "
              "stem_pool_padding: same keeps its exact outputs", flush=True)
    return reinitialised


