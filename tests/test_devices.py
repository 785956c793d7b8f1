"""Device keys (mixed precision, loss scaling, dataset sink mode, jit level, device_id) on CPU:
what MindSpore accepts trains, resumes, evaluates and exports; what it refuses is one line;
a missing GPU or Ascend is one line and exit code 2 (docs/devices.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from mindspore.train.mind_ir_pb2 import ModelProto

from ms_resnet.callbacks import ProgressBar
from ms_resnet.config import build_config
from ms_resnet.device import device_id
from ms_resnet.errors import ConfigError, UserError
from tests import fakedata
from tests.conftest import ROOT, run_command

# 8 steps of 32 real MNIST images per epoch, the default config's small fast_resnet8.
SMALL = ("--num_samples", "256", "--eval_num_samples", "200", "--batch_size", "32")
ACCEPTANCE = ("--amp_level", "O2", "--loss_scale", "fixed", "--dataset_sink_mode", "true")


def _one_error_line(result: subprocess.CompletedProcess, *parts: str) -> str:
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for part in parts:
        assert part in lines[0]
    return lines[0]


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _eval(ckpt_dir: Path, source: str, *extra: str) -> dict:
    report = ckpt_dir / f"eval-{source}.json"
    path = ckpt_dir / ("best.ckpt" if source == "ckpt" else "best.mindir")
    _ok(run_command("eval.py", f"--{source}", str(path), "--num_samples", "200",
                    "--json", str(report), *extra))
    return json.loads(report.read_text())


def _mindir_graph(path: Path) -> tuple[set[str], set[int]]:
    """The operators of an exported MindIR's graph and the data types of its weights."""
    model = ModelProto()
    model.ParseFromString(path.read_bytes())
    ops = {node.op_type.split("::")[-1].split(":")[0] for node in model.graph.node}
    return ops, {param.data_type for param in model.graph.parameter}


FLOAT32 = 1  # mind_ir TensorProto.DataType FLOAT; FLOAT16 is 10


def _check_portable(ckpt_dir: Path, stdout: str, data_dir: Path | None = None) -> None:
    """best.ckpt evaluates with eval.py to the accuracy training recorded, and its MindIR (a
    float32 graph without casts) passed the export's parity check against it on 200 test
    images (and, given `data_dir`, gives eval.py the same results)."""
    metrics = json.loads((ckpt_dir / "metrics.json").read_text())
    assert "parity check on 200 real test images" in stdout
    from_ckpt = _eval(ckpt_dir, "ckpt")
    # Training evaluates a float32 twin of the amp network: the same numbers as eval.py.
    assert from_ckpt["accuracy"] == metrics["best_accuracy"]
    best = next(e for e in metrics["epochs"] if e["epoch"] == metrics["best_epoch"])
    assert from_ckpt["loss"] == pytest.approx(best["test_loss"], rel=1e-4)
    if data_dir:
        from_mindir = _eval(ckpt_dir, "mindir", "--data_dir", str(data_dir))
        assert from_mindir["accuracy"] == from_ckpt["accuracy"]
        assert from_mindir["loss"] == pytest.approx(from_ckpt["loss"], abs=1e-4)
    ops, dtypes = _mindir_graph(ckpt_dir / "best.mindir")
    assert "Conv2D" in ops and "Cast" not in ops and dtypes == {FLOAT32}


@pytest.mark.parametrize("target", ["GPU", "Ascend"])
def test_a_missing_device_is_one_error_line(target: str, tmp_path: Path) -> None:
    """Acceptance 1: `bash scripts/run_train.sh --device_target GPU` on a CPU machine."""
    result = run_command("scripts/run_train.sh", "--device_target", target,
                         "--ckpt_dir", str(tmp_path / "run"))
    expected = {"GPU": "libcuda.so", "Ascend": "CANN"}[target]
    line = _one_error_line(result, f"device_target {target} cannot be used here",
                           "MindSpore reports:", expected, "--device_target CPU")
    assert "Traceback" not in result.stdout + result.stderr
    assert ("ascend" in line.lower()) == (target == "Ascend")  # no other device's libraries
    assert not (tmp_path / "run").exists()


