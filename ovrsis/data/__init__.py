"""Datasets (folder layout, config registration, benchmarks, synthetic scenes), vocabularies, mappers.

Importing this package registers the benchmark datasets under the default root and the
built-in synthetic datasets with default parameters (lazily: nothing is read or generated
until a dataset is requested).
"""
from .folder_dataset import (
    DatasetError,
    check_mask_values,
    dataset_root,
    load_folder_dataset,
    read_mask,
    register_folder_dataset,
)
from .benchmarks import register_benchmark_datasets
from .mappers import ColorJitterAugmentation, SemanticSegmentationMapper
from .registration import register_datasets_from_config
from .synthetic import ensure_synthetic_dataset, register_synthetic_datasets
from .vocabulary import load_class_names

__all__ = [
    "ColorJitterAugmentation",
    "DatasetError",
    "SemanticSegmentationMapper",
    "check_mask_values",
    "dataset_root",
    "ensure_synthetic_dataset",
    "load_class_names",
    "load_folder_dataset",
    "read_mask",
    "register_datasets_from_config",
    "register_benchmark_datasets",
    "register_folder_dataset",
    "register_synthetic_datasets",
]

register_benchmark_datasets(dataset_root())
register_synthetic_datasets()
