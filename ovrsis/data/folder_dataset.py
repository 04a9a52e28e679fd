"""Semantic-segmentation datasets stored as two parallel folders (images, index masks).

Every OVRSIS benchmark uses this layout (datasets.md §1.1): an image and its mask share
a file stem, masks hold contiguous ids ``0..K-1`` or the ignore value. One loader and
one set of checks serve the benchmarks, config-registered datasets and the synthetic
scenes, so a broken dataset fails the same clear way everywhere.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from .vocabulary import VocabularySpec, load_class_names

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_REGISTER_KEYS = {
    "IMAGE_ROOT", "MASK_ROOT", "CLASS_NAMES", "IGNORE_VALUE",
    "SEEN_CLASSES", "UNSEEN_CLASSES", "IMAGE_EXT", "MASK_EXT",
}
_REQUIRED_REGISTER_KEYS = ("IMAGE_ROOT", "MASK_ROOT", "CLASS_NAMES")
_EXAMPLES = 5  # how many offending names an error message lists


class DatasetError(ValueError):
    """A dataset on disk does not match what its registration promises."""


def dataset_root(cfg: CfgNode | None = None) -> str:
    """Folder that relative dataset paths start from.

    ``cfg.DATASETS.ROOT`` if set, else ``$DETECTRON2_DATASETS`` (detectron2's own
    convention), else ``./datasets``.
    """
    root = cfg.DATASETS.ROOT if cfg is not None else ""
    root = root or os.environ.get("DETECTRON2_DATASETS", "") or "datasets"
    return os.path.expanduser(root)


def check_mask_values(mask: np.ndarray, num_classes: int, ignore_value: int, path: str) -> None:
    """Raise if ``mask`` is not an index map of ids ``0..num_classes-1`` or ``ignore_value``.

    Out-of-range ids silently corrupt detectron2's confusion matrix and the loss targets,
    so they are caught where a mask is read.
    """
    if mask.ndim != 2:
        raise DatasetError(
            f"mask {path} has shape {mask.shape}; expected a single-channel index map "
            "(convert colour-coded labels to class ids offline)"
        )
    if mask.dtype.kind == "u" and mask.dtype.itemsize <= 2:  # bincount is linear-time, np.unique sorts
        values = np.flatnonzero(np.bincount(mask.ravel()))
    else:
        values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_value)]
    if bad.size:
        raise DatasetError(
            f"mask {path} holds ids {bad[:_EXAMPLES * 2].tolist()} outside 0..{num_classes - 1} "
            f"and the ignore value {ignore_value}"
        )


def read_mask(path: str) -> np.ndarray:
    """Read an index mask as stored (palette PNGs give their indices, not colours)."""
    try:
        with Image.open(path) as mask:
            return np.asarray(mask)
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"cannot read mask {path}: {err}") from err


def load_folder_dataset(
    name: str,
    image_root: str,
    mask_root: str,
    image_ext: str | None = None,
    mask_ext: str = ".png",
) -> list[dict]:
    """List paired image/mask records, sorted by stem.

    ``image_ext=None`` accepts any of :data:`IMAGE_EXTENSIONS`. Height and width come
    from the image header only (no decoding).
    """
    image_exts = (_normalise_ext(image_ext),) if image_ext else IMAGE_EXTENSIONS
    images = _files_by_stem(name, "image", image_root, image_exts)
    masks = _files_by_stem(name, "mask", mask_root, (_normalise_ext(mask_ext),))
    if not images:
        raise DatasetError(
            f"dataset {name!r}: no images with extension {' / '.join(image_exts)} in {image_root}"
        )
    _check_pairs(name, images, masks, image_root, mask_root)
    records = []
    for stem in sorted(images):
        width, height = _image_size(name, images[stem])
        records.append(
            {
                "file_name": images[stem],
                "sem_seg_file_name": masks[stem],
                "height": height,
                "width": width,
                "image_id": stem,
            }
        )
    return records


def register_folder_dataset(
    name: str,
    image_root: str | os.PathLike,
    mask_root: str | os.PathLike,
    class_names: VocabularySpec,
    ignore_value: int = 255,
    seen_classes: Sequence[str] | None = None,
    unseen_classes: Sequence[str] | None = None,
    image_ext: str | None = None,
    mask_ext: str = ".png",
    before_load: Callable[[], object] | None = None,
) -> None:
    """Register ``name`` in detectron2's catalogs, replacing any earlier registration.

    Metadata is set and checked now; the folders are read only when the dataset is
    requested (``DatasetCatalog.get``), so a dataset can be registered before it exists.
    ``before_load`` runs first at that point (the synthetic dataset generates itself).
    """
    classes = load_class_names(class_names)
    seen = _subset(name, "seen", seen_classes, classes)
    unseen = _subset(name, "unseen", unseen_classes, classes)
    both = sorted(set(seen) & set(unseen))
    if both:
        raise ValueError(f"dataset {name!r}: classes both seen and unseen: {both}")
    image_root, mask_root = str(image_root), str(mask_root)

    def load() -> list[dict]:
        if before_load is not None:
            before_load()
        return load_folder_dataset(name, image_root, mask_root, image_ext, mask_ext)

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        stuff_classes=classes,
        ignore_label=int(ignore_value),
        seen_classes=seen,
        unseen_classes=unseen,
        evaluator_type="sem_seg",
        image_root=image_root,
        sem_seg_root=mask_root,
    )


def register_datasets_from_config(cfg: CfgNode) -> None:
    """Register the benchmark datasets and every ``cfg.DATASETS.REGISTER`` entry under the
    dataset root, and re-register the synthetic scenes.

    Relative ``IMAGE_ROOT``/``MASK_ROOT`` start from :func:`dataset_root`; class-list
    files (``CLASS_NAMES``, ``SEEN_CLASSES``, ``UNSEEN_CLASSES`` given as a path) are
    read relative to the working directory like any other config path. A config entry
    may reuse a benchmark name to override it.
    """
    from .benchmarks import register_benchmark_datasets  # both build on this module
    from .synthetic import register_synthetic_datasets

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
            seen_classes=_optional_vocabulary(entry.get("SEEN_CLASSES")),
            unseen_classes=_optional_vocabulary(entry.get("UNSEEN_CLASSES")),
            image_ext=entry.get("IMAGE_EXT") or None,
            mask_ext=entry.get("MASK_EXT") or ".png",
        )
    synthetic = cfg.DATASETS.SYNTHETIC
    register_synthetic_datasets(
        root=synthetic.ROOT or None,
        image_size=synthetic.IMAGE_SIZE,
        num_train=synthetic.NUM_TRAIN,
        num_val=synthetic.NUM_VAL,
        seed=synthetic.get("SEED", 0),
    )


def _image_size(name: str, path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"dataset {name!r}: cannot read image {path}: {err}") from err


def _normalise_ext(ext: str) -> str:
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


def _files_by_stem(name: str, kind: str, folder: str, exts: Sequence[str]) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise DatasetError(f"dataset {name!r}: {kind} folder not found: {os.path.abspath(folder)}")
    files: dict[str, str] = {}
    for entry in os.scandir(folder):
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() not in exts or not entry.is_file():
            continue
        if stem in files:
            raise DatasetError(
                f"dataset {name!r}: two {kind}s share the stem {stem!r} in {folder}: "
                f"{os.path.basename(files[stem])}, {entry.name}"
            )
        files[stem] = entry.path
    return files


def _check_pairs(
    name: str, images: Mapping[str, str], masks: Mapping[str, str], image_root: str, mask_root: str
) -> None:
    without_mask = sorted(images.keys() - masks.keys())
    without_image = sorted(masks.keys() - images.keys())
    problems = []
    if without_mask:
        problems.append(
            f"{len(without_mask)} of {len(images)} images have no mask in {mask_root} "
            f"(e.g. {', '.join(without_mask[:_EXAMPLES])})"
        )
    if without_image:
        problems.append(
            f"{len(without_image)} of {len(masks)} masks have no image in {image_root} "
            f"(e.g. {', '.join(without_image[:_EXAMPLES])})"
        )
    if problems:
        raise DatasetError(
            f"dataset {name!r}: images and masks do not pair by file stem: " + "; ".join(problems)
        )


def _subset(name: str, kind: str, subset: Sequence[str] | None, classes: Sequence[str]) -> list[str]:
    subset = list(subset or [])
    unknown = [c for c in subset if c not in classes]
    if unknown:
        raise ValueError(f"dataset {name!r}: {kind} classes {unknown} are not in its class list")
    return subset


def _optional_vocabulary(spec) -> list[str] | None:
    return load_class_names(spec) if spec else None


def _check_register_entry(name: str, entry) -> None:
    """Unknown keys are typos that would otherwise be silently ignored."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"DATASETS.REGISTER.{name} must be a mapping of {sorted(_REGISTER_KEYS)}")
    unknown = sorted(set(entry) - _REGISTER_KEYS)
    missing = [key for key in _REQUIRED_REGISTER_KEYS if not entry.get(key)]
    if unknown or missing:
        raise ValueError(
            f"DATASETS.REGISTER.{name}: unknown keys {unknown}, missing keys {missing}; "
            f"allowed: {sorted(_REGISTER_KEYS)}"
        )
