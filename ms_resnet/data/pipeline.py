"""`mindspore.dataset` pipelines: reader -> augmentation -> normalisation -> random erasing
(if on) -> batches."""

from __future__ import annotations

import os
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
from mindspore.dataset import transforms, vision

from ms_resnet.data.folder import (
    FOLDER,
    FolderSpec,
    check_images,
    folder_reader,
    folder_transforms,
    scan_folder,
)
from ms_resnet.data.prepare import prepare_split, resolve_data_dir
from ms_resnet.data.registry import DatasetInfo, get_dataset_info


def _reader(info: DatasetInfo, folder: Path, split: str, shuffle: bool,
            num_samples: int | None, num_shards: int | None,
            shard_id: int | None, workers: int) -> ds.Dataset:
    reader_cls = getattr(ds, info.reader)
    if issubclass(reader_cls, ds.GeneratorDataset):
        # A Python reader (SVHNDataset) with 2 workers ships every image between processes:
        # measured 1,800-2,700 img/s against 8,100 with 1 (benchmarks/RESULTS.md).
        workers = 1
    kwargs = {"usage": split, "num_parallel_workers": workers}
    if num_shards and not shuffle:
        # Evaluation: every image exactly once over all shards, which may differ in length by
        # one. MindSpore's own sharding pads the shorter shards with repeated images (1,000
        # images on 3 shards: 3 x 334), which would be counted twice.
        size = reader_cls(str(folder), usage=split).get_dataset_size()
        total = min(num_samples or size, size)
        kwargs.update(sampler=ds.SubsetSampler(list(range(shard_id, total, num_shards))))
    elif num_shards and num_samples:
        # Training: disjoint shards of the first N images, each reshuffled every epoch, of equal
        # length so that every rank runs the same number of steps (their gradients are
        # all-reduced at each one); up to num_shards - 1 images are left out.
        shard = list(range(shard_id, num_samples - num_samples % num_shards, num_shards))
        kwargs.update(sampler=ds.SubsetRandomSampler(shard))
    elif num_shards:
        kwargs.update(shuffle=shuffle, num_shards=num_shards, shard_id=shard_id)
    elif num_samples and shuffle:
        # A fixed subset (the first N images), reshuffled every epoch.
        kwargs.update(sampler=ds.SubsetRandomSampler(list(range(num_samples))))
    elif num_samples:
        kwargs.update(sampler=ds.SequentialSampler(num_samples=num_samples))
    else:
        kwargs.update(shuffle=shuffle)
    return reader_cls(str(folder), **kwargs)


def image_transforms(info: DatasetInfo, train: bool, augment: bool = True,
                     crop_padding: int | None = None) -> list:
    """Per-image ops on HWC uint8 input; the result is a normalised CHW float32 array."""
    ops = []
    if train and augment:
        padding = info.crop_padding if crop_padding is None else crop_padding
        ops.append(vision.RandomCrop(info.image_size, padding=padding))
        if info.hflip:
            ops.append(vision.RandomHorizontalFlip())
    ops += [vision.Rescale(1.0 / 255.0, 0.0),
            vision.Normalize(mean=list(info.mean), std=list(info.std)),
            vision.HWC2CHW()]
    return ops


def create_dataset(dataset: str, split: str, batch_size: int, *,
                   data_dir: str | None = None, train: bool | None = None,
                   augment: bool = True, random_erasing: float = 0.0,
                   num_samples: int | None = None,
                   num_shards: int | None = None, shard_id: int | None = None,
                   num_parallel_workers: int = 2,
                   folder: FolderSpec | None = None,
                   crop_padding: int | None = None) -> ds.Dataset:
    """Build the batched pipeline for one split.

    `dataset` "folder" reads your own images from `data_dir` as `folder` describes them (class
    order, channels, size, normalisation, augmentation; see ms_resnet.data.folder).

    `train` (default: split == "train") turns on shuffling, augmentation and dropping the last
    partial batch, which keeps every training step the same shape so the graph compiles once.
    `random_erasing` is the probability of erasing a rectangle of a training image;
    `crop_padding` the pixels of the random crop's padding (default: the dataset's).
    """
    train = split == "train" if train is None else train
    # MindSpore refuses more workers than CPUs: a config written for a bigger machine still runs.
    num_parallel_workers = min(num_parallel_workers, os.cpu_count() or 1)
    if dataset == FOLDER:
        if folder is None:
            raise ValueError("dataset 'folder' needs its FolderSpec")
        # Evaluation: the model's classes are known, so test/ or val/ alone will do.
        layout = scan_folder(resolve_data_dir(dataset, data_dir), None if train else folder.classes)
        check_images(layout.root, layout.train + layout.eval_files)
        data = folder_reader(layout, split, folder, train, num_samples, num_shards, shard_id,
                             num_parallel_workers)
        ops = folder_transforms(folder, train, augment, crop_padding)
    else:
        info = get_dataset_info(dataset)
        reader_dir = prepare_split(info, resolve_data_dir(dataset, data_dir), split)
        data = _reader(info, reader_dir, split, train, num_samples, num_shards, shard_id,
                       num_parallel_workers)
        ops = image_transforms(info, train, augment, crop_padding)
    data = data.map(operations=ops, input_columns="image",
                    num_parallel_workers=num_parallel_workers)
    if train and augment and random_erasing:
        # RandomErasing is a Python op drawing from Python's global RNG: one worker keeps the
        # draws in image order, so a fixed seed still gives the same images. It runs after
        # normalisation, so its standard-normal noise matches the data's scale.
        data = data.map(operations=vision.RandomErasing(prob=random_erasing, value="random"),
                        input_columns="image", num_parallel_workers=1)
    data = data.map(operations=transforms.TypeCast(ms.int32), input_columns="label",
                    num_parallel_workers=num_parallel_workers)
    return data.batch(batch_size, drop_remainder=train)
