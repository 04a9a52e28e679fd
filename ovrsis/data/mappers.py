"""Dataset mapper for semantic segmentation: file records → model inputs.

Training: read and check image + mask, resize the shortest edge, random crop (limiting
any single class's share), colour jitter, horizontal flip, and pad to the crop size with
the ignore value so a batch stacks. Testing: resize the image only; ``height``/``width``
stay those of the original, the size the prediction is scored at.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

from ..errors import ConfigError
from .folder_dataset import DatasetError, check_mask_values, read_mask
from .raster import RasterImage, RasterSettings, convert, dataset_percentiles, read_raster


class ColorJitterTransform(T.Transform):
    """Photometric change of the image only: brightness, contrast, saturation, hue."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, image_format: str):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        image = img.astype(np.float32) + self.brightness
        mean = image.mean()
        image = (image - mean) * self.contrast + mean
        image = np.clip(image, 0, 255)
        if self.saturation != 1.0 or self.hue != 0.0:
            to_hsv, from_hsv = (
                (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
                if self.image_format == "RGB"
                else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
            )
            hsv = cv2.cvtColor(image / 255.0, to_hsv)  # float input: hue in degrees, s/v in [0, 1]
            hsv[..., 0] = (hsv[..., 0] + self.hue) % 360.0
            hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation, 0.0, 1.0)
            image = cv2.cvtColor(hsv, from_hsv) * 255.0
        return np.clip(np.rint(image), 0, 255).astype(img.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation  # labels do not change with colour


class ColorJitterAugmentation(T.Augmentation):
    """Random photometric jitter; each of the four changes happens with probability ``prob``.

    Remote-sensing imagery varies in sensor, season and illumination; jitter keeps the
    model from keying on absolute colour alone.
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
        prob: float = 0.5,
        image_format: str = "RGB",
    ):
        """``brightness_delta`` in 0..255 intensity units, ``hue_delta`` in degrees."""
        super().__init__()
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"colour jitter needs an RGB or BGR image, not {image_format!r}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> ColorJitterTransform:
        def maybe(low: float, high: float, neutral: float) -> float:
            return float(self._rand_range(low, high)) if self._rand_range() < self.prob else neutral

        return ColorJitterTransform(
            brightness=maybe(-self.brightness_delta, self.brightness_delta, 0.0),
            contrast=maybe(*self.contrast_range, 1.0),
            saturation=maybe(*self.saturation_range, 1.0),
            hue=maybe(-self.hue_delta, self.hue_delta, 0.0),
            image_format=self.image_format,
        )


class ResizeShortestEdge(T.ResizeShortestEdge):
    """detectron2's ``ResizeShortestEdge`` for every image shape: ``max_size`` 0 means no cap on
    the long side (instead of a 0x0 target), and no side rounds to 0 pixels (a 1x6000 strip under
    ``MAX_SIZE_TEST`` 2560 becomes 1x2560, not 0x2560, which Pillow cannot make). Otherwise the
    same sizes as detectron2's (``int(side · scale + 0.5)``)."""

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        if self.is_range:
            size = int(np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(np.random.choice(self.short_edge_length))
        if size == 0:
            return T.NoOpTransform()
        newh, neww = T.ResizeShortestEdge.get_output_shape(h, w, size, self.max_size if self.max_size > 0
                                                           else float("inf"))
        newh, neww = max(newh, 1), max(neww, 1)
        if (newh, neww) == (h, w):
            return T.NoOpTransform()
        return T.ResizeTransform(h, w, newh, neww, self.interp)


NO_DATA_LABEL = -1  # training ``sem_seg`` at the image's no-data pixels: left out of the loss entirely


class SemanticSegmentationMapper:
    """Turn a record from :func:`~ovrsis.data.folder_dataset.load_folder_dataset` into model input.

    Output: ``image`` (uint8 C×H×W tensor, in ``image_format``; 0 at no-data pixels), ``sem_seg``
    (int64 H×W, training only: class ids, the ignore value, :data:`NO_DATA_LABEL` at the image's
    no-data pixels), ``valid`` (bool H×W at the stored size, testing only, when the image has
    no-data pixels), plus the record's ``file_name``, ``height``, ``width``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        num_classes: int | None = None,
        ignore_value: int = 255,
        pad_to: tuple[int, int] | None = None,
        raster: RasterSettings = RasterSettings(),
        dataset_stats: dict | None = None,
    ):
        """``num_classes``/``ignore_value`` validate masks (training); ``pad_to`` is (h, w).
        ``raster`` turns stored values into RGB (a record's own ``raster`` entry wins);
        ``dataset_stats`` maps a dataset name to its ``percentile_dataset`` statistics."""
        if is_train and num_classes is None:
            raise ValueError("a training mapper needs num_classes to check masks")
        if image_format not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {image_format!r}")
        self.raster = raster
        self.dataset_stats = dict(dataset_stats or {})
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.pad_to = tuple(pad_to) if pad_to else None

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True, dataset_name: str | None = None) -> dict:
        """Training reads the vocabulary size and ignore value from ``dataset_name``'s metadata
        (default: the training datasets, which must then agree)."""
        names = [dataset_name] if dataset_name else list(cfg.DATASETS.TRAIN if is_train else ())
        raster = RasterSettings.from_config(cfg.INPUT.RASTER)
        stats = _percentile_stats(names, raster)
        if not is_train:
            augmentations = [ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
            return {"is_train": False, "augmentations": augmentations, "image_format": cfg.INPUT.FORMAT,
                    "raster": raster, "dataset_stats": stats}

        num_classes, ignore_value = _label_space(names)
        if not dataset_name:
            loss_ignore_value(cfg)  # a MODEL.LOSS.IGNORE_VALUE contradicting the datasets' fails before training
        augmentations = [
            ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
            )
        ]
        pad_to = None
        if cfg.INPUT.CROP.ENABLED:
            augmentations.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                    ignore_value,
                )
            )
            if cfg.INPUT.CROP.TYPE == "absolute":  # only a fixed crop size gives stackable batches
                pad_to = tuple(cfg.INPUT.CROP.SIZE)
        if cfg.INPUT.COLOR_AUG_SSD:
            augmentations.append(ColorJitterAugmentation(image_format=cfg.INPUT.FORMAT))
        augmentations.append(T.RandomFlip(horizontal=True, vertical=False))
        return {
            "is_train": True,
            "augmentations": augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": num_classes,
            "ignore_value": ignore_value,
            "pad_to": pad_to,
            "raster": raster,
            "dataset_stats": stats,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.deepcopy(dataset_dict)
        raster = self._read_image(record)
        image = raster.rgb
        record.setdefault("height", image.shape[0])
        record.setdefault("width", image.shape[1])
        if not self.is_train:
            if raster.valid is not None:  # the evaluator leaves no-data pixels out
                record["valid"] = torch.as_tensor(raster.valid)
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            record["image"] = _to_chw_tensor(aug_input.image)
            return record

        mask_path = record["sem_seg_file_name"]
        mask = read_mask(mask_path)
        check_mask_values(mask, self.num_classes, self.ignore_value, mask_path)
        if mask.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {mask_path} is {mask.shape[1]}×{mask.shape[0]} but image "
                f"{record['file_name']} is {image.shape[1]}×{image.shape[0]}"
            )
        if raster.valid is not None:  # no-data pixels: never part of the loss
            mask = np.where(raster.valid, mask.astype(np.int32), NO_DATA_LABEL)
        aug_input = T.AugInput(image, sem_seg=_resizable(mask))
        self.augmentations(aug_input)
        image, mask = aug_input.image, aug_input.sem_seg
        if self.pad_to is not None:
            image, mask = self._pad(image, mask)
        record["image"] = _to_chw_tensor(image)
        record["sem_seg"] = torch.as_tensor(mask.astype(np.int64))
        return record

    def _read_image(self, record: dict) -> RasterImage:
        """uint8 (H, W, 3) in ``image_format`` and its valid-pixel mask, through the one raster
        path (ovrsis.data.raster)."""
        settings = RasterSettings.from_dict(record["raster"]) if "raster" in record else self.raster
        if settings.scaling == "percentile_dataset" and settings.dataset_stats is None:
            stats = self.dataset_stats.get(record.get("dataset_name"))
            if stats is None:
                raise ConfigError(f"{settings.key}.SCALING 'percentile_dataset': no statistics for the dataset of "
                                  f"{record['file_name']}")
            settings = dataclasses.replace(settings, dataset_stats=stats)
        array, info = read_raster(record["file_name"])
        image = convert(array, info, settings)
        if self.image_format == "BGR":
            image.rgb = image.rgb[:, :, ::-1].copy()
        return image

    def _pad(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pad bottom/right up to ``pad_to``: zeros in the image, ignore in the mask."""
        pad_h = max(self.pad_to[0] - image.shape[0], 0)
        pad_w = max(self.pad_to[1] - image.shape[1], 0)
        if pad_h == 0 and pad_w == 0:
            return image, mask
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_value)
        return image, mask


def _percentile_stats(dataset_names: Sequence[str], default: RasterSettings) -> dict:
    """``percentile_dataset`` statistics of each dataset that uses that scaling (else nothing)."""
    stats = {}
    for name in dataset_names:
        own = MetadataCatalog.get(name).get("raster", None)
        settings = RasterSettings.from_dict(own) if own else default
        if settings.scaling == "percentile_dataset":
            files = [r["file_name"] for r in DatasetCatalog.get(name)]
            stats[name] = dataset_percentiles(files, settings)
    return stats


def loss_ignore_value(cfg: CfgNode) -> int:
    """The one ignore value of a run, from mapper to loss: the training datasets'
    ``IGNORE_VALUE`` (``DATASETS.TRAIN[0]``'s registration; the training mapper checks that the
    others agree). ``MODEL.LOSS.IGNORE_VALUE`` -1 takes it; any other value must equal it.
    Without a registered training dataset: ``MODEL.LOSS.IGNORE_VALUE``, or 255 for -1.

    Raises:
        ConfigError: ``MODEL.LOSS.IGNORE_VALUE`` contradicting the training dataset's.
    """
    declared = int(cfg.MODEL.LOSS.IGNORE_VALUE)
    name = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None
    if name is None or name not in MetadataCatalog.list():  # nothing to train on (evaluation, Predictor)
        return declared if declared >= 0 else 255
    registered = int(MetadataCatalog.get(name).get("ignore_label", 255))
    if declared >= 0 and declared != registered:
        raise ConfigError(
            f"MODEL.LOSS.IGNORE_VALUE {declared} contradicts the ignore value {registered} of the training dataset "
            f"{name!r} (its IGNORE_VALUE registration): the loss would treat its ignored pixels as labels. Set "
            "MODEL.LOSS.IGNORE_VALUE -1 (use the dataset's) or register the dataset with the value you mean")
    return registered


def _label_space(dataset_names: Sequence[str]) -> tuple[int, int]:
    """(number of classes, ignore value) shared by the given datasets."""
    if not dataset_names:
        raise ConfigError("DATASETS.TRAIN is empty: name at least one registered training dataset")
    spaces = {}
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        spaces.setdefault((tuple(meta.stuff_classes), meta.ignore_label), []).append(name)
    if len(spaces) != 1:
        described = "; ".join(f"{names}: {len(c)} classes {list(c)[:6]}{' ...' if len(c) > 6 else ''}, ignore {i}"
                              for (c, i), names in spaces.items())
        raise ConfigError(
            f"DATASETS.TRAIN {list(dataset_names)} do not share one label space ({described}). One training run "
            "has one vocabulary: train on one of them, or prepare them with the same class list and ignore "
            "value (remap their masks to one CLASS_NAMES list, e.g. with datasets/prepare_*.py) and register "
            "them with that list")
    return len(next(iter(spaces))[0]), next(iter(spaces))[1]


def _resizable(mask: np.ndarray) -> np.ndarray:
    """detectron2 resizes uint8 masks with PIL and others with torch, which rejects integer
    tensors; float32 holds every id below 2**24 exactly."""
    if mask.dtype == np.uint8:
        return mask
    return mask.astype(np.uint8) if mask.min() >= 0 and mask.max() <= 255 else mask.astype(np.float32)


def _to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
