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
from typing import Any, Callable

import yaml

from ms_resnet.errors import ConfigError, UserError
from ms_resnet.files import read_yaml, write_text

_NULLS = {"null", "none", "~", ""}
AMP_LEVELS = ["O0", "O1", "O2", "O3"]
JIT_LEVELS = ["O0", "O1", "O2"]
DEVICE_TARGETS = ["CPU", "GPU", "Ascend"]
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
    from ms_resnet.data import DATASETS, FOLDER
    return [*sorted(DATASETS), FOLDER]


def _augmentations() -> list[str]:
    from ms_resnet.data import AUGMENTATIONS
    return list(AUGMENTATIONS)


@dataclasses.dataclass
class Config:
    # system
    device_target: str = _field("CPU", "device to run on", DEVICE_TARGETS)
    mode: str = _field("graph", "MindSpore execution mode", ["graph", "pynative"])
    seed: int = _field(42, "random seed: the same seed gives the same metrics", low=0,
                       high=2**32 - 1)
    num_parallel_workers: int = _field(2, "dataset map workers (at most one per CPU is used)",
                                       low=1)
    distribute: bool = _field(False, "data-parallel training under msrun "
                              "(see scripts/run_distribute_train.sh)")
    device_id: int | None = _field(None, "device number on this machine (default: $DEVICE_ID, "
                                   "else 0); under --distribute msrun gives each worker its own",
                                   low=0)
    # device (see docs/devices.md)
    amp_level: str = _field("O0", "mixed precision (mindspore amp): O0 = fp32, O1 = fp16 convs "
                            "and matmuls, O2 = fp16 except BatchNorm, O3 = all fp16; weights, "
                            "checkpoints and exports stay fp32", AMP_LEVELS)
    loss_scale: str = _field("none", "loss scaling of fp16 gradients: fixed = "
                             "FixedLossScaleManager(drop_overflow_update=False), dynamic = "
                             "DynamicLossScaleManager (GPU/Ascend only)",
                             ["none", "fixed", "dynamic"])
    loss_scale_value: float = _field(1024.0, "the fixed loss scale, or the dynamic one's "
                                     "starting value", low=1.0)
    dataset_sink_mode: bool = _field(False, "feed the device through MindSpore's dataset "
                                     "channel, one sink per epoch (GPU/Ascend; MindSpore trains "
                                     "without sinking on CPU)")
    sink_size: int = _field(-1, "steps per sink: -1 = the whole epoch (the only value "
                            "supported: evaluation and checkpoints happen once per epoch)",
                            low=-1)
    jit_level: str | None = _field(None, "graph compilation level (mindspore JitConfig): O0 = "
                                   "kernel by kernel, O1 = with operator fusion, O2 = whole "
                                   "graph on the device (Ascend only; deprecated by MindSpore "
                                   "2.9) (default: MindSpore's choice)", JIT_LEVELS)
    # dataset
    dataset: str = _field("mnist", "dataset name; 'folder' = your own images in "
                          "DATA_DIR/train/<class>/ (see docs/own_images.md)", _dataset_names)
    data_dir: str | None = _field(
        None, "dataset folder (default: $MS_RESNET_DATA/<dataset>, else ./data/<dataset>)")
    in_channels: int | None = _field(
        None, "folder dataset: images are converted to 1 (grey) or 3 (RGB) channels "
        "(default 3; built-in datasets have their own)", low=1, high=3)
    image_size: int | None = _field(
        None, "folder dataset: images are resized to image_size x image_size (default 32)",
        low=8)
    classes: list[str] | None = _field(  # noqa: RUF009 - the default is None
        None, "folder dataset: class names, filled in from the folder names (sorted) when "
        "training starts and saved with the run")
    mean: list[float] | None = _field(  # noqa: RUF009 - the default is None
        None, "folder dataset: per-channel mean on the 0..1 scale, e.g. 0.5,0.5,0.5 (default: "
        "computed once from the training images and cached)")
    std: list[float] | None = _field(  # noqa: RUF009 - the default is None
        None, "folder dataset: per-channel std on the 0..1 scale (default: computed with mean)")
    val_split: float = _field(0.1, "folder dataset without test/ or val/: part of train/ held "
                              "out for testing (seeded, the same every run)", low=0.0, high=1.0,
                              high_open=True)
    augmentation: str | None = _field(
        None, "folder dataset: training augmentation (default crop; augment: false = none)",
        _augmentations)
    eval_crop: float = _field(1.0, "folder dataset: evaluate on the centre image_size square "
                              "after resizing the shorter side to image_size / eval_crop "
                              "(ImageNet: 0.875); 1 = resize the whole image", low=0.0,
                              high=1.0, low_open=True)
    num_samples: int | None = _field(None, "use only the first N training images (a folder: "
                                     "a seeded random N; default: all)",
                                     low=1)
    eval_num_samples: int | None = _field(None, "use only the first N test images (default: all)",
                                          low=1)
    augment: bool = _field(True, "training augmentation (random crop; flip where valid; a "
                           "folder: the augmentation key)")
    crop_padding: int | None = _field(None, "pixels of padding around the image before the "
                                      "random crop (default: the dataset's; CIFAR and folders: "
                                      "1/8 of the side, 4 px at 32)", low=0)
    random_erasing: float = _field(0.0, "probability of replacing a random rectangle of each "
                                   "training image with noise (Zhong et al. 2017); needs augment",
                                   low=0.0, high=1.0)
    batch_size: int = _field(128, "training batch size (per worker under --distribute)", low=1)
    eval_batch_size: int = _field(256, "evaluation batch size", low=1)
    eval_flip: bool = _field(False, "evaluate (and export) the mean of the logits of each image "
                             "and its mirror image; only for datasets whose classes survive a flip")
    eval_translate: bool = _field(False, "with eval_flip: average in (1/4 each) the flip-averaged "
                                  "logits of the image shifted 1 px up-left and 1 px down-right "
                                  "(airbench's test-time augmentation; 3x the evaluation time)")
    # model
    model: str = _field("resnet20", "network name (see `ms-resnet models`)", _model_names)
    shortcut: str | None = _field(
        None, "shortcut for changing shapes: A = zero padding, B = 1x1 conv (default: the model's);"
        " none = no shortcut at all, a plain network (He et al. 2016's baseline)",
        ["A", "B", "none"])
    zero_init_residual: bool = _field(False, "start each residual branch's last BN gamma at 0")
    whiten_stem: bool = _field(False, "set the first convolution (a 2x2 conv, as pool_resnet8's) "
                               "to the whitening of the training images' 2x2 patches and keep "
                               "its weights frozen (Jordan 2024)")
    dirac_init: bool = _field(False, "start every 3x3 conv as the identity on its first "
                              "in_channels filters (airbench's identity init, Jordan 2024)")
    bn_momentum: float = _field(0.9, "BatchNorm running statistics: running = bn_momentum x "
                                "running + (1 - bn_momentum) x batch (MindSpore's convention; "
                                "PyTorch's momentum is 1 - this)", low=0.0, high=1.0,
                                low_open=True, high_open=True)
    freeze_bn_gamma: bool = _field(False, "keep every BatchNorm gamma (scale) at 1; only the "
                                   "beta (bias) trains (airbench)")
    stem_pool_padding: str = _field(
        "symmetric", "resnet18-152 above 64 px: how the stem's max-pool pads; symmetric = 1 px "
        "each side (torchvision, timm), same = pad_mode same (MindCV); set by ms-resnet convert",
        ["symmetric", "same"])
    pretrained: str | None = _field(
        None, "initialise from weights of the same model (fine-tuning): an ms_resnet checkpoint "
        "or run folder, a MindCV .ckpt, a torchvision .pth, a .safetensors file, or a published "
        "name (torchvision:resnet50, mindcv:resnet50, timm:resnet50.a1_in1k); parameters of "
        "another shape (classifier, stem) are re-initialised")
    freeze_backbone: bool = _field(False, "with pretrained: train the classifier (last Dense "
                                   "layer) only")
    freeze_epochs: float = _field(0.0, "with pretrained: train only the classifier for this "
                                  "many epochs first (the backbone's learning rate is 0), then "
                                  "everything", low=0.0)
    backbone_lr: float = _field(1.0, "learning rate of every layer but the classifier, as a "
                                "fraction of lr (fine-tuning: e.g. 0.1); 1 = the same", low=0.0,
                                high=1.0, low_open=True)
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
    bn_beta_lr: float = _field(1.0, "learning rate of the BatchNorm betas (biases) as a "
                               "multiple of lr (airbench: 64, with freeze_bn_gamma)", low=0.0,
                               low_open=True)
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
    # "none" is a value where a key offers it as a choice (loss_scale, lr_scaling), else null.
    null_word = isinstance(raw, str) and raw.strip().lower() in _NULLS
    if raw is None or (null_word and raw.strip() not in (_choices(field) or [])):
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required ({type_name})")
    text = str(raw).strip()
    if type_name.startswith("list["):
        return _parse_list(where, type_name, raw)
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


