"""oneDNN's CPU instruction set for MindSpore's CPU kernels, chosen by measuring once per CPU.

MindSpore 2.10 bundles oneDNN 3.10.1. On an AVX-512 CPU (measured on a 2-core AMD EPYC Zen 5)
that oneDNN runs every NCHW convolution as `jit_uni_ncsp:conv+ref`, a reference kernel of about
1 GFLOPS; capped at AVX2 it picks `x64:gemm:jit` at 67 GFLOPS (benchmarks/cpu_isa.py). Whether
Intel's AVX-512 parts take the same path cannot be told from the CPU's name, so no vendor rule
decides: two
short subprocesses time one convolution, once with oneDNN's own choice and once capped at AVX2,
and the cap is applied only where it is clearly faster. A machine where AVX-512 is fast keeps
it. The verdict is cached per CPU model, CPU flags and MindSpore version (a few seconds, once).

oneDNN reads `ONEDNN_MAX_CPU_ISA` once, when it creates its first primitive, so
`choose_cpu_isa()` must run before MindSpore's first CPU kernel; child processes (msrun workers,
dataset workers) inherit the variable.

- A user's own `ONEDNN_MAX_CPU_ISA` or `DNNL_MAX_CPU_ISA` always wins.
- `MS_RESNET_CPU_ISA=off` keeps oneDNN's own choice (`auto`, the default, measures).
- Nothing happens on CPUs without AVX-512, off x86, or for GPU/Ascend runs.

This file uses only the standard library: the XiHe app (inference/app.py) imports it as it is.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SWITCH = "MS_RESNET_CPU_ISA"
ONEDNN_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# Set beside ONEDNN_MAX_CPU_ISA when ms_resnet chose it, so that a child process can tell its
# parent's choice from the user's own setting.
CHOSEN_MARK = "MS_RESNET_CPU_ISA_CHOSEN"
CAPPED_ISA = "AVX2"
# Cap only for a clear win: timing noise must never cap a machine where AVX-512 is fast.
REQUIRED_SPEED_UP = 1.5
PROBE_TIMEOUT_S = 120

# One 32->32 3x3 convolution on BATCHx32x28x28 (116 MFLOP at batch 8: 0.1 s on the reference
# kernel); the best of 3 calls after one untimed call.
_PROBE = r"""
import sys
import timeit
import mindspore as ms
import numpy as np
ms.set_context(mode=ms.PYNATIVE_MODE)
ms.set_device("CPU")
conv = ms.nn.Conv2d(32, 32, 3, pad_mode="same", has_bias=False)
batch = int(sys.argv[1])
x = ms.Tensor(np.random.default_rng(0).random((batch, 32, 28, 28), np.float32))
conv(x).asnumpy()
best = min(timeit.repeat(lambda: conv(x).asnumpy(), number=1, repeat=3))
print("GFLOPS", 2 * 9 * 32 * 32 * 28 * 28 * batch / best / 1e9)
"""


class CpuIsaError(ValueError):
    """A bad MS_RESNET_CPU_ISA value: the ms-resnet commands print it as one line."""


@dataclass
class CpuIsaChoice:
    """What was decided: `isa` is the cap ms_resnet set (None: oneDNN's own choice)."""

    isa: str | None
    reason: str
    gflops: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One phrase for the training header, e.g. 'AVX2 (measured: ...)'."""
        return f"{self.isa or 'oneDNN default'} ({self.reason})"


def _cpuinfo(field: str) -> str | None:
    """The first `field: value` of /proc/cpuinfo (None where there is none, e.g. off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith(field)), None)
    except OSError:
        return None


