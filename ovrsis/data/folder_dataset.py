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

from ..errors import ConfigError, DatasetError, close_names
from .raster import RASTER_EXTENSIONS, RasterError, RasterSettings, raster_info
from .vocabulary import VocabularySpec, check_class_names, class_key, load_class_names

IMAGE_EXTENSIONS = RASTER_EXTENSIONS
_EXAMPLES = 5  # how many offending names an error message lists


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
        kind = "colour-coded (RGB) labels" if mask.ndim == 3 and mask.shape[2] in (3, 4) else "several channels"
        raise DatasetError(
            f"mask {path} has shape {mask.shape}: {kind}; expected a single-channel index map of class ids "
            "(convert colour-coded labels to ids offline, e.g. with ovrsis.data.prepare's colour maps)"
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
    """Read an index mask as stored: (H, W) for single-band files, (H, W, C) otherwise.

    PNG/BMP through Pillow (palette PNGs give their indices, not colours; 16-bit PNGs keep
    their values; 1-bit masks give ids 0/1 as uint8); TIFF and other GDAL formats through rasterio. Raises :class:`DatasetError`
    naming the file for an unreadable, empty or truncated file.
    """
    if os.path.splitext(path)[1].lower() in (".png", ".bmp", ".gif"):
        try:
            with Image.open(path) as mask:
                array = np.asarray(mask)
                return array.astype(np.uint8) if array.dtype == bool else array  # mode "1": a 0/1 index map
        except (OSError, ValueError, SyntaxError) as err:
            size = os.path.getsize(path) if os.path.isfile(path) else None
            detail = "no such file" if size is None else ("empty file" if size == 0 else f"{size} bytes: {err}")
            raise DatasetError(f"cannot read mask {path}: {detail}") from err
    from .raster import read_raster

    try:
        array = read_raster(path)[0]
    except RasterError as err:
        raise DatasetError(str(err).replace("cannot read image", "cannot read mask")) from err
    return array[:, :, 0] if array.shape[2] == 1 else array


def load_folder_dataset(
    name: str,
    image_root: str,
    mask_root: str,
    image_ext: str | None = None,
    mask_ext: str = ".png",
    config_key: str | None = None,
) -> list[dict]:
    """List paired image/mask records, sorted by stem.

    ``image_ext=None`` accepts any of :data:`IMAGE_EXTENSIONS`. Height and width come
    from the image header only (no decoding; left out when the header is unreadable, which the
    pre-flight check and the mapper report). ``config_key`` is named in errors.
    """
    image_exts = (_normalise_ext(image_ext),) if image_ext else IMAGE_EXTENSIONS
    images = _files_by_stem(name, "image", image_root, image_exts, config_key and f"{config_key}.IMAGE_ROOT")
    masks = _files_by_stem(name, "mask", mask_root, (_normalise_ext(mask_ext),), config_key and f"{config_key}.MASK_ROOT")
    if not images:
        raise DatasetError(
            f"dataset {name!r}: no images with extension {' / '.join(image_exts)} in {image_root}"
        )
    _check_pairs(name, images, masks, image_root, mask_root)
    records = []
    for stem in sorted(images):
        record = {
            "file_name": images[stem],
            "sem_seg_file_name": masks[stem],
            "image_id": stem,
            "dataset_name": name,
        }
        size = _image_size(images[stem])
        if size is not None:  # an unreadable header is reported by the pre-flight check / the mapper
            record["width"], record["height"] = size
        records.append(record)
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
    config_key: str | None = None,
    raster: RasterSettings | None = None,
) -> None:
    """Register ``name`` in detectron2's catalogs, replacing any earlier registration.

    Metadata is set and checked now; the folders are read only when the dataset is
    requested (``DatasetCatalog.get``), so a dataset can be registered before it exists.
    ``before_load`` runs first at that point (the synthetic dataset generates itself).
    ``config_key`` (e.g. ``DATASETS.REGISTER.my_set``) is named in errors. ``raster``
    overrides ``INPUT.RASTER`` for this dataset's images (bands, value scaling).
    """
    key = config_key or f"dataset {name!r}"
    classes = load_class_names(class_names, f"{key}.CLASS_NAMES" if config_key else f"{key} class names")
    seen = _subset(name, "seen", seen_classes, classes)
    unseen = _subset(name, "unseen", unseen_classes, classes)
    both = sorted(set(seen) & set(unseen))
    if both:
        raise ValueError(f"dataset {name!r}: classes both seen and unseen: {both}")
    image_root, mask_root = str(image_root), str(mask_root)

    def load() -> list[dict]:
        if before_load is not None:
            before_load()
        records = load_folder_dataset(name, image_root, mask_root, image_ext, mask_ext, config_key)
        if raster is not None:
            for record in records:
                record["raster"] = raster.as_dict()
        return records

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
        raster=raster.as_dict() if raster is not None else None,
    )


def _image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the header (Pillow for common formats, rasterio when Pillow cannot);
    None when neither can read it."""
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (OSError, ValueError, SyntaxError):
        pass
    try:
        info = raster_info(path)
    except RasterError:
        return None
    return info.width, info.height


def _normalise_ext(ext: str) -> str:
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


def _files_by_stem(name: str, kind: str, folder: str, exts: Sequence[str], key: str | None = None
                   ) -> dict[str, str]:
    if not os.path.isdir(folder):
        state = "is a file, not a folder" if os.path.exists(folder) else "not found"
        where = f" (set by {key}; a relative path starts at DATASETS.ROOT)" if key else ""
        raise DatasetError(f"dataset {name!r}: {kind} folder {state}: {os.path.abspath(folder)}{where}")
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
    """The seen/unseen names as spelt in the class list (matched by :func:`class_key`: case and
    spaces aside, as the duplicate check compares them)."""
    subset = check_class_names(subset, f"dataset {name!r}: {kind} classes") if subset else []
    by_key = {class_key(c): c for c in classes}
    unknown = [c for c in subset if class_key(c) not in by_key]
    if unknown:
        hints = "".join(close_names(c, classes, 1) for c in unknown[:3])
        raise ConfigError(f"dataset {name!r}: {kind} classes {unknown} are not in its class list{hints}")
    return [by_key[class_key(c)] for c in subset]
