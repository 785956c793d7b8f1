"""Training configuration: defaults, YAML files, `--key value` overrides and validation.

A config is flat: every key is a field of `Config`. YAML files group keys under comment headers
(system / dataset / model / optimizer / schedule / checkpoint) only for readability.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ms_resnet.errors import ConfigError

_NULLS = {"null", "none", "~", ""}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _field(default: Any, help: str, choices: Sequence[str] | None = None,
           low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> Any:
    meta = {"help": help, "choices": choices, "low": low, "high": high,
            "low_open": low_open, "high_open": high_open}
    return dataclasses.field(default=default, metadata=meta)


def _model_names() -> list[str]:
    from ms_resnet.models import list_models
    return list_models()


def _dataset_names() -> list[str]:
    from ms_resnet.data import DATASETS
    return sorted(DATASETS)


@dataclasses.dataclass
class Config:
    # system
    device_target: str = _field("CPU", "device to run on", ["CPU", "GPU", "Ascend"])
    mode: str = _field("graph", "MindSpore execution mode", ["graph", "pynative"])
    seed: int = _field(42, "random seed: the same seed gives the same metrics", low=0)
    num_parallel_workers: int = _field(2, "dataset map workers", low=1)
    distribute: bool = _field(False, "data-parallel training under msrun "
                              "(see scripts/run_distribute_train.sh)")
    # dataset
    dataset: str = _field("mnist", "dataset name", _dataset_names)
    data_dir: str | None = _field(
        None, "dataset folder (default: $MS_RESNET_DATA/<dataset>, else ./data/<dataset>)")
    num_samples: int | None = _field(None, "use only the first N training images (default: all)",
                                     low=1)
    eval_num_samples: int | None = _field(None, "use only the first N test images (default: all)",
                                          low=1)
    augment: bool = _field(True, "training augmentation (random crop; flip where valid)")
    random_erasing: float = _field(0.0, "probability of replacing a random rectangle of each "
                                   "training image with noise (Zhong et al. 2017); needs augment",
                                   low=0.0, high=1.0)
    batch_size: int = _field(128, "training batch size (per worker under --distribute)", low=1)
    eval_batch_size: int = _field(256, "evaluation batch size", low=1)
    eval_flip: bool = _field(False, "evaluate (and export) the mean of the logits of each image "
                             "and its mirror image; only for datasets whose classes survive a flip")
    # model
    model: str = _field("resnet20", "network name (see `ms-resnet models`)", _model_names)
    shortcut: str | None = _field(
        None, "shortcut for changing shapes: A = zero padding, B = 1x1 conv (default: the model's);"
        " none = no shortcut at all, a plain network (He et al. 2016's baseline)",
        ["A", "B", "none"])
    zero_init_residual: bool = _field(False, "start each residual branch's last BN gamma at 0")
    # optimizer
    optimizer: str = _field("momentum", "optimizer", ["momentum", "adam"])
    lr: float = _field(0.1, "peak learning rate", low=0.0, low_open=True)
    momentum: float = _field(0.9, "momentum (SGD) or beta1 (Adam)", low=0.0, high=1.0,
                             high_open=True)
    nesterov: bool = _field(True, "Nesterov momentum (SGD only)")
    lr_scaling: str = _field("linear", "under --distribute: 'linear' multiplies lr by the "
                             "number of workers (global batch = workers x batch_size)",
                             ["linear", "none"])
    weight_decay: float = _field(5e-4, "L2 weight decay on conv/dense weights", low=0.0)
    label_smoothing: float = _field(0.0, "label smoothing of the training loss", low=0.0,
                                    high=1.0, high_open=True)
    # schedule
    epochs: int = _field(4, "number of training epochs", low=1)
    lr_schedule: str = _field("onecycle", "learning-rate schedule",
                              ["constant", "cosine", "multistep", "onecycle"])
    warmup_epochs: float = _field(0.0, "linear warm-up epochs (not for onecycle)", low=0.0)
    ema_decay: float = _field(0.0, "evaluate, save and export an exponential moving average of "
                              "the weights with this decay per step (e.g. 0.999); 0 = off",
                              low=0.0, high=1.0, high_open=True)
    # checkpoint
    ckpt_dir: str | None = _field(None, "output folder (default: ckpt/<config name>)")
    export_mindir: bool = _field(True, "export best.ckpt to best.mindir (+ .json) after training")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _base_type(field: dataclasses.Field) -> tuple[str, bool]:
    """Return the field's scalar type name and whether it may be null."""
    annotation = str(field.type)
    return annotation.removesuffix(" | None"), annotation.endswith(" | None")


def _choices(field: dataclasses.Field) -> list[str] | None:
    choices = field.metadata["choices"]
    return list(choices()) if callable(choices) else choices


