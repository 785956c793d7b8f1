"""Loading a checkpoint into a network built from the config saved beside it, with clear errors."""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
from mindspore import nn

from ms_resnet.config import Config, build_config
from ms_resnet.errors import CheckpointError


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
    return build_config(config_path, overrides)


# Scalars saved beside the weights (position, accuracy, data-parallel workers), see
# callbacks.EvalCheckpoint.
_EXTRA_KEYS = ("epoch", "step", "loss_sum", "accuracy", "best_accuracy", "best_epoch",
               "workers")


def _extras(saved: dict) -> dict:
    return {key: saved[key].asnumpy().item() for key in _EXTRA_KEYS if key in saved}


def load_weights(net: nn.Cell, ckpt: Path) -> dict:
    """Load `ckpt` into `net`; return the checkpoint's extra entries (epoch, accuracy, ...)."""
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: checkpoint file not found")
    try:
        saved = ms.load_checkpoint(str(ckpt))
    except (ValueError, RuntimeError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{ckpt}: not a readable MindSpore checkpoint "
                              f"(truncated or another format?): {first_line}") from None
    for param in net.get_parameters():
        if param.name not in saved:
            raise CheckpointError(f"{ckpt}: has no parameter '{param.name}'; it was saved "
                                  "from another model (check --model / the config)")
        shape = tuple(saved[param.name].shape)
        if shape != tuple(param.shape):
            raise CheckpointError(f"{ckpt}: parameter '{param.name}' has shape {shape} in the "
                                  f"checkpoint but {tuple(param.shape)} in the network "
                                  "(another model, num_classes or in_channels?)")
    ms.load_param_into_net(net, saved, strict_load=True)
    return _extras(saved)


def read_extras(ckpt: Path) -> dict:
    """The position and accuracy entries saved with a checkpoint ({} if it cannot be read)."""
    try:
        saved = ms.load_checkpoint(str(ckpt), choice_func=lambda name: name in _EXTRA_KEYS)
    except (ValueError, RuntimeError, OSError):
        return {}
    return _extras(saved)


def load_training_state(train_network: nn.Cell, ckpt: Path) -> dict:
    """Load a last.ckpt (network + optimizer state) into the training network; return its
    position and best accuracy so far."""
    extras = load_weights(train_network, ckpt)
    missing = [key for key in ("epoch", "step", "best_accuracy") if key not in extras]
    if missing:
        raise CheckpointError(f"{ckpt}: not a resumable checkpoint (no {', '.join(missing)}); "
                              "--resume takes the last.ckpt written during training")
    return extras