def cpu_flags() -> set[str]:
    return set((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    """E.g. "AMD EPYC"."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _mindspore_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mindspore")
    except PackageNotFoundError:
        return "unknown"


def cache_file() -> Path:
    root = os.environ.get("MS_RESNET_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "ms_resnet"
    return base / "cpu_isa.json"


def cache_key(flags: set[str]) -> str:
    import hashlib

    flag_digest = hashlib.sha1(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return f"{cpu_model()} | flags {flag_digest} | mindspore {_mindspore_version()}"


def measure_conv_gflops(isa: str | None, batch: int = 8) -> float:
    """GFLOPS of the probe convolution in a fresh process capped at `isa` (None: no cap)."""
    env = {k: v for k, v in os.environ.items() if k not in (*ONEDNN_VARIABLES, CHOSEN_MARK)}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    env["GLOG_v"] = "3"
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(batch)], env=env,
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the probe took more than {PROBE_TIMEOUT_S} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("GFLOPS ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the probe failed (exit {done.returncode}: {tail})")
    return float(lines[-1].split()[1])


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass  # an unwritable cache costs a new probe next time, nothing else


class _CacheLock:
    """Serialises the probe between processes (msrun workers start together), where flock
    exists; elsewhere each process may probe for itself."""

    def __init__(self, path: Path) -> None:
        self.path, self.handle = path.with_name(path.name + ".lock"), None

    def __enter__(self) -> None:
        try:
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a")  # closed in __exit__
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        except (ImportError, OSError):
            self.handle = None

    def __exit__(self, *exc: object) -> None:
        if self.handle:
            self.handle.close()


def _measured_choice(flags: set[str]) -> CpuIsaChoice:
    path, key = cache_file(), cache_key(flags)
    with _CacheLock(path):
        entry = _read_cache(path).get(key)
        if not entry:
            print(f"ms_resnet: timing oneDNN's convolution on this CPU once, capped at "
                  f"{CAPPED_ISA} and not (cached in {path}; {SWITCH}=off skips this)",
                  file=sys.stderr, flush=True)
            try:
                gflops = {"default": measure_conv_gflops(None),
                          CAPPED_ISA: measure_conv_gflops(CAPPED_ISA)}
            except RuntimeError as exc:
                return CpuIsaChoice(None, f"could not measure: {exc}")
            faster = gflops[CAPPED_ISA] >= REQUIRED_SPEED_UP * gflops["default"]
            entry = {"isa": CAPPED_ISA if faster else None, "gflops": gflops,
                     "measured": time.strftime("%Y-%m-%d")}
            _write_cache(path, {**_read_cache(path), key: entry})
    gflops = entry["gflops"]
    figures = f"conv {gflops['default']:.1f} GFLOPS by default, {gflops[CAPPED_ISA]:.1f} at " \
              f"{CAPPED_ISA}"
    return CpuIsaChoice(entry["isa"], f"measured on this CPU: {figures}; {SWITCH}=off "
                        "disables", gflops)


def choose_cpu_isa(device_target: str = "CPU") -> CpuIsaChoice:
    """Decide oneDNN's ISA cap for this process (and its children) and set it; call before
    MindSpore's first CPU kernel. Raises CpuIsaError for a bad MS_RESNET_CPU_ISA value."""
    switch = os.environ.get(SWITCH, "auto").strip().lower()
    if switch not in ("auto", "off"):
        raise CpuIsaError(f"{SWITCH}={os.environ[SWITCH]!r}: expected auto or off")
    ours = os.environ.get(CHOSEN_MARK)
    for name in ONEDNN_VARIABLES:
        value = os.environ.get(name)
        if value and not (name == "ONEDNN_MAX_CPU_ISA" and value == ours):
            return CpuIsaChoice(value, f"{name} set by you")
    # From here on only ms_resnet's own earlier choice (a parent's) may be in the environment.
    if ours:
        os.environ.pop("ONEDNN_MAX_CPU_ISA", None)
        os.environ.pop(CHOSEN_MARK, None)
    if device_target != "CPU":
        return CpuIsaChoice(None, f"not applied on {device_target}")
    if switch == "off":
        return CpuIsaChoice(None, f"{SWITCH}=off")
    flags = cpu_flags()
    if platform.machine().lower() not in ("x86_64", "amd64") or "avx512f" not in flags:
        return CpuIsaChoice(None, "no AVX-512 on this CPU, nothing to choose")
    choice = _measured_choice(flags)
    if choice.isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = os.environ[CHOSEN_MARK] = choice.isa
    return choice


if __name__ == "__main__":
    print(choose_cpu_isa().summary())