def test_amp_o2_fixed_loss_scale_sink_mode_trains_resumes_evaluates_exports(
        mnist_small: Path, tmp_path: Path) -> None:
    """Acceptance 2: Ctrl-C in epoch 2, --resume, eval.py and the exported MindIR agree."""
    args = [sys.executable, str(ROOT / "train.py"), "--data_dir", str(mnist_small),
            "--ckpt_dir", str(tmp_path), "--epochs", "2", *SMALL, *ACCEPTANCE]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env=os.environ)
    first = ""
    for line in process.stdout:
        first = first or line
        if line.startswith("epoch 1/2:"):
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "amp O2, fixed loss scale 1024, dataset sink mode" in first
    # Usually the signal lands during epoch 2; on a busy machine it can land while epoch 1's
    # end is still being handled, which stops there. Both must resume to the same run.
    last = stderr.strip().splitlines()[-1]
    assert "stopped at epoch 2, step" in last or "stopped after epoch 1;" in last, last
    stdout = _ok(run_command("scripts/run_train.sh", "--ckpt_dir", str(tmp_path), "--resume"))
    assert "resuming from" in stdout and "epoch 2/2:" in stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["config"]["amp_level"] == "O2" and metrics["best_accuracy"] > 0.3
    _check_portable(tmp_path, stdout, mnist_small)


