"""Config -> dataset description: a built-in dataset's registry entry, or for `--dataset folder`
the description that the config holds once training has filled in the class names (from the
folder names) and the normalisation (computed from the training images)."""

from __future__ import annotations

from pathlib import Path

import mindspore.dataset as ds

from ms_resnet.config import Config
from ms_resnet.data import FOLDER, DatasetInfo, FolderSpec, get_dataset_info
from ms_resnet.data.folder import check_images, compute_stats, conversion_notes, scan_folder
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.data.prepare import resolve_data_dir
from ms_resnet.errors import ConfigError, DataError


def folder_title(config: Config) -> str:
    return resolve_data_dir(FOLDER, config.data_dir).resolve().name or FOLDER


def folder_spec(config: Config) -> FolderSpec | None:
    """The folder dataset's description, or None for a built-in dataset."""
    if config.dataset != FOLDER:
        return None
    if config.classes is None or config.mean is None or config.std is None:
        raise ConfigError("dataset folder: the config has no classes/mean/std yet; they are "
                          "filled in when training starts (use the config.yaml of the run)")
    return FolderSpec(classes=tuple(config.classes), channels=config.in_channels,
                      image_size=config.image_size, mean=tuple(config.mean),
                      std=tuple(config.std), eval_crop=config.eval_crop,
                      val_split=config.val_split, seed=config.seed,
                      augmentation=config.augmentation, title=folder_title(config))


def dataset_info(config: Config) -> DatasetInfo:
    spec = folder_spec(config)
    return spec.info() if spec else get_dataset_info(config.dataset)


def complete_folder_config(config: Config) -> None:
    """Fill in the class names, mean and std of a folder dataset (checking its layout and
    every image once); the config then describes the model without the folder."""
    if config.dataset != FOLDER:
        return
    root = resolve_data_dir(FOLDER, config.data_dir)
    layout = scan_folder(root)
    if config.classes is not None and tuple(config.classes) != layout.classes:
        raise DataError(f"{root / 'train'}: class folders {', '.join(layout.classes)} differ "
                        f"from the config's classes {', '.join(config.classes)}")
    config.classes = list(layout.classes)
    found = check_images(root, layout.train + layout.eval_files)
    if config.mean is None:
        mean, std = compute_stats(layout, config.in_channels, config.image_size, config.seed,
                                  config.num_parallel_workers)
        config.mean, config.std = list(mean), list(std)
    held = "" if layout.eval_dir else f", {config.val_split:g} held out for testing"
    tested = f", {len(layout.eval_files)} in {layout.eval_dir.name}/" if layout.eval_dir else ""
    print(f"{root}: {len(layout.classes)} classes ({', '.join(layout.classes[:10])}"
          f"{', ...' if len(layout.classes) > 10 else ''}), {len(layout.train)} images in "
          f"train/{held}{tested}; mean {config.mean}, std {config.std}", flush=True)
    for note in conversion_notes(found, config.in_channels, config.image_size):
        print(f"note: {note}", flush=True)


def create_split(config: Config, split: str, batch_size: int, data_dir: str | Path | None = None,
                 **kwargs) -> ds.Dataset:
    """`create_dataset` for the config's dataset (data_dir: the config's unless given)."""
    return create_dataset(config.dataset, split, batch_size,
                          data_dir=str(data_dir or config.data_dir or "") or None,
                          folder=folder_spec(config), crop_padding=config.crop_padding,
                          **kwargs)
