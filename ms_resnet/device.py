"""The accelerator side of a run: choosing the device (with one clear line when it is missing),
and the mixed precision, loss scaling and jit level that `Model` is built with.

What MindSpore accepts on each device is checked when the config is built (config.py); this
module turns the checked keys into MindSpore's own objects."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

import mindspore as ms
from mindspore import log as ms_log
from mindspore import nn
from mindspore.amp import DynamicLossScaleManager, FixedLossScaleManager, LossScaleManager

from ms_resnet.config import Config
from ms_resnet.errors import UserError

# What to do when a device cannot be used, by device_target.
_INSTALL_HINT = {
    "GPU": "install the MindSpore GPU package with its CUDA and cuDNN (mindspore.cn/install) and "
           "check LD_LIBRARY_PATH",
    "Ascend": "install the Ascend driver and CANN toolkit and source "
              "/usr/local/Ascend/ascend-toolkit/set_env.sh (mindspore.cn/install)",
}
# The parts of MindSpore's reports that say what is missing.
_REPORTED = re.compile(r"lib\S+\.so\S* \(need by mindspore-\w+\) is not found"
                       r"|Cannot find [^.(]+(?:\(need by mindspore-\w+\))?"
                       r"|Load dynamic library: \S+ failed\. \S+: cannot open shared object file"
                       r"|This process only supports one of the \[[^\]]*\]")


class DeviceError(UserError):
    """The device asked for is not there or MindSpore cannot use it."""


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def device_id(config: Config) -> int | None:
    """The device number: the config's, else $DEVICE_ID (as ModelZoo's scripts set it), else
    MindSpore's choice (0, or under msrun one device per worker)."""
    if config.device_id is not None or config.distribute:
        return config.device_id
    return environment_device_id()


def environment_device_id() -> int | None:
    """$DEVICE_ID as a number (None when unset)."""
    raw = os.environ.get("DEVICE_ID", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise UserError(f"DEVICE_ID environment variable: expected a device number (0, 1, ...), "
                        f"got {raw!r}")
    return int(raw)


def select_device(target: str, number: int | None = None) -> None:
    """`ms.set_device`, with a missing or unusable device reported as one `DeviceError` line
    (which device, what MindSpore found missing, what to install or pass instead) instead of
    MindSpore's log lines and traceback."""
    if target == "CPU":
        try:
            ms.set_device(target)
        except RuntimeError:
            # Kernels already ran in this process (a library's model, in a notebook or a test):
            # MindSpore then refuses to set any device, and the CPU is the one running.
            if ms.get_context("device_target") != "CPU":
                raise
        return
    # MindSpore checks the device's libraries while setting it and logs what it misses: hold
    # those lines back, to put them into the one error line, or to show them if all is well.
    # Warnings are collected even under GLOG_v=3, since they tell what is missing.
    logger = ms_log._get_logger()  # pylint: disable=protected-access
    handlers, level, collect = list(logger.handlers), logger.level, _Collect()
    for handler in handlers:
        logger.removeHandler(handler)
    logger.addHandler(collect)
    logger.setLevel(min(level, logging.WARNING))
    try:
        ms.set_device(target, number)
        failure = None
    except (RuntimeError, ValueError) as exc:
        failure = str(exc)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
        for handler in handlers:
            logger.addHandler(handler)
    if failure is None:
        for record in collect.records:
            if record.levelno >= level:
                logger.handle(record)
        return
    reported = [record.getMessage() for record in collect.records] + [failure]
    # MindSpore also reports every other device's plugin that failed to load: leave those out.
    other = {"GPU": "ascend", "Ascend": "gpu"}[target]
    found = list(dict.fromkeys(match.group(0).strip() for text in reported
                               for match in _REPORTED.finditer(text)
                               if other not in match.group(0).lower()))
    what = "; ".join(found) if found else failure.strip().splitlines()[0]
    where = f" {number}" if number is not None else ""
    raise DeviceError(f"device_target {target}{where} cannot be used here: MindSpore reports: "
                      f"{what}. To use it, {_INSTALL_HINT[target]}; or pass --device_target CPU")


def loss_scale_manager(config: Config) -> LossScaleManager | None:
    """The `loss_scale` key as MindSpore's manager. Fixed never skips a step
    (drop_overflow_update=False, the only form CPU accepts; ModelZoo's ResNet uses it on every
    device), so the optimizer divides the scale out (see optim.create_optimizer)."""
    if config.loss_scale == "fixed":
        return FixedLossScaleManager(config.loss_scale_value, drop_overflow_update=False)
    if config.loss_scale == "dynamic":
        return DynamicLossScaleManager(config.loss_scale_value, scale_factor=2, scale_window=2000)
    return None


def model_options(config: Config) -> dict:
    """The keyword arguments of `mindspore.train.Model` for mixed precision and loss scaling.

    loss_scale_manager is always given: left out, amp O2 would pick a dynamic one of its own,
    which CPU refuses."""
    return {"amp_level": config.amp_level, "loss_scale_manager": loss_scale_manager(config)}


@contextlib.contextmanager
def amp_workspace(config: Config) -> Iterator[None]:
    """Where `Model` is built: amp O1 (MindSpore's rewrite) writes the network's rewritten
    source into ./rewritten_network/ and imports it from there, so under O1 that happens in a
    folder of its own that lasts as long as the process, not in the user's working folder."""
    if config.amp_level != "O1":
        yield
        return
    folder = tempfile.mkdtemp(prefix="ms_resnet_amp_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def apply_jit_level(cell: nn.Cell, config: Config) -> nn.Cell:
    """Compile `cell` (and what `Model` wraps around it) at the config's jit_level."""
    if config.jit_level:
        cell.set_jit_config(ms.JitConfig(jit_level=config.jit_level))
    return cell


def device_summary(config: Config) -> str:
    """What the run does beyond plain float32 training, for its first log line
    (e.g. ", amp O2, fixed loss scale 1024, dataset sink mode")."""
    parts = []
    if config.amp_level != "O0":
        parts.append(f"amp {config.amp_level}")
    if config.loss_scale != "none":
        parts.append(f"{config.loss_scale} loss scale {config.loss_scale_value:g}")
    if config.dataset_sink_mode:
        fallback = " (MindSpore trains without sinking on CPU)"
        parts.append("dataset sink mode" + (fallback if config.device_target == "CPU" else ""))
    if config.jit_level:
        parts.append(f"jit_level {config.jit_level}")
    return "".join(f", {part}" for part in parts)