@pytest.fixture(scope="module")
def fashion_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST files (its classes survive a mirror, so eval_flip is allowed)."""
    data = tmp_path_factory.mktemp("fashion_mnist")
    fakedata.make_mnist_like(data, n_train=256, n_test=200, gz=False, seed=7)
    return data


@pytest.mark.parametrize("keys", [
    ("--amp_level", "O1", "--loss_scale", "fixed", "--jit_level", "O1"),
    ("--amp_level", "O3", "--dataset", "fashion_mnist", "--eval_flip", "true"),
    ("--amp_level", "O2", "--loss_scale", "fixed", "--ema_decay", "0.9"),
], ids=["O1-fixed-jitO1", "O3-eval_flip", "O2-fixed-ema"])
def test_accepted_combinations_train_resume_evaluate_and_export(
        keys: tuple[str, ...], mnist_small: Path, fashion_like: Path, tmp_path: Path) -> None:
    data_dir = fashion_like if "fashion_mnist" in keys else mnist_small
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    stdout = _ok(run_command(str(ROOT / "train.py"), "--config", str(ROOT / "configs/mnist.yaml"),
                             "--data_dir", str(data_dir), "--ckpt_dir", str(tmp_path),
                             "--epochs", "1", *SMALL, *keys, cwd=workdir))
    # amp O1 (MindSpore's rewrite) would write ./rewritten_network/ into the user's folder.
    assert not list(workdir.iterdir())
    # --resume loads last.ckpt into the amp training network (optimizer state included).
    resumed = _ok(run_command("train.py", "--ckpt_dir", str(tmp_path), "--resume"))
    assert "training already finished (1 of 1 epochs)" in resumed
    _check_portable(tmp_path, stdout)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"loss_scale": "dynamic"},
     "loss_scale: dynamic is refused by MindSpore on device_target CPU; expected none or fixed"),
    ({"jit_level": "O2"}, ("jit_level: O2 (whole graph on the device) exists only on "
                          "device_target Ascend; expected O0 or O1 on CPU")),
    ({"jit_level": "O2", "device_target": "GPU"}, "expected O0 or O1 on GPU"),
    ({"jit_level": "O1", "mode": "pynative"},
     "jit_level applies to mode: graph only; expected no jit_level with mode: pynative"),
    ({"sink_size": "10", "dataset_sink_mode": "true"},
     "sink_size: 10 is not supported; expected -1 (one sink per epoch"),
    ({"ema_decay": "0.999", "dataset_sink_mode": "true", "device_target": "Ascend"},
     ("ema_decay: 0.999 needs an update after every step, which dataset_sink_mode on Ascend "
     "does not give (one callback per epoch); expected ema_decay: 0 or dataset_sink_mode: "
     "false")),
    ({"device_id": "1", "distribute": "true"},
     "device_id: under distribute msrun gives each worker its own device"),
    ({"amp_level": "O4"}, "amp_level: 'O4' is not one of: O0, O1, O2, O3"),
    ({"loss_scale": "static"}, "loss_scale: 'static' is not one of: none, fixed, dynamic"),
    ({"loss_scale_value": "0.5"}, "loss_scale_value: must be >= 1"),
])
def test_refused_combinations_are_one_line_naming_the_keys(overrides: dict,
                                                           message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_config(None, overrides)
    assert str(error.value).startswith("command line: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_refusals_come_before_any_training(tmp_path: Path) -> None:
    result = run_command("train.py", "--loss_scale", "dynamic", "--ckpt_dir", str(tmp_path))
    _one_error_line(result, "loss_scale: dynamic is refused by MindSpore on device_target CPU")
    assert not list(tmp_path.iterdir())


def test_what_cpu_refuses_is_accepted_for_a_device_and_for_inference(tmp_path: Path) -> None:
    """A GPU/Ascend recipe loads (it is the device that may be missing, not the config), and a
    checkpoint trained with it is evaluated on CPU without its training-only checks."""
    for name in ("ascend", "gpu"):
        config = build_config(ROOT / "configs" / f"cifar10_resnet50_{name}.yaml")
        assert (config.amp_level, config.loss_scale, config.loss_scale_value,
                config.dataset_sink_mode) == ("O2", "fixed", 1024.0, True)
    config = build_config(None, {"device_target": "GPU", "loss_scale": "dynamic",
                                 "ema_decay": "0.9"})
    assert config.loss_scale == "dynamic"
    saved = tmp_path / "config.yaml"
    saved.write_text("device_target: GPU\nloss_scale: dynamic\n")
    assert build_config(saved, {"device_target": "CPU"}, training=False).loss_scale == "dynamic"


def test_device_id_defaults_to_the_device_id_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_ID", "3")
    assert device_id(build_config(None)) == 3
    assert device_id(build_config(None, {"device_id": "1"})) == 1
    # Under msrun each worker's device is MindSpore's choice.
    assert device_id(build_config(None, {"distribute": "true"})) is None
    monkeypatch.delenv("DEVICE_ID")
    assert device_id(build_config(None)) is None
    monkeypatch.setenv("DEVICE_ID", "gpu0")
    with pytest.raises(UserError, match="DEVICE_ID environment variable: expected a device "
                                        "number"):
        device_id(build_config(None))


def _tensor(value: float) -> SimpleNamespace:
    return SimpleNamespace(asnumpy=lambda: value)


def test_progress_counts_every_step_of_a_sink() -> None:
    """Under sink mode on a device one step callback covers a whole sink: the epoch's step
    count (where Ctrl-C saves last.ckpt) and mean loss must still cover every step. Under a
    dynamic loss scale the training network outputs (loss, overflow, scale)."""
    bar = ProgressBar(32, 1, enabled=False)
    params = SimpleNamespace(batch_num=8, cur_epoch_num=1, cur_step_num=0)
    context = SimpleNamespace(original_args=lambda: params)
    bar.on_train_epoch_begin(context)
    # Two sinks of 4 steps; MindSpore reports the loss of each sink's last step.
    for step, loss in ((4, 0.75), (8, 0.25)):
        params.cur_step_num = step
        params.net_outputs = (_tensor(loss), _tensor(False), _tensor(1024.0))
        bar.on_train_step_end(context)
    assert bar.step_in_epoch == 8
    bar.on_train_epoch_end(context)
    assert bar.epoch_loss == pytest.approx(0.5)


def test_distributed_script_passes_the_device_to_msrun() -> None:
    """--dry_run prints the msrun command (msrun itself is exercised by test_distributed.py)."""
    result = run_command("scripts/run_distribute_train.sh", "8",
                         "configs/cifar10_resnet50_ascend.yaml", "--dry_run", "--epochs", "1",
                         env={"MASTER_PORT": "8118", "LOCAL_WORKER_NUM": "4", "NODE_RANK": "1"})
    command = _ok(result).split()
    assert command[1] == "msrun" and "--dry_run" not in command
    for option, value in (("--worker_num", "8"), ("--local_worker_num", "4"),
                          ("--master_port", "8118"), ("--node_rank", "1"),
                          ("--config", "configs/cifar10_resnet50_ascend.yaml"),
                          ("--distribute", "true"), ("--epochs", "1")):
        assert command[command.index(option) + 1] == value
    assert not (ROOT / "ckpt" / "cifar10_resnet50_ascend").exists()

