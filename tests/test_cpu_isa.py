"""oneDNN's CPU ISA choice (ms_resnet/cpu_isa.py): the decision rules with a stand-in probe, and
the real entry points with ONEDNN_VERBOSE=1, where no convolution may run on a reference kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from ms_resnet import cpu_isa
from tests.conftest import run_command

AVX512 = {"sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"}
AVX2_ONLY = {"sse4_1", "avx", "avx2", "fma"}
OUR_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", cpu_isa.CHOSEN_MARK, cpu_isa.SWITCH)


@pytest.fixture()
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A clean environment, an empty cache and a stand-in CPU whose probe results are set by
    the test; `probes` records every ISA the probe was asked for."""
    for name in OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MS_RESNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_isa.platform, "machine", lambda: "x86_64")

    machine = SimpleNamespace(flags=AVX512, gflops={None: 1.0, "AVX2": 90.0}, probes=[])
    monkeypatch.setattr(cpu_isa, "cpu_flags", lambda: machine.flags)

    def measure(isa: str | None) -> float:
        machine.probes.append(isa)
        return machine.gflops[isa]

    monkeypatch.setattr(cpu_isa, "measure_conv_gflops", measure)
    return machine


def test_avx512_with_a_slow_default_is_capped_at_avx2_and_cached(machine) -> None:
    choice = cpu_isa.choose_cpu_isa()
    assert choice.isa == "AVX2" and machine.probes == [None, "AVX2"]
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "1.0 GFLOPS by default, 90.0 at AVX2" in choice.summary()
    cached = json.loads(cpu_isa.cache_file().read_text(encoding="utf-8"))
    assert [entry["isa"] for entry in cached.values()] == ["AVX2"]
    # Later processes (children inherit the variable) read the verdict instead of probing.
    again = cpu_isa.choose_cpu_isa()
    assert again == choice and machine.probes == [None, "AVX2"]


def test_avx512_that_is_fast_keeps_onednns_choice(machine) -> None:
    machine.gflops = {None: 100.0, "AVX2": 92.0}
    choice = cpu_isa.choose_cpu_isa()
    assert choice.isa is None and "ONEDNN_MAX_CPU_ISA" not in os.environ
    # Noise must not cap it either: AVX2 has to be clearly (1.5x) faster.
    machine.gflops = {None: 70.0, "AVX2": 100.0}
    cpu_isa.cache_file().unlink()
    assert cpu_isa.choose_cpu_isa().isa is None


@pytest.mark.parametrize("flags, arch", [(AVX2_ONLY, "x86_64"), (AVX512, "aarch64")])
def test_nothing_is_measured_or_set_without_avx512_on_x86(machine, monkeypatch, flags,
                                                          arch) -> None:
    machine.flags = flags
    monkeypatch.setattr(cpu_isa.platform, "machine", lambda: arch)
    choice = cpu_isa.choose_cpu_isa()
    assert choice.isa is None and machine.probes == []
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ and not cpu_isa.cache_file().exists()


@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_nothing_is_done_for_accelerator_runs(machine, device: str) -> None:
    choice = cpu_isa.choose_cpu_isa(device)
    assert choice.isa is None and device in choice.reason and machine.probes == []
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ


