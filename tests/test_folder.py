"""`--dataset folder`: your own images through training, evaluation, prediction and export;
fine-tuning with --pretrained; the ImageNet config; and every bad input as one line + exit 2."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ms_resnet.config import build_config
from ms_resnet.data import FolderSpec
from ms_resnet.data.folder import (
    check_images,
    compute_stats,
    holdout,
    scan_folder,
    split_source,
    translate_decode_error,
)
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.errors import CheckpointError, ConfigError, DataError, UserError
from tests.conftest import DIGIT_FOLDERS, run_command


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


def image_tree(root: Path, layout: dict[str, int]) -> Path:
    """root/<split>/<class>/ with the given number of small PNGs ({"train/a": 3, ...})."""
    rng = np.random.default_rng(0)
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = (rng.random((12, 16)) * 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / folder / f"{i}.png")
    return root


# ---------------------------------------------------------------------------------------------
# Acceptance: a folder of real images, trained, evaluated, exported and predicted with its names


def test_folder_run_saves_the_folder_names_and_reaches_good_accuracy(folder_run: dict) -> None:
    config = yaml.safe_load((folder_run["dir"] / "config.yaml").read_text())
    assert config["classes"] == list(DIGIT_FOLDERS)
    assert len(config["mean"]) == len(config["std"]) == 1  # grey: one channel
    assert folder_run["metrics"]["config"]["classes"] == list(DIGIT_FOLDERS)
    assert "3 classes (one, seven, zero), 180 images in train/, 60 in test/" in \
        folder_run["stdout"]
    assert folder_run["metrics"]["best_accuracy"] >= 0.9
    sidecar = json.loads((folder_run["dir"] / "best.json").read_text())
    assert sidecar["classes"] == list(DIGIT_FOLDERS) and sidecar["dataset"] == "folder"
    assert sidecar["input_shape"] == [None, 1, 28, 28]


def test_eval_ckpt_and_mindir_agree_with_training_and_name_the_classes(folder_run: dict,
                                                                        tmp_path: Path) -> None:
    run_dir, best = folder_run["dir"], folder_run["metrics"]["best_accuracy"]
    result = run_command("eval.py", "--ckpt", str(run_dir / "best.ckpt"), "--json",
                         str(tmp_path / "ckpt.json"), "--plots", "--predict", "6",
                         "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    from_ckpt = json.loads((tmp_path / "ckpt.json").read_text())
    assert from_ckpt["accuracy"] == pytest.approx(best, abs=1e-9)
    assert list(from_ckpt["per_class_accuracy"]) == list(DIGIT_FOLDERS)
    assert re.search(r'predicted: "(one|seven|zero)", actual: "one"', result.stdout)
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert (tmp_path / "predictions.png").is_file()

    mindir = run_dir / "best.mindir"
    from ms_resnet.evaluate import main

    with pytest.raises(UserError, match="trained on a folder of images; give --data_dir"):
        main(["--mindir", str(mindir)])
    result = run_command("eval.py", "--mindir", str(mindir), "--data_dir",
                         str(folder_run["data"]), "--json", str(tmp_path / "mindir.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "mindir.json").read_text())["accuracy"] == \
        pytest.approx(best, abs=1e-9)


def test_a_model_is_evaluated_on_a_test_folder_alone(folder_run: dict, tmp_path: Path) -> None:
    """No train/ (e.g. ImageNet's val/ for a converted model): the model's classes are known,
    so test/ alone is evaluated, its folders named after the classes or one per class under
    other names (ImageNet's WordNet IDs), in sorted order."""
    from ms_resnet.evaluate import main

    run_dir, best = folder_run["dir"], folder_run["metrics"]["best_accuracy"]
    renamed = {"one": "n01", "seven": "n02", "zero": "n03"}  # sorted as the classes are
    for name in DIGIT_FOLDERS:
        shutil.copytree(folder_run["data"] / "test" / name, tmp_path / "named" / "test" / name)
        shutil.copytree(folder_run["data"] / "test" / name,
                        tmp_path / "ids" / "val" / renamed[name])
    for folder, model in (("named", "best.ckpt"), ("ids", "best.mindir")):
        option = "--ckpt" if model.endswith(".ckpt") else "--mindir"
        result = run_command("eval.py", option, str(run_dir / model), "--data_dir",
                             str(tmp_path / folder), "--json", str(tmp_path / f"{folder}.json"))
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((tmp_path / f"{folder}.json").read_text())["accuracy"] == \
            pytest.approx(best, abs=1e-9)
    assert "the 3 folders are not named after the model's classes; sorted, they are taken " \
        "as its classes in order (n01 = one)" in result.stdout
    shutil.rmtree(tmp_path / "ids" / "val" / "n03")
    with pytest.raises(DataError, match=r"val/n01: 'n01' is not one of the model's 3 classes "
                                        r"\(one, seven, zero\); name the folders after them"):
        main(["--mindir", str(run_dir / "best.mindir"), "--data_dir", str(tmp_path / "ids")])


def test_predict_prints_the_folder_names(folder_run: dict) -> None:
    images = sorted((folder_run["data"] / "test" / "seven").iterdir())[:3]
    result = run_command("-m", "ms_resnet", "predict", "--mindir",
                         str(folder_run["dir"] / "best.mindir"), *map(str, images))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    assert all(re.search(r': "(one|seven|zero)" [01]\.\d{4}, "(one|seven|zero)"', line)
               for line in lines), lines
    assert sum('"seven"' in line.split(", ")[0] for line in lines) >= 2, lines


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def test_pretrained_reinitialises_the_changed_layers_and_freezes_the_backbone(
        folder_run: dict, tmp_path: Path) -> None:
    import mindspore as ms

    # Two of the three classes, read as RGB: the classifier and the stem change shape.
    data = tmp_path / "two"
    for split in ("train", "test"):
        for name in ("one", "zero"):
            shutil.copytree(folder_run["data"] / split / name, data / split / name)
    pretrained = folder_run["dir"] / "best.ckpt"
    result = run_command("train.py", "--config", "configs/own_images.yaml", "--data_dir",
                         str(data), "--ckpt_dir", str(tmp_path / "run"), "--in_channels", "3",
                         "--epochs", "1", "--batch_size", "40", "--pretrained", str(pretrained),
                         "--freeze_backbone", "true", "--export_mindir", "false")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("pretrained "))
    changed = re.findall(r"([\w.]+) \(", line.split("re-initialised (shape differs): ")[1])
    assert changed == ["stem.0.weight", "fc.weight", "fc.bias"], line
    assert "(3, 128) -> (2, 128)" in line and "(32, 1, 3, 3) -> (32, 3, 3, 3)" in line, line
    assert "freeze_backbone: training only fc.bias, fc.weight" in result.stdout
    before, after = ms.load_checkpoint(str(pretrained)), ms.load_checkpoint(
        str(tmp_path / "run" / "best.ckpt"))
    conv = "layers.0.0.branch.0.weight"
    assert conv in after, sorted(after)[:20]
    np.testing.assert_array_equal(before[conv].asnumpy(), after[conv].asnumpy())


def test_pretrained_of_another_model_is_one_line(folder_run: dict, tmp_path: Path) -> None:
    from ms_resnet.checkpoint import load_pretrained
    from ms_resnet.network import build_network

    result = run_command("train.py", "--config", "configs/own_images.yaml", "--data_dir",
                         str(folder_run["data"]), "--ckpt_dir", str(tmp_path / "run"),
                         "--model", "resnet20", "--pretrained",
                         str(folder_run["dir"] / "best.ckpt"))
    line = one_error_line(result)
    assert "a checkpoint of fast_resnet8" in line and "this run trains resnet20" in line, line
    # Without a config.yaml beside it, the parameter names tell.
    alone = tmp_path / "alone.ckpt"
    shutil.copyfile(folder_run["dir"] / "best.ckpt", alone)
    config = build_config(folder_run["dir"] / "config.yaml", {"model": "resnet20"})
    with pytest.raises(CheckpointError, match="saved from another model than resnet20"):
        load_pretrained(build_network(config), alone, "resnet20")


def test_pretrained_and_resume_are_refused_together(tmp_path: Path) -> None:
    from ms_resnet.train import main

    with pytest.raises(ConfigError, match="--pretrained starts a new run .* give only one"):
        main(["--resume", "--pretrained", "x.ckpt", "--ckpt_dir", str(tmp_path)])


# ---------------------------------------------------------------------------------------------
# Reading the folder


def test_every_image_mode_becomes_the_configured_channels(tmp_path: Path) -> None:
    folder = tmp_path / "modes" / "train"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    grey = (np.random.default_rng(0).random((30, 40)) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, -1)
    Image.fromarray(grey, "L").save(folder / "a" / "grey.png")
    Image.fromarray(np.dstack([rgb, grey]), "RGBA").save(folder / "a" / "rgba.png")
    Image.fromarray(grey, "L").convert("P").save(folder / "a" / "palette.png")
    Image.fromarray(grey.astype(np.uint16) * 257, "I;16").save(folder / "b" / "grey16.png")
    Image.fromarray(rgb, "RGB").convert("CMYK").save(folder / "b" / "cmyk.jpg")
    Image.fromarray(rgb, "RGB").save(folder / "b" / "rgb.BMP")
    for channels in (1, 3):
        spec = FolderSpec(("a", "b"), channels, 20, (0.5,) * channels, (0.25,) * channels,
                          val_split=0.0)
        data = create_dataset("folder", "train", 6, data_dir=str(tmp_path / "modes"),
                              folder=spec, train=False)
        images, labels = next(data.create_tuple_iterator(output_numpy=True))
        assert images.shape == (6, channels, 20, 20) and images.dtype == np.float32
        assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
        # The same grey picture in every file: the same normalised pixels, whatever the mode.
        assert np.abs(images - images[:1]).max() < 0.2


def test_val_split_is_a_seeded_disjoint_holdout(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "d", {"train/a": 30, "train/b": 20})
    layout = scan_folder(root)
    assert layout.eval_dir is None and layout.classes == ("a", "b")
    spec = FolderSpec(("a", "b"), 1, 16, (0.5,), (0.25,), val_split=0.2, seed=3)
    _, train = split_source(layout, "train", spec)
    _, test = split_source(layout, "test", spec)
    assert len(test) == 10 and not set(train) & set(test) and len(train) + len(test) == 50
    assert holdout(50, 0.2, 3) == holdout(50, 0.2, 3) != holdout(50, 0.2, 4)
    with pytest.raises(DataError, match="no test/ or val/ folder, and val_split is 0"):
        split_source(layout, "test", FolderSpec(("a", "b"), 1, 16, (0.5,), (0.25,),
                                                val_split=0.0))


def test_mean_and_std_are_computed_once_and_cached(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "d", {"train/a": 4, "train/b": 4})
    layout = scan_folder(root)
    mean, std = compute_stats(layout, 1, 16, seed=0, workers=1)
    pixels = np.concatenate([np.asarray(Image.open(f).resize((16, 16), Image.BILINEAR),
                                        np.float64).ravel() / 255 for f in layout.train])
    assert mean[0] == pytest.approx(pixels.mean(), abs=0.01)
    assert std[0] == pytest.approx(pixels.std(), abs=0.01)
    from ms_resnet.data.prepare import cache_root

    files = list(cache_root().glob("folder-*/stats-1x16.json"))
    assert files and any(json.loads(f.read_text())["mean"] == list(mean) for f in files)
    assert compute_stats(layout, 1, 16, seed=0, workers=1) == (mean, std)


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file or folder


@pytest.mark.parametrize("layout, message", [
    ({"train/a": 2, "train/b": 0}, r"train/b: empty class folder"),
    ({"train/a": 2}, r"train: only the class 'a'; a classifier needs at least 2 class folders"),
    ({"train/a": 2, "train/b": 2, "test/a": 1, "test/c": 1},
     r"test/c: class 'c' is not in .*train \(its classes: a, b\)"),
    ({".": 2}, r"d: it holds images \(0.png, ...\) directly; expected .*/train/<class>/<image>"),
    ({"train": 1, "train/a": 1, "train/b": 1},
     r"d/train: holds images \(0.png, ...\) directly; put each image in a folder named after"),
])
def test_bad_layouts_are_named(layout: dict, message: str, tmp_path: Path) -> None:
    root = image_tree(tmp_path / "d", layout)
    with pytest.raises(DataError, match=message):
        scan_folder(root)


def test_damaged_images_are_fatal_and_named(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "d", {"train/a": 2, "train/b": 2})
    files = scan_folder(root).train
    check_images(root, files)  # fine
    noise = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(root / "train" / "b" / "photo.jpg", quality=90)
    data = (root / "train" / "b" / "photo.jpg").read_bytes()
    (root / "train" / "b" / "photo.jpg").write_bytes(data[: len(data) * 2 // 3])
    (root / "train" / "a" / "notes.png").write_text("not an image")
    files = scan_folder(root).train
    with pytest.raises(DataError, match=r"train/a/notes.png: not a readable image .*\(and 1 more "
                                        r"damaged files\); damaged images are not skipped"):
        check_images(root, files)
    (root / "train" / "a" / "notes.png").unlink()
    with pytest.raises(DataError, match=r"photo.jpg: truncated JPEG \(no end-of-image marker\)"):
        check_images(root, scan_folder(root).train)


def test_an_image_that_fails_to_decode_mid_epoch_is_named(tmp_path: Path) -> None:
    """Damage inside a complete PNG passes the up-front check; MindSpore's decode error is
    turned into one line naming the file."""
    root = image_tree(tmp_path / "d", {"train/a": 1, "train/b": 1})
    damaged = root / "train" / "b" / "0.png"
    data = bytearray(damaged.read_bytes())
    start = data.find(b"IDAT") + 8
    data[start:start + 100] = b"\x55" * 100
    damaged.write_bytes(bytes(data))
    check_images(root, scan_folder(root).train)  # header and IEND are intact
    spec = FolderSpec(("a", "b"), 1, 16, (0.5,), (0.25,), val_split=0.0)
    pipeline = create_dataset("folder", "train", 1, data_dir=str(root), folder=spec, train=False)
    expected = re.escape(f"{damaged}: cannot be decoded (Decode: image decode failed); damaged "
                         "images are not skipped")
    with pytest.raises(DataError, match=expected), translate_decode_error():
        for _ in pipeline.create_tuple_iterator(output_numpy=True):
            pass


def test_bad_folder_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "d", {"train/a": 2, "train/b": 2})
    (root / "train" / "b" / "1.png").write_bytes(b"\x89PNG\r\n")
    result = run_command("train.py", "--config", "configs/own_images.yaml", "--data_dir",
                         str(root), "--ckpt_dir", str(tmp_path / "run"))
    assert one_error_line(result).startswith(f"error: {root / 'train' / 'b' / '1.png'}: not a "
                                             "readable image")
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "folder", "in_channels": "2"}, "in_channels: expected 1 (grey) or 3 (RGB)"),
    ({"image_size": "64"}, "image_size: 64 is for --dataset folder; mnist has 28"),
    ({"dataset": "folder", "mean": "0.5,0.5"}, "mean: expected 3 value(s), one per channel"),
    ({"dataset": "folder", "mean": "0.5,0.5,0.5"}, "give both mean and std"),
    ({"dataset": "folder", "mean": "a,b,c"}, "mean: expected numbers separated by commas"),
    ({"freeze_backbone": "true"}, "freeze_backbone needs pretrained"),
    ({"dataset": "folder", "augmentation": "rotate"}, "augmentation: 'rotate' is not one of"),
])
def test_folder_keys_are_validated(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config(None, overrides)


# ---------------------------------------------------------------------------------------------
# The ImageNet recipe


def test_imagenet_config_is_the_standard_recipe_and_runs_one_step(tmp_path: Path) -> None:
    config = build_config("configs/imagenet_resnet50.yaml")
    assert (config.model, config.optimizer, config.momentum, config.lr, config.batch_size,
            config.weight_decay, config.label_smoothing, config.lr_schedule, config.epochs,
            config.augmentation, config.image_size, config.eval_crop) == (
        "resnet50", "momentum", 0.9, 0.1, 256, 1e-4, 0.1, "cosine", 90, "resized_crop_flip",
        224, 0.875)
    assert config.warmup_epochs > 0
    assert "76.1%" in Path("configs/imagenet_resnet50.yaml").read_text() and \
        "NOT REPRODUCED HERE" in Path("configs/imagenet_resnet50.yaml").read_text()
    # A tiny JPEG folder in ImageNet's layout (train/ and val/, wnid-like class names).
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            (tmp_path / "inet" / split / wnid).mkdir(parents=True)
            for i in range(count):
                size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
                pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "inet" / split / wnid / f"{i}.JPEG")
    # Only the image size and batch size shrink: the recipe's pipeline ops (random-resized
    # crop + flip; resize + centre crop) and model, optimizer and schedule are those of ImageNet.
    # PyNative mode: for one step, half the time of compiling ResNet-50's graph.
    result = run_command("train.py", "--config", "configs/imagenet_resnet50.yaml", "--data_dir",
                         str(tmp_path / "inet"), "--ckpt_dir", str(tmp_path / "run"),
                         "--image_size", "32", "--batch_size", "4", "--eval_batch_size", "2",
                         "--epochs", "1", "--num_parallel_workers", "1", "--export_mindir",
                         "false", "--mode", "pynative")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 steps x 4 images per epoch" in result.stdout
    assert "2 classes (n01440764, n01443537), 4 images in train/, 2 in val/" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1 and np.isfinite(metrics["epochs"][0]["train_loss"])
