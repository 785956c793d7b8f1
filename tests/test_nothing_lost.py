"""Nothing already saved is lost, and every bad input is one line (docs/reliability.md): runs
racing into one folder, a full disk, the files photo folders carry, a MindIR beside another
export's sidecar, files that are not UTF-8 or not JSON, and out-of-range options."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from ms_resnet import files
from ms_resnet.callbacks import checkpoint_file
from ms_resnet.checkpoint import read_extras
from ms_resnet.cli import run
from ms_resnet.config import build_config
from ms_resnet.data.folder import FolderSpec, compute_stats, scan_folder
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.errors import ConfigError, DataError, UserError
from ms_resnet.models import create_model
from tests.conftest import QUICK_MNIST, ROOT, run_command

TINY_RUN = ("--num_samples", "256", "--eval_num_samples", "200", "--batch_size", "32",
            "--export_mindir", "false")


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a command ends with, exit code 2, besides training's progress bars."""
    assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines()
             if line.strip() and not re.match(r"epoch \d+/\d+: ", line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


def command_error(capsys: pytest.CaptureFixture, command: str, *argv: str) -> str:
    """Run `ms-resnet COMMAND ARGV` in this process; its one error line (exit code 2)."""
    assert run(command, list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------------------------------ one folder, one run at a time

def test_a_second_run_into_a_busy_folder_is_refused(mnist_small: Path, tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "train.py", "--data_dir", str(mnist_small), "--ckpt_dir",
         str(ckpt_dir), "--seed", "1", *QUICK_MNIST, *TINY_RUN], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (ckpt_dir / files.LOCK_NAME).exists():
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first run never took the folder"
            time.sleep(0.2)
        second = run_command("train.py", "--data_dir", str(mnist_small), "--ckpt_dir",
                             str(ckpt_dir), "--seed", "2", *QUICK_MNIST, *TINY_RUN)
        err = first.communicate(timeout=600)[1]
    finally:
        if first.poll() is None:
            first.kill()
    assert one_error_line(second) == (
        f"error: ckpt_dir {ckpt_dir}: another run (PID {first.pid}) is writing there; wait for "
        "it to end, or choose another ckpt_dir")
    assert first.returncode == 0, err[-2000:]
    metrics = json.loads((ckpt_dir / "metrics.json").read_text())
    assert metrics["config"]["seed"] == 1  # every file is the first run's
    best = read_extras(ckpt_dir / "best.ckpt")["accuracy"]
    assert best == pytest.approx(metrics["best_accuracy"])
    assert not (ckpt_dir / files.LOCK_NAME).exists()  # released with the run


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import time; from ms_resnet.files import folder_lock\n"
                                f"with folder_lock({str(tmp_path)!r}):\n"
                                "    print('held', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"another run \\(PID {holder.pid}\\)"), \
            files.folder_lock(tmp_path):
        pass
    holder.kill()
    holder.wait()
    with files.folder_lock(tmp_path):  # a killed holder leaves no stale lock
        assert (tmp_path / files.LOCK_NAME).read_text().strip() == str(os.getpid())


def test_a_failed_start_leaves_no_empty_folder(mnist_small: Path, tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "new"
    line = one_error_line(run_command("train.py", "--data_dir", str(mnist_small), "--ckpt_dir",
                                      str(ckpt_dir), "--batch_size", "100000"))
    assert "batch_size 100000 is larger than the training set" in line
    assert not ckpt_dir.exists()


# ------------------------------------------------------------------ writes that cannot half-happen

@pytest.fixture
def small_disk(tmp_path: Path):
    """A folder on a tmpfs of the given size (needs root, as CI runs)."""
    mounted = []

    def make(megabytes: float) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(megabytes * 2**20)}",
                                 "tmpfs", str(folder)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            assert not os.environ.get("CI"), f"CI mounts a tmpfs (as root): {result.stderr}"
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_keeps_the_last_complete_epoch(mnist_small: Path, small_disk) -> None:
    """resnet20's best.ckpt is 1.1 MB and last.ckpt (with the momentum) 2.2 MB: on a 7 MB disk
    epoch 1's files fit, epoch 2's do not fit beside them."""
    ckpt_dir = small_disk(7) / "run"
    result = run_command("train.py", "--data_dir", str(mnist_small), "--ckpt_dir",
                         str(ckpt_dir), *QUICK_MNIST, *TINY_RUN)
    line = one_error_line(result)
    assert line.startswith(tuple(f"error: cannot write epoch 2's {names} in {ckpt_dir}: needs "
                                 "about " for names in ("best.ckpt, last.ckpt, metrics.json",
                                                        "last.ckpt, metrics.json")))
    assert "MB free; " in line and "unchanged; free some space and try again" in line
    assert "epoch 1/2: train loss" in result.stdout
    # Epoch 1's files, complete and consistent; nothing half-written is left behind.
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [
        "best.ckpt", "config.yaml", "last.ckpt", "metrics.json"]
    metrics = json.loads((ckpt_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1] and metrics["best_epoch"] == 1
    best = read_extras(ckpt_dir / "best.ckpt")
    assert best["epoch"] == 1 and best["accuracy"] == pytest.approx(metrics["best_accuracy"])
    assert read_extras(ckpt_dir / "last.ckpt")["epoch"] == 1


def test_export_into_a_full_disk_leaves_no_partial_model(small_disk, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("dataset: mnist\nmodel: resnet20\n")
    ms.save_checkpoint(create_model("resnet20", 10, 1, 28), str(tmp_path / "best.ckpt"))
    target = small_disk(1.5)
    line = one_error_line(run_command("export.py", "--ckpt", str(tmp_path / "best.ckpt"),
                                      "--file_name", str(target / "out"),
                                      "--parity_samples", "0"))
    assert line.startswith(f"error: cannot write out.mindir, out_explain.mindir, out.json in "
                           f"{target}: needs about ")
    assert line.endswith("no out.mindir, out_explain.mindir, out.json written; free some space "
                         "and try again")
    assert list(target.iterdir()) == []


def test_a_write_failing_midway_removes_every_staged_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up after the space check (another writer): MindSpore's own temporary
    file and ours are removed, the earlier files stay as they were."""
    net = create_model("resnet20", 10, 1, 28)
    best, metrics = tmp_path / "best.ckpt", tmp_path / "metrics.json"
    files.write_files([checkpoint_file(net, best, {"epoch": 1, "accuracy": 0.5})])
    metrics.write_text("{}")
    before = best.read_bytes()

    def full_disk(obj, path, **kwargs) -> None:
        Path(path).with_suffix(".tmp").write_bytes(b"partial")  # as MindSpore names it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ms, "save_checkpoint", full_disk)
    new_metrics = files.NewFile(metrics, lambda tmp: tmp.write_text('{"best_epoch": 2}'))
    with pytest.raises(UserError) as error:
        files.write_files([new_metrics, checkpoint_file(net, best, {"epoch": 2})],
                          "epoch 2's")
    assert str(error.value) == (f"cannot write epoch 2's metrics.json, best.ckpt in {tmp_path}: "
                                "No space left on device; metrics.json, best.ckpt unchanged; "
                                "free some space and try again")
    assert best.read_bytes() == before and metrics.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "metrics.json"]


# ----------------------------------------------------------------- one list of images everywhere

def _png(path: Path, width: int = 20, height: int = 20, idat: bytes | None = None) -> None:
    """A PNG with a valid header and IEND; `idat` replaces its compressed pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (width + 1) * height) if idat is None else idat
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
                     + chunk(b"IEND", b""))


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """train/{a,b}/ and test/{a,b}/ with 6 and 2 JPEGs each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{i:04d}.jpg")
    return tmp_path


SPEC = FolderSpec(("a", "b"), 3, 16, (0.5,) * 3, (0.25,) * 3)


def _labels(folder: Path, split: str) -> list[int]:
    data = create_dataset("folder", split, 4, data_dir=str(folder), folder=SPEC, train=False)
    return [int(label) for _, labels in data.create_tuple_iterator(output_numpy=True)
            for label in labels]


def test_what_photo_folders_carry_is_skipped_or_read_alike(photo_folder: Path) -> None:
    train_a = photo_folder / "train" / "a"
    (train_a / "._0000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (train_a / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (train_a / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (train_a / ".hidden.png").write_bytes(b"not an image")
    (photo_folder / "train" / "__MACOSX" / "a").mkdir(parents=True)
    (photo_folder / "train" / "__MACOSX" / "a" / "._0001.jpg").write_bytes(b"\x00\x05")
    (photo_folder / "train" / ".thumbnails").mkdir()
    shutil.copy(photo_folder / "test" / "b" / "0000.jpg", photo_folder / "train" / "b" /
                "extra.Jpg")  # read, whatever the case of its extension
    (photo_folder / "train" / "b" / "link.JPEG").symlink_to(train_a / "0001.jpg")
    layout = scan_folder(photo_folder)
    assert layout.classes == ("a", "b") and len(layout.train) == 14
    assert _labels(photo_folder, "train") == [0] * 6 + [1] * 8  # the reader sees the same list
    assert compute_stats(layout, 3, 16, seed=0)[0]  # and so does the mean/std pass


@pytest.mark.parametrize("case", ["dangling", "loop"])
def test_a_broken_symlink_is_named(photo_folder: Path, case: str) -> None:
    link = photo_folder / "train" / "a" / "x.jpg"
    if case == "dangling":
        link.symlink_to(photo_folder / "gone.jpg")
        expected = f"{link}: broken symbolic link (to {photo_folder / 'gone.jpg'}, which"
    else:
        link.symlink_to(link)
        expected = f"{link}: symbolic link loop"
    with pytest.raises(DataError, match=expected.replace("(", r"\(")):
        create_dataset("folder", "train", 4, data_dir=str(photo_folder), folder=SPEC)


def test_a_decompression_bomb_is_named(photo_folder: Path) -> None:
    bomb = photo_folder / "train" / "a" / "huge.png"
    _png(bomb, 30000, 30000, idat=zlib.compress(b"\x00" * 1000))
    with pytest.raises(DataError, match=f"{bomb}: 900,000,000 pixels, over twice Pillow's limit"):
        create_dataset("folder", "train", 4, data_dir=str(photo_folder), folder=SPEC)


def test_damage_inside_a_complete_png_is_named_by_the_mean_std_pass(photo_folder: Path) -> None:
    broken = photo_folder / "train" / "b" / "broken.png"
    _png(broken, idat=b"this is not zlib data at all" * 4)
    layout = scan_folder(photo_folder)
    with pytest.raises(DataError, match=f"^{broken}: cannot be decoded"):
        compute_stats(layout, 3, 16, seed=0)


# ------------------------------------------------------------- files that are read, options given

def test_a_mindir_beside_another_exports_sidecar_is_one_line(tmp_path: Path, capsys,
                                                             mnist_small: Path) -> None:
    net = create_model("resnet20", 10, 3, 32)
    net.set_train(False)
    ms.export(net, ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)),
              file_name=str(tmp_path / "best"), file_format="MINDIR")
    sidecar = {"dataset": "mnist", "input_shape": [None, 1, 28, 28], "mean": [0.13],
               "std": [0.31], "classes": [str(i) for i in range(10)]}
    (tmp_path / "best.json").write_text(json.dumps(sidecar))
    image = ROOT / "inference" / "examples" / "mnist" / "mnist_test_00_label_7.png"
    expected = (f"error: {tmp_path / 'best.mindir'}: does not take the 1x28x28 input that "
                "best.json describes; the two files come from different exports")
    for command, argv in (("eval", ["--mindir", str(tmp_path / "best.mindir"), "--data_dir",
                                    str(mnist_small), "--num_samples", "20"]),
                          ("predict", [str(image), "--mindir", str(tmp_path / "best.mindir")])):
        assert command_error(capsys, command, *argv).startswith(expected)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary",
                                     "# r\xe9sum\xe9\nmodel: resnet20\n".encode("latin-1")])
def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path, content: bytes) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^{config}: not UTF-8 text \\(byte 0x"):
        build_config(str(config))
    line = one_error_line(run_command("train.py", "--config", str(config)))
    assert line.startswith(f"error: {config}: not UTF-8 text") and "save it as UTF-8" in line


def test_a_seed_beyond_32_bits_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"command line: seed: must be >= 0 and <= 4294967295, "
                                          r"got 4294967296"):
        build_config("configs/mnist.yaml", {"seed": "4294967296"})


@pytest.mark.parametrize("argv, message", [
    (["--num_samples", "-5"], "ms-resnet eval: argument --num_samples: must be >= 1, got -5"),
    (["--batch_size", "0"], "ms-resnet eval: argument --batch_size: must be >= 1, got 0"),
    (["--predict", "-3"], "ms-resnet eval: argument --predict: must be >= 0, got -3"),
    (["--plots", "--output_dir", "{file}"], "--output_dir {file}: {file} is a file, not a folder"),
    (["--json", "{file}/sub/out.json"], "--json {file}/sub: {file} is a file, not a folder"),
])
def test_eval_options_are_checked_before_any_work(argv: list[str], message: str,
                                                  tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    argv = [a.replace("{file}", str(afile)) for a in argv]
    line = command_error(capsys, "eval", "--ckpt", str(tmp_path / "missing.ckpt"), *argv)
    assert line == f"error: {message.replace('{file}', str(afile))} (see --help)" or \
        line == f"error: {message.replace('{file}', str(afile))}"


def test_export_to_a_path_under_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    line = command_error(capsys, "export", "--ckpt", str(tmp_path / "missing.ckpt"),
                         "--file_name", str(afile / "sub" / "out"))
    assert line == f"error: --file_name {afile / 'sub'}: {afile} is a file, not a folder"


@pytest.mark.parametrize("argv", [["--max_pixels", "-1"], ["--top_k", "0"]])
def test_predict_options_are_checked(argv: list[str], capsys) -> None:
    line = command_error(capsys, "predict", "x.png", "--mindir", "m.mindir", *argv)
    assert line.startswith(f"error: ms-resnet predict: argument {argv[0]}: must be >= 1")


def test_a_damaged_metrics_json_is_one_line(mnist_run: dict, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(mnist_run["dir"], run_dir)
    metrics = run_dir / "metrics.json"
    metrics.write_text(metrics.read_text()[:100])  # cut short
    expected = f"error: {metrics}: not valid JSON (line "
    line = one_error_line(run_command("eval.py", "--ckpt", str(run_dir / "best.ckpt"), "--plots",
                                      "--num_samples", "20"))
    assert line.startswith(expected)
    assert (run_dir / "confusion_matrix.png").is_file()  # what came before it was saved
    line = one_error_line(run_command("train.py", "--resume", str(run_dir / "last.ckpt")))
    assert line.startswith(expected)


def test_the_app_refuses_bad_starts_with_exit_2(tmp_path: Path) -> None:
    folder = tmp_path / "inference"
    shutil.copytree(ROOT / "inference", folder, symlinks=True)
    result = run_command(str(folder / "app.py"), "--model", str(tmp_path / "none.mindir"),
                         cwd=folder)
    assert one_error_line(result).startswith(f"error: {tmp_path / 'none.mindir'}")
    assert run_command(str(folder / "app.py"), "--max_pixels", "-5", cwd=folder).returncode == 2


def test_the_apps_messages_show_no_server_paths() -> None:
    probe = ("import sys; sys.path.insert(0, 'inference'); from app import without_paths; "
             "print(without_paths(\"cannot identify image file '/tmp/gradio/3f2a/image.png'\")); "
             "print(without_paths('broken PNG file'))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.stdout.splitlines() == ["cannot identify image file 'image.png'",
                                          "broken PNG file"], result.stderr[-2000:]


def test_a_failed_checkpoint_save_is_our_line_only(tmp_path: Path) -> None:
    """MindSpore's own save fails (ENOSPC inside it), which makes it log a [CRITICAL] line on
    the console; ms_resnet's one line says it all. In a subprocess: the console is the test."""
    probe = f"""
import sys
from mindspore.train import serialization
from ms_resnet import files
from ms_resnet.callbacks import checkpoint_file
from ms_resnet.errors import UserError
from ms_resnet.models import create_model
serialization._ensure_ckpt_fs_initialized()
def full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")
serialization._ckpt_fs.create = full_disk
try:
    files.write_files([checkpoint_file(create_model("resnet20", 10, 1, 28),
                                       files.Path({str(tmp_path)!r}) / "best.ckpt")])
except UserError as exc:
    print(f"error: {{exc}}", file=sys.stderr)
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    expected = (f"error: cannot write best.ckpt in {tmp_path}: No space left on device; no "
                "best.ckpt written; free some space and try again")
    assert result.stderr.strip().splitlines() == [expected], result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