def _parse_list(where: str, type_name: str, raw: Any) -> list:
    """A YAML list, or comma-separated text on the command line."""
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    items = [str(item).strip() for item in items]
    if not items or not all(items):
        raise ConfigError(f"{where}: expected a list of values, got {raw!r}")
    if type_name == "list[str]":
        return items
    try:
        values = [float(item) for item in items]
    except ValueError:
        values = [math.nan]
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{where}: expected numbers separated by commas, got {raw!r}")
    return values


def _check_range(where: str, field: dataclasses.Field, value: Any) -> None:
    choices = _choices(field)
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of: {', '.join(choices)}")
    _check_bounds(where, value, field.metadata)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_bounds(where: str, value: Any, meta: Any) -> None:
    low, high = meta["low"], meta["high"]
    too_low = low is not None and (value <= low if meta["low_open"] else value < low)
    too_high = high is not None and (value >= high if meta["high_open"] else value > high)
    if too_low or too_high:
        lo = "" if low is None else ("> " if meta["low_open"] else ">= ") + _number(low)
        hi = "" if high is None else ("< " if meta["high_open"] else "<= ") + _number(high)
        allowed = " and ".join(part for part in (lo, hi) if part)
        raise ConfigError(f"{where}: must be {allowed}, got {value!r}")


