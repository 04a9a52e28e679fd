"""Shared machinery of the ``datasets/prepare_*.py`` scripts: raw download → registered layout.

Why one module: every benchmark is built the same way (datasets.md §1.1): pair a raw
image with its raw label, turn the label into contiguous ids (colour table, id table or
threshold), optionally cut tiles, write image/mask pairs into the folders of a catalog
record, then check the result against that record's class list. A script only says
where its raw files are and which :class:`Target` records they feed.

Re-runs are safe: files are written atomically, and each finished (raw sample, target)
pair leaves a marker holding the recipe's fingerprint, so an interrupted run resumes and
a changed recipe redoes only what it changes.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..modeling.tiling import tile_starts
from .benchmarks.catalog import RECORDS
from .benchmarks.records import DatasetRecord
from .folder_dataset import DatasetError, dataset_root, load_folder_dataset, read_mask

Image.MAX_IMAGE_PIXELS = None  # ISPRS/DOTA/Inria tiles exceed PIL's decompression-bomb guard
STATE_DIR = ".prepare_state"
_EXAMPLES = 5


# --- reading ------------------------------------------------------------------------------

def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 image. Multi-band TIFFs (FLAIR: R, G, B, NIR, elevation) keep their first
    three bands; that needs ``tifffile``, as PIL does not read them."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise DatasetError(f"cannot read image {path}: {err}") from err
        pil_error = err
    try:
        import tifffile
    except ImportError:
        raise DatasetError(f"cannot read image {path} with PIL ({pil_error}); multi-band TIFFs need "
                           "`pip install tifffile`") from pil_error
    try:
        bands = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for broken files
        raise DatasetError(f"cannot read image {path}: {err}") from err
    if bands.ndim == 3 and bands.shape[0] < min(bands.shape[1:]):  # channels first
        bands = np.moveaxis(bands, 0, -1)
    if bands.ndim != 3 or bands.shape[-1] < 3 or bands.dtype != np.uint8:
        raise DatasetError(f"image {path}: expected >= 3 uint8 bands, got {bands.shape} {bands.dtype}")
    return np.ascontiguousarray(bands[..., :3])


def read_label(path: Path) -> np.ndarray:
    """A raw label as stored: H x W ids (palette PNGs give indices) or H x W x 3 colours."""
    label = read_mask(str(path))
    if label.ndim == 3:
        label = label[..., :3]  # drop alpha
    return label


# --- label conversion -----------------------------------------------------------------------

class LabelMap:
    """Raw label → contiguous ids. ``key`` enters the recipe fingerprint."""

    key: str

    def __call__(self, label: np.ndarray, path: Path) -> np.ndarray:
        raise NotImplementedError


class ColourMap(LabelMap):
    """Colour-coded labels: ``colours[i]`` → ``ids[i]`` (default ``i``), ``extra`` colours
    (e.g. black boundaries) to given ids. Any other colour is an error unless ``unknown``
    names the id it becomes."""

    def __init__(self, colours: Sequence[tuple[int, int, int]], ids: Sequence[int] | None = None,
                 extra: Mapping[tuple[int, int, int], int] | None = None, unknown: int | None = None) -> None:
        ids = list(range(len(colours))) if ids is None else list(ids)
        table = dict(zip(map(tuple, colours), ids)) | dict(extra or {})
        self._codes = np.array([_colour_code(c) for c in table], dtype=np.int64)
        order = np.argsort(self._codes)
        self._codes = self._codes[order]
        self._ids = np.array(list(table.values()), dtype=np.uint8)[order]
        self._unknown = unknown
        self.key = f"colours{sorted(table.items())}->unknown{unknown}"

    def __call__(self, label: np.ndarray, path: Path) -> np.ndarray:
        if label.ndim != 3:
            raise DatasetError(f"label {path} is single-channel; expected a colour-coded (RGB) label")
        codes = _colour_code(np.moveaxis(label.astype(np.int64), -1, 0))
        index = np.clip(np.searchsorted(self._codes, codes), 0, len(self._codes) - 1)
        known = self._codes[index] == codes
        if not known.all() and self._unknown is None:
            values, counts = np.unique(codes[~known], return_counts=True)
            shown = ", ".join(f"{_colour_of(v)} x{n}" for v, n in list(zip(values, counts))[:_EXAMPLES])
            raise DatasetError(f"label {path} holds colours outside the class table: {shown}")
        return np.where(known, self._ids[index], self._unknown or 0).astype(np.uint8)


class IdMap(LabelMap):
    """Index labels: raw id → id through ``table``; raw ids not in it are an error unless
    ``default`` names the id they become."""

    def __init__(self, table: Mapping[int, int], default: int | None = None) -> None:
        self._table = dict(table)
        self._default = default
        self.key = f"ids{sorted(self._table.items())}->default{default}"

    def __call__(self, label: np.ndarray, path: Path) -> np.ndarray:
        if label.ndim != 2:
            raise DatasetError(f"label {path} has shape {label.shape}; expected a single-channel id map")
        lookup = np.full(max(int(label.max()), *self._table, 0) + 1, -1, dtype=np.int64)
        for raw, new in self._table.items():
            lookup[raw] = new
        mapped = lookup[label.astype(np.int64)]
        unmapped = mapped < 0
        if unmapped.any() and self._default is None:
            raise DatasetError(f"label {path} holds raw ids {np.unique(label[unmapped])[:10].tolist()} "
                               f"outside the conversion table {sorted(self._table)}")
        return np.where(unmapped, self._default or 0, mapped).astype(np.uint8)


class Threshold(LabelMap):
    """Binary tasks (§5): value >= ``at`` → 1 else 0 (SegEarth: 128; xBD: 1). Colour labels
    are reduced to their brightest channel first."""

    def __init__(self, at: int = 128) -> None:
        self._at = at
        self.key = f"threshold{at}"

    def __call__(self, label: np.ndarray, path: Path) -> np.ndarray:
        gray = label.max(axis=-1) if label.ndim == 3 else label
        return (gray >= self._at).astype(np.uint8)


def shifted_ids(num_raw: int, dropped: int = 0, ignore: int = 255) -> IdMap:
    """Raw ids ``0..num_raw-1`` with ``dropped`` → ignore and the others shifted down past it
    (LoveDA V2, OpenEarthMap for AerOSeg: no-data 0 → 255, 1..K → 0..K-1)."""
    return IdMap({raw: ignore if raw == dropped else raw - (raw > dropped) for raw in range(num_raw)})


def _colour_code(rgb) -> np.ndarray:
    return (rgb[0] * 256 + rgb[1]) * 256 + rgb[2]


def _colour_of(code: int) -> tuple[int, int, int]:
    return int(code) // 65536, int(code) // 256 % 256, int(code) % 256


# --- recipe -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One raw image/label pair. ``group`` is its raw split (or any tag targets select on)."""

    stem: str
    image: Path
    label: Path
    group: str = ""


