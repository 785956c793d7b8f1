"""Loading a checkpoint into a network built from the config saved beside it, with clear errors."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import mindspore as ms
from mindspore import nn

from ms_resnet.config import Config, build_config
from ms_resnet.errors import CheckpointError, UserError
from ms_resnet.files import read_yaml
from ms_resnet.network import classifier_names
from ms_resnet.runtime import load_ckpt


def config_for_checkpoint(ckpt: Path, config_path: str | None,
                          overrides: dict | None = None) -> Config:
    """The config given, else the `config.yaml` that training saved beside the checkpoint."""
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: checkpoint file not found")
    if config_path is None:
        saved = ckpt.parent / "config.yaml"
        if not saved.is_file():
            raise CheckpointError(f"{ckpt}: no config.yaml beside it; pass --config")
        config_path = str(saved)
    return build_config(config_path, overrides, training=False)


# Scalars saved beside the weights (position, accuracy, data-parallel workers), see
# callbacks.EvalCheckpoint.
_EXTRA_KEYS = ("epoch", "step", "loss_sum", "accuracy", "best_accuracy", "best_epoch",
               "workers")


def _extras(saved: dict) -> dict:
    return {key: saved[key].asnumpy().item() for key in _EXTRA_KEYS if key in saved}


def _read_checkpoint(ckpt: Path, label: str) -> dict:
    """All entries of a checkpoint; `label` names it in errors (the path, or the option)."""
    if not ckpt.is_file():
        raise CheckpointError(f"{label}: checkpoint file not found")
    try:
        return load_ckpt(ckpt)
    except (ValueError, RuntimeError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{label}: not a readable MindSpore checkpoint "
                              f"(truncated or another format?): {first_line}") from None


def load_weights(net: nn.Cell, ckpt: Path, optional: Collection[str] = ()) -> dict:
    """Load `ckpt` into `net`; return the checkpoint's extra entries (epoch, accuracy, ...).

    Parameters named in `optional` may be missing from the checkpoint (they keep their values);
    the names missing are returned under "missing"."""
    saved = _read_checkpoint(ckpt, str(ckpt))
    missing = []
    for param in net.get_parameters():
        if param.name not in saved and param.name in optional:
            missing.append(param.name)
            continue
        if param.name not in saved:
            raise CheckpointError(f"{ckpt}: has no parameter '{param.name}'; it was saved "
                                  "from another model (check --model / the config)")
        shape = tuple(saved[param.name].shape)
        if shape != tuple(param.shape):
            raise CheckpointError(f"{ckpt}: parameter '{param.name}' has shape {shape} in the "
                                  f"checkpoint but {tuple(param.shape)} in the network "
                                  "(another model, num_classes or in_channels?)")
    ms.load_param_into_net(net, saved, strict_load=True)
    return {**_extras(saved), **({"missing": missing} if missing else {})}


def read_extras(ckpt: Path) -> dict:
    """The position and accuracy entries saved with a checkpoint ({} if it cannot be read)."""
    try:
        saved = load_ckpt(ckpt, choice_func=lambda name: name in _EXTRA_KEYS)
    except (ValueError, RuntimeError, OSError):
        return {}
    return _extras(saved)


def load_training_state(train_network: nn.Cell, ckpt: Path,
                        optional: Collection[str] = ()) -> dict:
    """Load a last.ckpt (network + optimizer state) into the training network; return its
    position and best accuracy so far (and under "missing" the `optional` Parameters it
    lacked)."""
    extras = load_weights(train_network, ckpt, optional)
    missing = [key for key in ("epoch", "step", "best_accuracy") if key not in extras]
    if missing:
        raise CheckpointError(f"{ckpt}: not a resumable checkpoint (no {', '.join(missing)}); "
                              "--resume takes the last.ckpt written during training")
    return extras


def _saved_model_name(ckpt: Path) -> str | None:
    """The model named in the config.yaml saved beside a checkpoint, if any."""
    try:
        saved = read_yaml(ckpt.parent / "config.yaml")
    except UserError:
        return None
    return saved.get("model") if isinstance(saved, dict) else None


def load_pretrained(net: nn.Cell, ckpt: Path, model: str) -> list[str]:
    """Fine-tuning: load the parameters of `ckpt` that fit `net`; the others (another class
    count's classifier, another channel count's stem) keep their fresh initialisation. Returns
    their descriptions, e.g. "fc.weight (10, 64) -> (3, 64)".

    `ckpt` is an ms_resnet checkpoint of the same `model`, a folder holding one (best.ckpt: a
    run, or `ms-resnet convert`'s output), or published weights of the same depth that
    `ms-resnet convert` reads (MindCV .ckpt, torchvision .pth, torchvision/timm .safetensors).
    """
    if ckpt.is_dir():
        ckpt = ckpt / "best.ckpt"
    if ckpt.suffix.lower() != ".ckpt":
        from ms_resnet.published import load_published

        return load_published(net, ckpt, model)
    other = _saved_model_name(ckpt)
    if other is not None and other != model:
        raise CheckpointError(f"--pretrained {ckpt}: a checkpoint of {other} (config.yaml beside "
                              f"it), but this run trains {model}; use a {model} checkpoint")
    saved = _read_checkpoint(ckpt, f"--pretrained {ckpt}")
    if "stem.0.weight" not in saved and "conv1.weight" in saved:  # MindCV's names
        from ms_resnet.published import load_published

        return load_published(net, ckpt, model,
                              {name: value.asnumpy() for name, value in saved.items()})
    params = list(net.get_parameters())
    missing = [p.name for p in params if p.name not in saved]
    if missing:
        raise CheckpointError(f"--pretrained {ckpt}: has no parameter '{missing[0]}' (and "
                              f"{len(missing) - 1} more): it was saved from another model than "
                              f"{model}")
    fitting, reinitialised = {}, []
    for param in params:
        shape = tuple(saved[param.name].shape)
        if shape == tuple(param.shape):
            fitting[param.name] = saved[param.name]
        else:
            reinitialised.append(f"{param.name} {shape} -> {tuple(param.shape)}")
    ms.load_param_into_net(net, fitting, strict_load=True)
    return reinitialised


def freeze_backbone(net: nn.Cell) -> list[str]:
    """Leave only the classifier (the network's last Dense layer) trainable; return its
    parameter names."""
    head = classifier_names(net)
    if not head:
        raise CheckpointError("freeze_backbone: the network has no Dense classifier layer")
    for param in net.trainable_params():
        param.requires_grad = param.name in head
    return sorted(head)
