"""Datasets: registry, locating and preparing files, download, `mindspore.dataset` pipelines."""

from ms_resnet.data.registry import DATASETS, DatasetInfo, get_dataset_info

__all__ = ["DATASETS", "DatasetInfo", "get_dataset_info"]