def number_option(kind: Callable[[str], Any], low: float | None = None,
                  high: float | None = None) -> Callable[[str], Any]:
    """An argparse `type` for a command's own numeric option (eval's --batch_size, ...),
    checked by the same rule as the config keys; a bad value is one line naming the option."""
    bounds = {"low": low, "high": high, "low_open": False, "high_open": False}

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        try:
            _check_bounds("", value, bounds)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None
        return value

    return convert


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
        data = read_yaml(path) or {}
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected 'key: value' lines, got a {type(data).__name__}")
    values = {}
    for key, raw in data.items():
        if key not in FIELDS:
            raise _unknown_key(str(key), str(path))
        values[key] = parse_value(key, raw, str(path))
    return values


def build_config(config_path: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, training: bool = True) -> Config:
    """Defaults, then the YAML file, then overrides (already typed or command-line strings).

    With `training`, combinations of device keys that MindSpore refuses (or that would break
    training) are refused now, before anything runs; inference only uses the device itself."""
    values: dict[str, Any] = load_yaml(config_path) if config_path else {}
    for key, raw in (overrides or {}).items():
        if key not in FIELDS:
            raise _unknown_key(key, "command line")
        values[key] = parse_value(key, raw, "command line")
    config = Config(**values)

    def source(key: str) -> str:
        return "command line" if key in (overrides or {}) else str(config_path)

    _check_dataset_keys(config, source)
    if config.eval_flip and config.dataset != "folder":
        from ms_resnet.data import get_dataset_info

        if not get_dataset_info(config.dataset).hflip:
            raise ConfigError(f"{source('eval_flip')}: eval_flip: {config.dataset} images change "
                              "meaning when mirrored (e.g. digits); expected false")
    if config.eval_translate and not config.eval_flip:
        raise ConfigError(f"{source('eval_translate')}: eval_translate: true averages "
                          "flip-averaged views; expected eval_flip: true with it")
    if config.random_erasing and not config.augment:
        raise ConfigError(f"{source('random_erasing')}: random_erasing: {config.random_erasing} "
                          "needs augment: true; expected 0.0 without augmentation")
    if training:
        _check_device_keys(config, source)
    if config.shortcut == "none" and config.zero_init_residual:
        where = source("zero_init_residual" if "zero_init_residual" in (overrides or {})
                       else "shortcut")
        raise ConfigError(f"{where}: zero_init_residual: true needs a shortcut; with shortcut: "
                          "none (a plain network) every block would start at zero; expected false")
    if config.freeze_bn_gamma and config.zero_init_residual:
        where = source("zero_init_residual" if "zero_init_residual" in (overrides or {})
                       else "freeze_bn_gamma")
        raise ConfigError(f"{where}: zero_init_residual: true sets gammas to 0 that "
                          "freeze_bn_gamma: true would keep at 0; expected one of them false")
    if config.ckpt_dir is None:
        name = Path(config_path).stem if config_path else config.dataset
        config.ckpt_dir = str(Path("ckpt") / name)
    return config