@dataclass(frozen=True)
class Tiling:
    """Cut into ``size`` x ``size`` tiles every ``stride``; see :func:`tile_starts` for
    ``remainder``. ``drop_empty`` leaves out tiles whose mask is entirely ignore."""

    size: int
    stride: int
    remainder: str = "drop"
    drop_empty: bool = False


@dataclass(frozen=True)
class Target:
    """A catalog record fed by some of the sources.

    ``labels=None``: the raw label already holds the record's ids and is copied unchanged.
    ``groups``: the source groups that belong to this split (empty = all).
    """

    dataset: str
    labels: LabelMap | None = None
    groups: tuple[str, ...] = ()
    tiling: Tiling | None = None

    @property
    def record(self) -> DatasetRecord:
        return RECORDS[self.dataset]

    def fingerprint(self, recipe: str) -> str:
        key = f"{recipe}|{self.dataset}|{self.labels.key if self.labels else 'copy'}|{self.tiling}"
        return hashlib.sha1(key.encode()).hexdigest()


def prepare(sources: Sequence[Source], targets: Sequence[Target], root: str | os.PathLike, recipe: str) -> None:
    """Write every target's folders from ``sources``, skipping finished pairs, then check them."""
    root = str(root)
    sources = [s for s in sources if any(not t.groups or s.group in t.groups for t in targets)]
    if not sources:
        raise DatasetError("no raw image/label pairs found for the selected splits: check --raw and --splits "
                           "(the layout each script expects is in its --help and datasets/README.md)")
    _check_unique_stems(sources)
    done = skipped = 0
    for source in tqdm(sources, desc=recipe, unit="image", file=sys.stdout, mininterval=2):
        todo = [t for t in targets if (not t.groups or source.group in t.groups)
                and not _finished(root, t, source, recipe)]
        if not todo:
            skipped += 1
            continue
        _convert(source, todo, root)
        for target in todo:
            marker = _marker(root, target, source)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(target.fingerprint(recipe))
        done += 1
    print(f"{recipe}: converted {done} raw images, {skipped} already prepared")
    for record in _unique_folders(t.record for t in targets):
        check_dataset(record, root)


