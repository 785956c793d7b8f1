"""CIFAR-10 as a folder of real colour photos (configs/cifar10_folder.yaml): trained, evaluated
through the checkpoint and the MindIR, plotted and predicted on a photo of another size; and the
colour inputs a photo folder may hold, each converted and said once, or refused in one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ms_resnet.config import build_config
from ms_resnet.data.folder import FolderSpec, check_images, conversion_notes, scan_folder
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.dataspec import complete_folder_config
from tests.conftest import ROOT, run_command

CIFAR_SMALL = ROOT / "tests" / "data" / "cifar10_jpeg_small"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """resnet20 trained with the shipped CIFAR folder recipe on 200 real CIFAR-10 JPEGs for 2
    epochs, tested on 80."""
    ckpt_dir = tmp_path_factory.mktemp("cifar_run")
    result = run_command("train.py", "--config", "configs/cifar10_folder.yaml", "--data_dir",
                         str(CIFAR_SMALL), "--ckpt_dir", str(ckpt_dir), "--epochs", "2",
                         "--batch_size", "20", "--eval_batch_size", "40")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": ckpt_dir, "stdout": result.stdout,
            "metrics": json.loads((ckpt_dir / "metrics.json").read_text())}


def test_the_recipe_reads_the_folder_as_cifar10(cifar_run: dict) -> None:
    config = cifar_run["metrics"]["config"]
    assert config["classes"] == CIFAR_CLASSES  # the folder names, in CIFAR-10's label order
    assert config["model"] == "resnet20" and config["augmentation"] == "crop_flip"
    assert len(config["mean"]) == len(config["std"]) == 3  # per channel, from the images
    assert [e["test_images"] for e in cifar_run["metrics"]["epochs"]] == [80, 80]
    assert "10 classes (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck), " \
           "200 images in train/, 80 in test/" in cifar_run["stdout"]
    assert "note:" not in cifar_run["stdout"]  # 32x32 RGB already: nothing to convert
    sidecar = json.loads((cifar_run["dir"] / "best.json").read_text())
    assert sidecar["classes"] == CIFAR_CLASSES and sidecar["input_shape"] == [None, 3, 32, 32]


def test_mindir_reproduces_the_best_accuracy_and_plots_are_written(cifar_run: dict,
                                                                    tmp_path: Path) -> None:
    run_dir = cifar_run["dir"]
    result = run_command("eval.py", "--mindir", str(run_dir / "best.mindir"), "--data_dir",
                         str(CIFAR_SMALL), "--json", str(tmp_path / "eval.json"), "--plots",
                         "--predict", "20", "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["num_samples"] == 80
    assert evaluated["accuracy"] == pytest.approx(cifar_run["metrics"]["best_accuracy"], abs=1e-9)
    assert list(evaluated["per_class_accuracy"]) == CIFAR_CLASSES
    for name in ("predictions.png", "confusion_matrix.png", "training_curves.png"):
        assert Image.open(tmp_path / name).size[0] > 300, name
    assert len(re.findall(r'^predicted: "\w+", actual: "\w+"$', result.stdout,
                          re.MULTILINE)) == 20


def test_predict_a_colour_photo_of_another_size(cifar_run: dict, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    ship = Image.open(CIFAR_SMALL / "test" / "ship" / "0000.jpg")
    ship.resize((640, 480), Image.BICUBIC).save(photo, quality=90)
    result = run_command("-m", "ms_resnet", "predict", str(photo), "--mindir",
                         str(cifar_run["dir"] / "best.mindir"))
    assert result.returncode == 0, result.stderr[-2000:]
    names = re.findall(r'"(\w+)" ([0-9.]+)', result.stdout)
    assert len(names) == 3 and all(name in CIFAR_CLASSES for name, _ in names), result.stdout


def test_pretrained_from_cifar_onto_other_classes_lists_the_new_head(cifar_run: dict,
                                                                     tmp_path: Path) -> None:
    data = tmp_path / "two"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            shutil.copytree(CIFAR_SMALL / split / name, data / split / name)
    result = run_command("train.py", "--config", "configs/cifar10_folder.yaml", "--data_dir",
                         str(data), "--ckpt_dir", str(tmp_path / "run"), "--epochs", "1",
                         "--batch_size", "20", "--pretrained", str(cifar_run["dir"] / "best.ckpt"),
                         "--export_mindir", "false")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("pretrained "))
    assert line.endswith("re-initialised (shape differs): fc.weight (10, 64) -> (2, 64), "
                         "fc.bias (10,) -> (2,)"), line


def _odd_colour_folder(root: Path) -> Path:
    """An RGB photo folder with a grey PNG, a CMYK JPEG, a 16-bit PNG and a 20x18 thumbnail."""
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            shutil.copytree(CIFAR_SMALL / split / name, root / split / name)
    cat = np.asarray(Image.open(CIFAR_SMALL / "train" / "cat" / "0000.jpg"))
    Image.fromarray(cat).convert("L").save(root / "train" / "cat" / "grey.png")
    Image.fromarray(cat).convert("CMYK").save(root / "train" / "cat" / "print.jpg")
    grey16 = (np.asarray(Image.fromarray(cat).convert("L"), np.uint16) * 257)
    Image.fromarray(grey16, "I;16").save(root / "train" / "dog" / "scan16.png")
    Image.fromarray(cat).resize((20, 18)).save(root / "test" / "cat" / "thumb.jpg")
    return root


def test_odd_colour_images_are_converted_and_said_once(tmp_path: Path, capsys) -> None:
    root = _odd_colour_folder(tmp_path / "photos")
    layout = scan_folder(root)
    found = check_images(root, layout.train + layout.eval_files)
    assert found["modes"] == {"RGB": 57, "L": 1, "CMYK": 1, "I;16": 1}
    converted = ("3 images are not 8-bit RGB (1 grey, 1 CMYK, 1 16-bit): each is converted "
                 "to 8-bit RGB as it is read")
    assert conversion_notes(found, 3, 32) == [
        converted,
        "1 image is smaller than 32x32 (the smallest 20x18): each is scaled up to 32x32"]
    config = build_config("configs/cifar10_folder.yaml", {"data_dir": str(root)})
    complete_folder_config(config)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2  # once per run, not per image or per split
    # What the network gets: 3x32x32 for every file, whatever its mode or size.
    spec = FolderSpec(tuple(config.classes), 3, 32, tuple(config.mean), tuple(config.std))
    for split, count in (("train", 43), ("test", 17)):
        data = create_dataset("folder", split, 100, data_dir=str(root), folder=spec, train=False)
        images, _ = next(data.create_tuple_iterator(output_numpy=True))
        assert images.shape == (count, 3, 32, 32)
