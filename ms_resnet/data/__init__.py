"""Datasets: registry, locating and preparing files, download, `mindspore.dataset` pipelines."""

from ms_resnet.data.folder import AUGMENTATIONS, FOLDER, FolderSpec
from ms_resnet.data.registry import DATASETS, DatasetInfo, get_dataset_info

__all__ = ["AUGMENTATIONS", "DATASETS", "FOLDER", "DatasetInfo", "FolderSpec",
           "get_dataset_info"]