@pytest.mark.parametrize("name", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_the_users_own_setting_wins(machine, monkeypatch, name: str) -> None:
    monkeypatch.setenv(name, "AVX512_CORE")
    choice = cpu_isa.choose_cpu_isa()
    assert (choice.isa, choice.reason) == ("AVX512_CORE", f"{name} set by you")
    assert machine.probes == [] and os.environ[name] == "AVX512_CORE"


def test_off_keeps_onednns_choice_and_undoes_a_parents_choice(machine, monkeypatch) -> None:
    assert cpu_isa.choose_cpu_isa().isa == "AVX2"  # as a parent process would have set it
    monkeypatch.setenv(cpu_isa.SWITCH, "off")
    choice = cpu_isa.choose_cpu_isa()
    assert choice.isa is None and "ONEDNN_MAX_CPU_ISA" not in os.environ
    assert cpu_isa.CHOSEN_MARK not in os.environ


def test_a_failed_probe_changes_nothing_and_is_not_cached(machine, monkeypatch) -> None:
    def broken(isa: str | None) -> float:
        raise RuntimeError("the probe failed (exit 1: ImportError)")

    monkeypatch.setattr(cpu_isa, "measure_conv_gflops", broken)
    choice = cpu_isa.choose_cpu_isa()
    assert choice.isa is None and "could not measure" in choice.reason
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ and not cpu_isa.cache_file().exists()


def test_a_bad_switch_value_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_command("train.py", "--ckpt_dir", str(tmp_path),
                         env={cpu_isa.SWITCH: "fast"})
    assert result.returncode == 2
    assert result.stderr == "error: MS_RESNET_CPU_ISA='fast': expected auto or off\n"


# ------------------------------------------------------------- the real kernels, through the CLI

def _fresh_env(cache: Path, **extra: str) -> dict:
    """As a user's shell: none of the variables the test process itself set, an empty cache
    of the probe's verdict, and oneDNN's log on."""
    env = {k: v for k, v in os.environ.items() if k not in OUR_VARIABLES}
    env.update(MS_RESNET_CACHE=str(cache), ONEDNN_VERBOSE="1", **extra)
    return env


def _convolutions(output: str) -> list[str]:
    """Implementation names of the convolutions oneDNN ran, from its verbose log."""
    rows = [line.split(",") for line in output.splitlines()
            if line.startswith("onednn_verbose,") and ",exec,cpu,convolution," in line]
    return [row[row.index("convolution") + 1] for row in rows]


def _run_env(mnist_small: Path, tmp_path: Path, **extra: str):
    return run_command("train.py", "--data_dir", str(mnist_small), "--ckpt_dir",
                       str(tmp_path / "run"), "--num_samples", "256", "--eval_num_samples",
                       "256", "--epochs", "1", "--export_mindir", "false",
                       env=_fresh_env(tmp_path / "cache", **extra))


def test_training_runs_no_reference_convolution_without_any_variable(mnist_small: Path,
                                                                     tmp_path: Path) -> None:
    result = _run_env(mnist_small, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    kernels = _convolutions(result.stdout + result.stderr)
    assert kernels, "oneDNN ran no convolution (is ONEDNN_VERBOSE honoured?)"
    slow = sorted({k for k in kernels if "ref" in k})
    assert not slow, f"reference convolutions ran: {slow}"
    header = next(line for line in result.stdout.splitlines() if line.startswith("training "))
    assert "oneDNN ISA: " in header
    if "avx512f" in cpu_isa.cpu_flags():
        assert "measured on this CPU" in header, header


def test_a_users_own_isa_wins_in_the_real_process(mnist_small: Path, tmp_path: Path) -> None:
    result = _run_env(mnist_small, tmp_path, ONEDNN_MAX_CPU_ISA="SSE41")
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "isa:Intel SSE4.1" in output
    assert "oneDNN ISA: SSE41 (ONEDNN_MAX_CPU_ISA set by you)" in result.stdout
    assert not (tmp_path / "cache" / "cpu_isa.json").exists()  # no probe ran


def test_mindir_prediction_runs_no_reference_convolution(mnist_run: dict, tmp_path: Path) -> None:
    image = Path(__file__).resolve().parents[1] / "inference" / "examples" / "mnist" / \
        "mnist_test_00_label_7.png"
    result = run_command("-m", "ms_resnet", "predict", "--mindir",
                         str(mnist_run["dir"] / "best.mindir"), str(image),
                         env=_fresh_env(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-2000:]
    kernels = _convolutions(result.stdout + result.stderr)
    assert kernels and not [k for k in kernels if "ref" in k], sorted(set(kernels))