def parse_value(key: str, raw: Any, source: str) -> Any:
    """Convert `raw` (a YAML value or a command-line string) to the type of config key `key`."""
    field = FIELDS[key]
    type_name, optional = _base_type(field)
    where = f"{source}: {key}"
    # A choice spelled like a null (shortcut: none) is that choice, not the default.
    is_choice = isinstance(raw, str) and raw.strip() in (_choices(field) or ())
    if raw is None or (not is_choice and isinstance(raw, str) and raw.strip().lower() in _NULLS):
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required ({type_name})")
    text = str(raw).strip()
    if type_name == "bool":
        if isinstance(raw, bool):
            return raw
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    if type_name == "int":
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {text!r}")
        try:
            value: Any = int(raw) if isinstance(raw, (int, float)) else int(text)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {text!r}") from None
    elif type_name == "float":
        try:
            value = float(text) if not isinstance(raw, bool) else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a number, got {text!r}")
    else:
        value = text
    _check_range(where, field, value)
    return value


def _check_range(where: str, field: dataclasses.Field, value: Any) -> None:
    choices = _choices(field)
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of: {', '.join(choices)}")
    meta = field.metadata
    low, high = meta["low"], meta["high"]
    too_low = low is not None and (value <= low if meta["low_open"] else value < low)
    too_high = high is not None and (value >= high if meta["high_open"] else value > high)
    if too_low or too_high:
        lo = "" if low is None else ("> " if meta["low_open"] else ">= ") + f"{low:g}"
        hi = "" if high is None else ("< " if meta["high_open"] else "<= ") + f"{high:g}"
        allowed = " and ".join(part for part in (lo, hi) if part)
        raise ConfigError(f"{where}: must be {allowed}, got {value!r}")


def _unknown_key(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(f"{source}: unknown key '{key}'; {hint}valid keys: {', '.join(FIELDS)}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file into a {key: typed value} dict, rejecting unknown keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected 'key: value' lines, got a {type(data).__name__}")
    values = {}
    for key, raw in data.items():
        if key not in FIELDS:
            raise _unknown_key(str(key), str(path))
        values[key] = parse_value(key, raw, str(path))
    return values


def build_config(config_path: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file, then overrides (already typed or command-line strings)."""
    values: dict[str, Any] = load_yaml(config_path) if config_path else {}
    for key, raw in (overrides or {}).items():
        if key not in FIELDS:
            raise _unknown_key(key, "command line")
        values[key] = parse_value(key, raw, "command line")
    config = Config(**values)

    def source(key: str) -> str:
        return "command line" if key in (overrides or {}) else str(config_path)

    if config.eval_flip:
        from ms_resnet.data import get_dataset_info

        if not get_dataset_info(config.dataset).hflip:
            raise ConfigError(f"{source('eval_flip')}: eval_flip: {config.dataset} images change "
                              "meaning when mirrored (e.g. digits); expected false")
    if config.random_erasing and not config.augment:
        raise ConfigError(f"{source('random_erasing')}: random_erasing: {config.random_erasing} "
                          "needs augment: true; expected 0.0 without augmentation")
    if config.shortcut == "none" and config.zero_init_residual:
        where = source("zero_init_residual" if "zero_init_residual" in (overrides or {})
                       else "shortcut")
        raise ConfigError(f"{where}: zero_init_residual: true needs a shortcut; with shortcut: "
                          "none (a plain network) every block would start at zero; expected false")
    if config.ckpt_dir is None:
        name = Path(config_path).stem if config_path else config.dataset
        config.ckpt_dir = str(Path("ckpt") / name)
    return config


class CommandParser(argparse.ArgumentParser):
    """argparse with whole option names only, and errors as one `ConfigError` line instead of
    the usage text plus a message."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def add_config_arguments(parser: argparse.ArgumentParser, default_config: str | None) -> None:
    """Add `--config` and one `--key VALUE` option per config key (values checked later)."""
    parser.add_argument("--config", default=default_config,
                        help=f"YAML config file (default: {default_config})")
    group = parser.add_argument_group(
        "config keys (each overrides the config file; the defaults shown apply to keys the "
        "file leaves out)")
    for name, field in FIELDS.items():
        choices = field.metadata["choices"]
        shown = "" if callable(choices) or not choices else f" {{{','.join(choices)}}}"
        default = "" if field.default is None else f" [default: {field.default}]"
        group.add_argument(f"--{name}", default=argparse.SUPPRESS, metavar="VALUE",
                           help=f"{field.metadata['help']}{shown}{default}")


def parse_config_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                      ) -> tuple[argparse.Namespace, dict[str, str]]:
    """Parse a command line made by `add_config_arguments`: the namespace, and the config keys
    given on it; an unknown `--key` raises ConfigError naming the closest valid key."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        option = next((u for u in unknown if u.startswith("--")), unknown[0])
        key = option.removeprefix("--").split("=", 1)[0]
        if option.startswith("--") and key not in FIELDS:
            raise _unknown_key(key, "command line")
        raise ConfigError(f"command line: unexpected argument {option!r}")
    return args, {k: v for k, v in vars(args).items() if k in FIELDS}


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