def _check_unique_stems(sources: Sequence[Source]) -> None:
    """Output files are named by stem, and splits may share a folder: stems must be unique."""
    seen: dict[str, Path] = {}
    for source in sources:
        if source.stem in seen:
            raise DatasetError(f"two raw images map to the output stem {source.stem!r}: {seen[source.stem]} and "
                               f"{source.image}")
        seen[source.stem] = source.image


def _marker(root: str, target: Target, source: Source) -> Path:
    return Path(root, STATE_DIR, target.dataset, source.group, source.stem + ".done")


def _finished(root: str, target: Target, source: Source, recipe: str) -> bool:
    marker = _marker(root, target, source)
    return marker.is_file() and marker.read_text() == target.fingerprint(recipe)


def _convert(source: Source, targets: Sequence[Target], root: str) -> None:
    image = read_rgb(source.image)
    raw = read_label(source.label)
    if raw.shape[:2] != image.shape[:2]:
        raise DatasetError(f"label {source.label} is {raw.shape[1]}x{raw.shape[0]} but image {source.image} is "
                           f"{image.shape[1]}x{image.shape[0]}")
    written: dict[tuple, Path] = {}  # content key → first file written with it (later ones link)
    for target in targets:
        record = target.record
        image_dir, mask_dir = (Path(p) for p in record.folders(root))
        ids = target.labels(raw, source.label) if target.labels else raw
        if ids.ndim != 2:
            raise DatasetError(f"label {source.label} has shape {raw.shape}; {record.name} needs a single-channel id "
                               "map (give the target a colour table)")
        image_ext = record.image_ext or ".png"
        label_key = target.labels.key if target.labels else "copy"
        if target.tiling is None:
            copy_image = source.image.suffix.lower() == image_ext.lower()
            copy_label = target.labels is None and source.label.suffix.lower() == record.mask_ext.lower()
            _emit(written, ("image", image_ext, None), image_dir / (source.stem + image_ext),
                  source.image if copy_image else image)
            _emit(written, ("label", label_key, record.mask_ext, None), mask_dir / (source.stem + record.mask_ext),
                  source.label if copy_label else ids)
            continue
        tiling = target.tiling
        size = tiling.size
        for y in tile_starts(image.shape[0], size, tiling.stride, tiling.remainder):
            for x in tile_starts(image.shape[1], size, tiling.stride, tiling.remainder):
                mask = ids[y:y + size, x:x + size]
                if tiling.drop_empty and (mask == record.ignore_value).all():
                    continue
                stem = f"{source.stem}_{y}_{x}"
                box = (y, x, size)
                _emit(written, ("image", image_ext, box), image_dir / (stem + image_ext),
                      image[y:y + size, x:x + size])
                _emit(written, ("label", label_key, record.mask_ext, box), mask_dir / (stem + record.mask_ext), mask)


