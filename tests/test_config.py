"""Config files, command-line overrides and their validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ms_resnet.config import FIELDS, Config, build_config, load_yaml, save_config
from ms_resnet.data import DATASETS
from ms_resnet.errors import ConfigError
from ms_resnet.models import list_models
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
FOLDER_KEYS = {"in_channels", "image_size", "val_split", "augmentation", "eval_crop"}


def test_every_dataset_has_a_config_and_every_config_loads() -> None:
    names = {p.stem for p in CONFIGS}
    assert set(DATASETS) | {"own_images", "imagenet_resnet50", "finetune"} <= names
    assert {"cifar10_resnet50", "mnist_tutorial"} <= names
    for path in CONFIGS:
        config = build_config(path)
        assert config.ckpt_dir == str(Path("ckpt") / path.stem)
        assert config.model in list_models()
        # Every key is written out, so a config file documents the whole recipe (the folder
        # dataset's keys only in folder configs; fine-tuning keys only in fine-tuning recipes;
        # stem_pool_padding only where a converted MindCV model needs it; whiten_stem only where
        # the model has a 2x2 stem; the fast recipe's BatchNorm and init keys only there).
        optional = {"data_dir", "num_samples", "eval_num_samples", "shortcut", "warmup_epochs",
                    "ckpt_dir", "distribute", "pretrained", "freeze_backbone", "classes",
                    "freeze_epochs", "backbone_lr", "whiten_stem", "dirac_init",
                    "bn_momentum", "freeze_bn_gamma", "bn_beta_lr", "crop_padding",
                    "eval_translate",
                    "mean", "std", "device_id", "stem_pool_padding"}
        if config.dataset != "folder":
            optional |= FOLDER_KEYS
        assert set(load_yaml(path)) >= set(FIELDS) - optional


DEVICE_KEYS = {"device_target", "num_parallel_workers", "amp_level", "loss_scale",
               "dataset_sink_mode", "jit_level"}


@pytest.mark.parametrize("base", ["cifar10_resnet50", "cifar10_fast"])
@pytest.mark.parametrize("device", ["gpu", "ascend"])
def test_device_recipes_change_only_the_device_keys(base: str, device: str) -> None:
    recipe = load_yaml(ROOT / "configs" / f"{base}.yaml")
    on_device = load_yaml(ROOT / "configs" / f"{base}_{device}.yaml")
    assert set(recipe) == set(on_device)
    changed = {key for key in recipe if recipe[key] != on_device[key]}
    assert changed == DEVICE_KEYS - {"jit_level"}
    assert on_device["amp_level"] == "O2" and on_device["loss_scale"] == "fixed"


def test_tutorial_config_is_the_tutorial_recipe() -> None:
    config = build_config(ROOT / "configs" / "mnist_tutorial.yaml")
    assert (config.model, config.optimizer, config.lr, config.batch_size, config.epochs,
            config.augment, config.lr_schedule) == ("tutorial_resnet", "adam", 0.001, 32, 4,
                                                    False, "constant")


def test_overrides_are_typed_and_win_over_the_file() -> None:
    config = build_config(ROOT / "configs" / "mnist.yaml",
                          {"epochs": "7", "lr": "1e-3", "augment": "false", "data_dir": "x",
                           "num_samples": "null", "shortcut": "B"})
    assert (config.epochs, config.lr, config.augment, config.data_dir, config.num_samples,
            config.shortcut) == (7, 0.001, False, "x", None, "B")


def test_yaml_exponent_floats_are_numbers(tmp_path: Path) -> None:
    # PyYAML reads "1e-3" as a string; it must still become a float.
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5.0e-4\n")
    assert load_yaml(path) == {"lr": 0.001, "weight_decay": 0.0005}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"epochs": "-1"}, "command line: epochs: must be >= 1, got -1"),
    ({"batch_size": "0"}, "command line: batch_size: must be >= 1, got 0"),
    ({"epochs": "2.5"}, "command line: epochs: expected an integer, got '2.5'"),
    ({"lr": "fast"}, "command line: lr: expected a number, got 'fast'"),
    ({"lr": "0"}, "command line: lr: must be > 0, got 0.0"),
    ({"augment": "maybe"}, "command line: augment: expected true or false, got 'maybe'"),
    ({"optimizer": "sgd"}, "command line: optimizer: 'sgd' is not one of: momentum, adam"),
    ({"epochs": "null"}, "command line: epochs: a value is required (int)"),
    ({"batchsize": "8"}, "command line: unknown key 'batchsize'; did you mean 'batch_size'?"),
])
def test_bad_values_name_the_key_and_what_is_allowed(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(None, overrides)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_unknown_model_and_dataset_list_the_valid_choices() -> None:
    with pytest.raises(ConfigError, match="model: 'resnet7' is not one of: ") as info:
        build_config(None, {"model": "resnet7"})
    assert all(name in str(info.value) for name in list_models())
    with pytest.raises(ConfigError, match="dataset: 'imagenet' is not one of: ") as info:
        build_config(None, {"dataset": "imagenet"})
    assert all(name in str(info.value) for name in DATASETS)


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: mnist\nepoch: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}: unknown key 'epoch'; did you mean 'epochs'"):
        load_yaml(path)


@pytest.mark.parametrize(("text", "message"), [
    ("- a\n- b\n", "expected 'key: value' lines, got a list"),
    ("lr: [0.1\n", "not valid YAML"),
])
def test_malformed_files_are_rejected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(path)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        build_config("nope.yaml")


def test_defaults_are_valid() -> None:
    config = build_config(None)
    assert config == Config(ckpt_dir=str(Path("ckpt") / "mnist"))


@pytest.mark.parametrize(("allowed", "refused", "refused_error", "refused_yaml", "yaml_error"), [
    ({"dataset": "fashion_mnist", "eval_flip": "true"}, {"dataset": "mnist", "eval_flip": "true"},
     r"eval_flip: mnist images change meaning when mirrored .*; expected false",
     "dataset: svhn\neval_flip: true\n", "eval_flip: svhn images change meaning"),
    ({"random_erasing": "0.5"}, {"augment": "false", "random_erasing": "0.5"},
     r"random_erasing: 0.5 needs augment: true; expected 0.0 without augmentation",
     "augment: false\nrandom_erasing: 1.0\n", "random_erasing: 1.0 needs augment: true"),
    ({"shortcut": "none"}, {"shortcut": "none", "zero_init_residual": "true"},
     r"zero_init_residual: true needs a shortcut; .*; expected false",
     "shortcut: none\nzero_init_residual: true\n", "zero_init_residual: true needs a shortcut"),
])
def test_keys_that_depend_on_other_keys(allowed: dict, refused: dict, refused_error: str,
                                        refused_yaml: str, yaml_error: str,
                                        tmp_path: Path) -> None:
    """eval_flip only where a mirrored image keeps its class; random_erasing only with augment."""
    config = build_config(None, allowed)
    assert all(str(getattr(config, key)).lower() == value for key, value in allowed.items())
    with pytest.raises(ConfigError, match=rf"^command line: {refused_error}$"):
        build_config(None, refused)
    path = tmp_path / "refused.yaml"
    path.write_text(refused_yaml)
    with pytest.raises(ConfigError, match=rf"^{path}: {yaml_error}"):
        build_config(path)


def test_shortcut_none_is_a_plain_network_and_null_the_models_default(tmp_path: Path) -> None:
    """'none' spells a choice (no shortcut) for `shortcut`, while null keeps the model's own."""
    assert build_config(None, {"shortcut": "none"}).shortcut == "none"
    assert build_config(None, {"shortcut": "null"}).shortcut is None
    path = tmp_path / "plain.yaml"
    path.write_text("shortcut: none\n")
    config = build_config(path)
    assert config.shortcut == "none"
    save_config(config, tmp_path / "saved.yaml")  # as train.py saves it beside the checkpoints
    assert build_config(tmp_path / "saved.yaml").shortcut == "none"
    path.write_text("shortcut: null\n")
    assert build_config(path).shortcut is None
