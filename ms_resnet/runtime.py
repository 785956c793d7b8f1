"""The process a model runs in: oneDNN's CPU ISA, execution mode, device, seeds and, under
--distribute, the data-parallel group. Training, evaluation, export and inference all start here.
And the reading of checkpoints, past a MindSpore memory check (`load_ckpt`)."""

from __future__ import annotations

import hashlib
import os
import platform
from typing import NamedTuple

import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn

from ms_resnet.config import Config
from ms_resnet.cpu_isa import CpuIsaChoice, choose_cpu_isa, cpu_model
from ms_resnet.device import device_id, select_device
from ms_resnet.errors import UserError


class RunContext(NamedTuple):
    rank: int
    workers: int
    cpu_isa: CpuIsaChoice


def set_up_context(config: Config) -> RunContext:
    """oneDNN's CPU ISA (before any kernel runs), execution mode, device (a missing one is a
    `DeviceError` line), every random seed
    (same seed => same metrics) and, under --distribute, the data-parallel group."""
    cpu_isa = choose_cpu_isa(config.device_target)
    mode = ms.GRAPH_MODE if config.mode == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode)
    select_device(config.device_target, device_id(config))
    # Every rank starts from the same weights only because they share the seed.
    ms.set_seed(config.seed)
    ds.config.set_seed(config.seed)
    if not config.distribute:
        return RunContext(0, 1, cpu_isa)
    from mindspore.communication import get_group_size, get_rank, init

    try:
        init()
    except RuntimeError as exc:
        if os.environ.get("MS_ROLE") == "MS_SCHED":
            # msrun's scheduler runs this script too, and its init() lasts the whole job: it
            # fails when a worker stops at any time, start-up or not (scheduler.log).
            raise UserError("msrun scheduler: the job ended with a failed worker (see the "
                            f"worker logs): {str(exc).strip().splitlines()[0]}") from None
        raise UserError("distributed start-up failed (--distribute runs under msrun: "
                        "bash scripts/run_distribute_train.sh N ...): "
                        f"{str(exc).strip().splitlines()[0]}") from None
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=get_group_size())
    return RunContext(get_rank(), get_group_size(), cpu_isa)


def parameter_digest(net: nn.Cell, trainable_only: bool = True) -> str:
    """sha256 of all trainable parameters (or all parameters, BN statistics included): equal on
    every rank of a healthy data-parallel run."""
    digest = hashlib.sha256()
    for param in net.trainable_params() if trainable_only else net.get_parameters():
        digest.update(param.name.encode())
        digest.update(param.asnumpy().tobytes())
    return digest.hexdigest()


def machine_description() -> str:
    """E.g. "2-core AMD EPYC (x86_64)": recorded with every run so numbers stay traceable."""
    return f"{os.cpu_count()}-core {cpu_model()} ({platform.machine()})"


def _available_memory() -> int | None:
    """Linux's MemAvailable: free memory plus what the kernel frees on demand (page cache)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_ckpt(path: str | os.PathLike, **options) -> dict:
    """`mindspore.load_checkpoint`, without MindSpore 2.10's false "exceeds current available
    memory": it compares a .ckpt's size with the *free* memory (os.sysconf SC_AVPHYS_PAGES),
    which leaves out the page cache. After a dataset has been read, a 241-MB resnet152
    checkpoint was refused with 230 MB free and 22 GB available. Its check is given
    MemAvailable instead, where Linux reports it."""
    from mindspore.train import serialization

    if hasattr(serialization, "_get_available_memory") and _available_memory() is not None:
        serialization._get_available_memory = _available_memory
    return ms.load_checkpoint(str(path), **options)