def _emit(written: dict[tuple, Path], key: tuple, path: Path, content: np.ndarray | Path) -> None:
    """Write ``content`` (an array, or a file to copy) to ``path`` atomically; identical
    content already written for this sample is hard-linked instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    first = written.get(key)
    if first == path or (isinstance(content, Path) and content == path):  # targets sharing a folder
        return
    if first is not None or isinstance(content, Path):
        src = first if first is not None else content
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    else:
        _save_array(content, tmp, path.suffix.lower())
    os.replace(tmp, path)
    written.setdefault(key, path)


def _save_array(array: np.ndarray, tmp: Path, suffix: str) -> None:
    formats = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95}), ".jpeg": ("JPEG", {"quality": 95}),
               ".tif": ("TIFF", {"compression": "tiff_lzw"}), ".tiff": ("TIFF", {"compression": "tiff_lzw"})}
    if suffix not in formats:
        raise ValueError(f"cannot write {suffix} files")
    name, options = formats[suffix]
    Image.fromarray(np.ascontiguousarray(array)).save(tmp, format=name, **options)


def _unique_folders(records: Iterable[DatasetRecord]) -> list[DatasetRecord]:
    by_folder: dict[tuple[str, str], DatasetRecord] = {}
    for record in records:
        by_folder.setdefault((record.image_dir, record.mask_dir), record)
    return list(by_folder.values())


# --- label sanity check ---------------------------------------------------------------------------

def check_dataset(record: DatasetRecord, root: str) -> np.ndarray:
    """Pre-flight check of a prepared benchmark dataset (:mod:`ovrsis.data.preflight`) plus a
    histogram of mask values against the record's class list.

    Prints one row per class (pixels, share) and the ignore count, and raises
    :class:`DatasetError` naming every problem (ids that are neither a class nor the ignore
    value, unreadable files, size mismatches, ...). Returns the histogram (index = mask value).
    """
    from .preflight import print_report, scan_records

    image_dir, mask_dir = record.folders(root)
    samples = load_folder_dataset(record.name, image_dir, mask_dir, record.image_ext, record.mask_ext)
    report = scan_records(record.name, samples, record.classes, record.ignore_value, use_cache=False)
    print(f"{record.name}: {len(samples)} image/mask pairs in {mask_dir}")
    print_report(report)
    if not report.ok:
        raise DatasetError(report.describe())
    return report.histogram


# --- command line -----------------------------------------------------------------------------------

def parse_args(description: str, argv: Sequence[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None,
               raw: bool = True) -> argparse.Namespace:
    """``--raw`` (the official download, extracted; unless ``raw=False``) and ``--root``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if raw:
        parser.add_argument("--raw", type=Path, required=True, help="folder of the extracted official download")
    parser.add_argument("--root", default=dataset_root(),
                        help="dataset root (default: $DETECTRON2_DATASETS or ./datasets)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if raw and not args.raw.is_dir():
        parser.error(f"--raw {args.raw} is not a folder")
    return args


def add_unknown_colour_option(parser: argparse.ArgumentParser) -> None:
    """For colour-coded labels: what a colour outside the class table becomes."""
    parser.add_argument("--unknown-colour", type=int, default=None, metavar="ID",
                        help="map colours outside the class table to this id (e.g. 255) instead of failing")


def add_splits_option(parser: argparse.ArgumentParser, default: Sequence[str], choices: Sequence[str]) -> None:
    """Which raw splits form a single registered ``all`` split."""
    parser.add_argument("--splits", nargs="+", default=list(default), choices=list(choices),
                        help=f"raw splits to include (default: {' '.join(default)})")


def find_files(folder: Path, pattern: str) -> list[Path]:
    """Files under ``folder`` (recursively) matching a glob ``pattern``, sorted."""
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


def pair_by_stem(images: Iterable[Path], labels: Iterable[Path], *, label_stem: Callable[[str], str] = str,
                 image_stem: Callable[[str], str] = str, group: str = "") -> list[Source]:
    """Pair images and labels whose (transformed) stems agree; an unpaired file is an error."""
    by_stem = {image_stem(p.stem): p for p in images}
    label_by_stem = {label_stem(p.stem): p for p in labels}
    lonely_images = sorted(by_stem.keys() - label_by_stem.keys())
    lonely_labels = sorted(label_by_stem.keys() - by_stem.keys())
    if lonely_images or lonely_labels:
        raise DatasetError(
            f"raw images and labels do not pair: {len(lonely_images)} images without a label "
            f"(e.g. {[str(by_stem[s]) for s in lonely_images[:_EXAMPLES]]}), {len(lonely_labels)} labels without an "
            f"image (e.g. {[str(label_by_stem[s]) for s in lonely_labels[:_EXAMPLES]]})")
    return [Source(stem, by_stem[stem], label_by_stem[stem], group) for stem in sorted(by_stem)]


def split_folder_pairs(raw: Path, splits: Sequence[str], image_dir: str, label_dir: str,
                       image_suffixes: Sequence[str] = (".jpg", ".png", ".tif"), label_suffix: str = ".png") -> list[Source]:
    """Pairs from downloads laid out as ``<split>/<image_dir>`` + ``<split>/<label_dir>``
    anywhere under ``raw`` (UDD5, VDD, OVRSIS95K); each source's group is its split."""
    sources = []
    for split in splits:
        folders = sorted(p for p in raw.rglob(split) if (p / image_dir).is_dir() and (p / label_dir).is_dir())
        for folder in folders:
            images = [p for p in find_files(folder / image_dir, "*") if p.suffix.lower() in image_suffixes]
            labels = [p for p in find_files(folder / label_dir, "*") if p.suffix.lower() == label_suffix]
            sources += pair_by_stem(images, labels, group=split)
    return sources