def _check_device_keys(config: Config, source: Callable[[str], str]) -> None:
    """Refuse, as one line naming the keys and what is allowed, the device combinations that
    MindSpore refuses or that break a part of training (measured on CPU, see docs/devices.md)."""
    device = config.device_target
    if config.loss_scale == "dynamic" and device == "CPU":
        raise ConfigError(f"{source('loss_scale')}: loss_scale: dynamic is refused by MindSpore "
                          "on device_target CPU; expected none or fixed there")
    if config.jit_level == "O2" and device != "Ascend":
        raise ConfigError(f"{source('jit_level')}: jit_level: O2 (whole graph on the device) "
                          f"exists only on device_target Ascend; expected O0 or O1 on {device}")
    if config.jit_level and config.mode != "graph":
        raise ConfigError(f"{source('jit_level')}: jit_level applies to mode: graph only; "
                          f"expected no jit_level with mode: {config.mode}")
    if config.sink_size != -1:
        raise ConfigError(f"{source('sink_size')}: sink_size: {config.sink_size} is not "
                          "supported; expected -1 (one sink per epoch, as ModelZoo and MindCV): "
                          "with sink_size > 0 MindSpore counts each sink as an epoch, and "
                          "evaluation and checkpoints happen once per epoch")
    if config.ema_decay and config.dataset_sink_mode and device != "CPU":
        raise ConfigError(f"{source('ema_decay')}: ema_decay: {config.ema_decay} needs an "
                          f"update after every step, which dataset_sink_mode on {device} does "
                          "not give (one callback per epoch); expected ema_decay: 0 or "
                          "dataset_sink_mode: false")
    if config.device_id is not None and config.distribute:
        raise ConfigError(f"{source('device_id')}: device_id: under distribute msrun gives "
                          "each worker its own device; expected no device_id")


def _check_dataset_keys(config: Config, source: Any) -> None:
    """Keys of the folder dataset, and fine-tuning keys, that must fit together."""
    from ms_resnet.data import get_dataset_info

    for key in ("freeze_backbone", "freeze_epochs"):
        if getattr(config, key) and not config.pretrained:
            raise ConfigError(f"{source(key)}: {key} needs pretrained: a checkpoint to take "
                              "the backbone from")
    if config.freeze_epochs >= config.epochs:
        raise ConfigError(f"{source('freeze_epochs')}: freeze_epochs: {config.freeze_epochs} "
                          f"leaves no epoch of the {config.epochs} to train the backbone; "
                          "expected fewer than epochs (or freeze_backbone: true)")
    if config.dataset != "folder":
        info = get_dataset_info(config.dataset)
        own = {"in_channels": info.channels, "image_size": info.image_size,
               "classes": list(info.classes), "mean": list(info.mean), "std": list(info.std),
               "augmentation": None, "eval_crop": 1.0}
        for key, value in own.items():
            given = getattr(config, key)
            if given is not None and given != value:
                raise ConfigError(f"{source(key)}: {key}: {given!r} is for --dataset folder; "
                                  f"{config.dataset} has {value!r} (leave it out)")
        return
    if config.in_channels is None:
        config.in_channels = 3
    if config.in_channels not in (1, 3):
        raise ConfigError(f"{source('in_channels')}: in_channels: expected 1 (grey) or 3 (RGB), "
                          f"got {config.in_channels}")
    if config.image_size is None:
        config.image_size = 32
    if config.augmentation is None:
        config.augmentation = "crop"
    for key in ("mean", "std"):
        values = getattr(config, key)
        if values is not None and len(values) != config.in_channels:
            raise ConfigError(f"{source(key)}: {key}: expected {config.in_channels} value(s), "
                              f"one per channel, got {len(values)}")
    if config.std is not None and min(config.std) <= 0:
        raise ConfigError(f"{source('std')}: std: expected values > 0, got {config.std}")
    if (config.mean is None) != (config.std is None):
        raise ConfigError(f"{source('mean' if config.std is None else 'std')}: give both mean "
                          "and std, or neither (then both are computed)")
    if config.classes is not None and len(config.classes) < 2:
        raise ConfigError(f"{source('classes')}: classes: expected at least 2 names")


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
    write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))
