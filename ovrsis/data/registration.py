"""Datasets named in the config: the benchmark records and every ``DATASETS.REGISTER`` entry
under the dataset root, and the synthetic scenes with ``DATASETS.SYNTHETIC``'s parameters.

This module sits above the three registries it feeds (:mod:`.folder_dataset`,
:mod:`.benchmarks`, :mod:`.synthetic`), so none of them imports another's registration.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from detectron2.config import CfgNode

from ..errors import ConfigError, close_names
from .benchmarks import register_benchmark_datasets
from .folder_dataset import dataset_root, register_folder_dataset
from .raster import RasterSettings
from .synthetic import register_synthetic_datasets
from .vocabulary import load_class_names

_RASTER_KEYS = {"BANDS", "SCALING", "RANGE", "PERCENTILES", "NODATA"}  # per-dataset INPUT.RASTER overrides
_REGISTER_KEYS = {
    "IMAGE_ROOT", "MASK_ROOT", "CLASS_NAMES", "IGNORE_VALUE",
    "SEEN_CLASSES", "UNSEEN_CLASSES", "IMAGE_EXT", "MASK_EXT", *_RASTER_KEYS,
}
_REQUIRED_REGISTER_KEYS = ("IMAGE_ROOT", "MASK_ROOT", "CLASS_NAMES")


def register_datasets_from_config(cfg: CfgNode) -> None:
    """Register the benchmark datasets and every ``cfg.DATASETS.REGISTER`` entry under the
    dataset root, and re-register the synthetic scenes.

    Relative ``IMAGE_ROOT``/``MASK_ROOT`` start from :func:`dataset_root`; class-list
    files (``CLASS_NAMES``, ``SEEN_CLASSES``, ``UNSEEN_CLASSES`` given as a path) are
    read relative to the working directory like any other config path. A config entry
    may reuse a benchmark name to override it.
    """
    root = dataset_root(cfg)
    register_benchmark_datasets(root)
    for name, entry in cfg.DATASETS.REGISTER.items():
        _check_register_entry(name, entry)
        register_folder_dataset(
            name,
            image_root=os.path.join(root, os.path.expanduser(entry.IMAGE_ROOT)),
            mask_root=os.path.join(root, os.path.expanduser(entry.MASK_ROOT)),
            class_names=entry.CLASS_NAMES,
            ignore_value=entry.get("IGNORE_VALUE", 255),
            seen_classes=_optional_vocabulary(entry.get("SEEN_CLASSES"), f"DATASETS.REGISTER.{name}.SEEN_CLASSES"),
            unseen_classes=_optional_vocabulary(entry.get("UNSEEN_CLASSES"),
                                                f"DATASETS.REGISTER.{name}.UNSEEN_CLASSES"),
            image_ext=entry.get("IMAGE_EXT") or None,
            mask_ext=entry.get("MASK_EXT") or ".png",
            config_key=f"DATASETS.REGISTER.{name}",
            raster=_raster_settings(name, entry, RasterSettings.from_config(cfg.INPUT.RASTER)),
        )
    synthetic = cfg.DATASETS.SYNTHETIC
    register_synthetic_datasets(
        root=synthetic.ROOT or None,
        image_size=synthetic.IMAGE_SIZE,
        num_train=synthetic.NUM_TRAIN,
        num_val=synthetic.NUM_VAL,
        seed=synthetic.get("SEED", 0),
    )


def _optional_vocabulary(spec, key: str) -> list[str] | None:
    return load_class_names(spec, key) if spec else None


def _raster_settings(name: str, entry, base: RasterSettings) -> RasterSettings | None:
    """A REGISTER entry's own raster settings (over ``base``, INPUT.RASTER) when it sets any of
    BANDS/SCALING/RANGE/PERCENTILES/NODATA."""
    if not _RASTER_KEYS & set(entry):
        return None
    return RasterSettings.from_config(entry, key=f"DATASETS.REGISTER.{name}", base=base)


def _check_register_entry(name: str, entry) -> None:
    """Unknown keys are typos that would otherwise be silently ignored."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"DATASETS.REGISTER.{name} must be a mapping of {sorted(_REGISTER_KEYS)}")
    problems = [f"unknown key {key!r}{close_names(key, _REGISTER_KEYS, 1)}" for key in sorted(set(entry) - _REGISTER_KEYS)]
    for key in _REQUIRED_REGISTER_KEYS:
        if key not in entry:
            problems.append(f"missing key {key!r}")
        elif entry[key] in ("", None) or (isinstance(entry[key], (list, tuple)) and not entry[key]):
            problems.append(f"{key} is empty")
    if problems:
        raise ConfigError(
            f"DATASETS.REGISTER.{name}: " + "; ".join(problems) + f" (keys: {sorted(_REGISTER_KEYS)})"
        )
