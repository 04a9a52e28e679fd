"""Shared machinery of the ``datasets/prepare_*.py`` scripts: raw download → registered layout.

Why one module: every benchmark is built the same way (datasets.md §1.1): find the raw
images and labels in the release as it ships (:class:`RawDownload`: folders or archives,
known release quirks handled by name and counted), pair them, read them through the runtime
readers (:func:`read_image`: :mod:`ovrsis.data.raster`; labels: :func:`read_mask` or, for
colour tables, :func:`~ovrsis.data.raster.read_raster`), turn the label into contiguous ids
(colour table, id table or threshold), optionally cut tiles, write image/mask pairs into the
folders of a catalog record, then check the result against that record's class list. A
script only says what the release looks like and which :class:`Target` records it feeds.

Reading rules (no silent conversion): an image is copied byte for byte only when it already
is 8-bit, 3-band RGB in the output format; otherwise it is converted by the ``--bands`` /
``--scaling`` / ``--range`` / ``--percentiles`` flags (the meaning of ``INPUT.RASTER``), or
refused with a message naming the file and the flag. A single-band image where RGB is
expected is refused unless ``--bands 1`` (grey) is given or the release is known to ship
grey images (a named quirk). CMYK/Lab files are refused by the reader.

Re-runs are safe: files are written atomically, and each finished (raw sample, target)
pair leaves a marker holding the recipe's fingerprint, so an interrupted run resumes and
a changed recipe redoes only what it changes. ``--dry-run`` reads headers only and reports
what would be read and written, per split.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import shutil
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from .archives import Archive, extracted_beside, find_archives, is_unpacked, members, open_zip, unpack
from .benchmarks.catalog import RECORDS
from .benchmarks.records import DatasetRecord
from .folder_dataset import DatasetError, _image_size, dataset_root, load_folder_dataset, read_mask
from .raster import SCALINGS, RasterError, RasterSettings, dataset_percentiles, read_raster, to_rgb8
from .tile_grid import tile_starts

Image.MAX_IMAGE_PIXELS = None  # ISPRS/DOTA/Inria tiles exceed PIL's decompression-bomb guard
STATE_DIR = ".prepare_state"
FLAG_KEY = "PREPARE"  # RasterSettings.key: its messages are rewritten to name the flags below
_FLAGS = {f"{FLAG_KEY}.BANDS": "--bands", f"{FLAG_KEY}.SCALING": "--scaling", f"{FLAG_KEY}.RANGE": "--range",
          f"{FLAG_KEY}.PERCENTILES": "--percentiles"}
_EXAMPLES = 5
BOTH = "files both extracted under --raw and inside an archive there (same size): the extracted copy is read"
_LISTED = 15
_MAGIC = {".png": (b"\x89PNG",), ".jpg": (b"\xff\xd8",), ".jpeg": (b"\xff\xd8",),
          ".tif": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), ".tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")}


# --- the raw download ---------------------------------------------------------------------------

class RawDownload:
    """The raw download of one dataset as the user has it.

    ``raw`` is a folder (extracted files and/or archives) or one archive file. Every archive
    (zip, split zip ``X.z01 … X.zip``, tar) is unpacked once under
    ``<root>/.prepare_state/unpacked/<its path under raw>/`` (:mod:`ovrsis.data.archives`);
    :meth:`files` searches the folder and everything unpacked. With ``dry_run`` nothing is
    unpacked: archive members are listed by name instead.

    ``expected`` is the release layout the script reads (written in every error, with a
    listing of what was found). Release quirks a script handles by name are recorded with
    :meth:`skip` (files left out) and :meth:`note` (files converted by a stated rule) and
    printed by :func:`prepare`.
    """

    def __init__(self, raw: Path, root: str, expected: str, *, dry_run: bool = False,
                 settings: RasterSettings | None = None) -> None:
        self.raw = Path(raw)
        self.expected = expected
        self.dry_run = dry_run
        self.settings = settings or RasterSettings(key=FLAG_KEY)
        self.skipped: dict[str, list[Path]] = {}
        self.noted: dict[str, list[Path]] = {}
        self.folders: list[Path] = [self.raw] if self.raw.is_dir() else []
        self._root = Path(root).resolve()
        self._listing: list[Path] | None = None
        self.pending: list[tuple[Archive, Path]] = []
        self._virtual: dict[Path, tuple[Archive, str, int]] = {}
        self._unpacked: list[Path] = []
        base = self.raw if self.raw.is_dir() else self.raw.parent
        for archive in find_archives(self.raw):
            beside = extracted_beside(archive) if self.raw.is_dir() else None
            if beside is not None:  # downloaded and extracted in place: read the files, once
                self.note("archive already extracted beside it: its extracted files are read", archive.path)
                continue
            dest = Path(root, STATE_DIR, "unpacked", archive.path.parent.relative_to(base), archive.name)
            if dry_run and not is_unpacked(archive, dest):
                self.pending.append((archive, dest))
                for name, size in members(archive).items():
                    if not any(_foreign(part) for part in Path(name).parts):
                        self._virtual[dest / name] = (archive, name, size)
                continue
            unpack(archive, dest)
            self.folders.append(dest)
            self._unpacked.append(dest)

    def files(self, pattern: str = "*", under: str | None = None) -> list[Path]:
        """Files (sorted) whose name matches the glob ``pattern``, anywhere in the download;
        ``under``: only those with a folder of that name (or path tail, ``a/b``) above them.
        Hidden files and folders, macOS ``__MACOSX`` folders and the dataset root (when it
        lies inside ``--raw``) are never part of the download."""
        if self._listing is None:
            listing = set(self._virtual)
            for folder in self.folders:
                listing |= set(_walk(folder, skip=self._root))
            self._listing = sorted(p for p in listing if not any(_foreign(part) for part in p.parts[-2:]))
        found = [p for p in self._listing if fnmatch.fnmatchcase(p.name, pattern)]
        if under is not None:
            tail = tuple(Path(under).parts)
            found = [p for p in found if any(p.parts[i:i + len(tail)] == tail for i in range(len(p.parts) - 1))]
        return found

    def glob(self, pattern: str, suffixes: Sequence[str] = ()) -> list[Path]:
        """Files whose path ends with the relative glob ``pattern`` (``val/image/*``), anywhere in
        the download; ``suffixes``: only these (case-insensitive)."""
        return [p for p in self.files() if p.match(pattern) and (not suffixes or p.suffix.lower() in suffixes)]

    def read_text(self, path: Path) -> str:
        """A small text file of the download (split lists), also from a not-yet-unpacked archive."""
        if path in self._virtual:
            archive, name, _ = self._virtual[path]
            if archive.kind == "tar":
                with tarfile.open(archive.path) as tar:
                    return tar.extractfile(name).read().decode()
            with open_zip(archive) as zf:
                return zf.read(name).decode()
        return path.read_text()

    def from_archive(self, path: Path) -> bool:
        """Whether ``path`` comes out of an archive (unpacked by us, or listed in a dry run)."""
        return path in self._virtual or any(folder in path.parents for folder in self._unpacked)

    def size(self, path: Path) -> int:
        return self._virtual[path][2] if path in self._virtual else path.stat().st_size

    def by_key(self, files: Iterable[Path], key: Callable[[Path], str], kind: str = "files") -> dict[str, Path]:
        """``{key(file): file}``; a file both extracted and inside an archive here is read once
        (counted), any other two files with one key are an error naming both."""
        return _by_key(files, key, kind, self)

    def skip(self, quirk: str, paths: Iterable[Path]) -> None:
        """Leave ``paths`` out under the named release quirk (counted in the log)."""
        paths = list(paths)
        if paths:
            self.skipped.setdefault(quirk, []).extend(paths)

    def note(self, quirk: str, path: Path) -> None:
        """Record that ``path`` was converted by the stated rule of a named quirk."""
        self.noted.setdefault(quirk, []).append(path)

    def error(self, problem: str) -> DatasetError:
        """``problem``, the expected layout and a listing of what the download holds."""
        return DatasetError(f"{problem}\n  expected (release layout): {self.expected}\n{self.describe()}")

    def describe(self) -> str:
        files = self.files()
        listed = [str(_shown(p, self.raw)) for p in files[:_LISTED]]
        kinds = Counter(p.suffix.lower() or "(none)" for p in files)
        lines = [f"  found under {self.raw}: {len(files)} files ({', '.join(f'{n} {k}' for k, n in kinds.most_common())})"]
        lines += [f"    {name}" for name in listed]
        if len(files) > _LISTED:
            lines.append(f"    … and {len(files) - _LISTED} more")
        if self.folders and any(f != self.raw for f in self.folders):
            lines.append("  (archives were unpacked under " + ", ".join(str(f) for f in self.folders if f != self.raw)
                         + ")")
        return "\n".join(lines)

    def report(self) -> None:
        """Print the quirks handled since the last report (one line per quirk), then forget them."""
        for quirk, paths in self.skipped.items():
            print(f"release quirk handled: {quirk}: {len(paths)} file(s) left out "
                  f"(e.g. {[p.name for p in paths[:3]]})")
        for quirk, paths in self.noted.items():
            print(f"release quirk handled: {quirk}: {len(paths)} file(s) (e.g. {[p.name for p in paths[:3]]})")
        self.skipped, self.noted = {}, {}


def _foreign(name: str) -> bool:
    """Entries that are never release files: hidden ones (``.x``, macOS ``._x``) and ``__MACOSX``."""
    return name.startswith(".") or name == "__MACOSX"


def _walk(folder: Path, skip: Path) -> Iterable[Path]:
    """Files under ``folder``, not descending into ``skip``, hidden folders or ``__MACOSX``."""
    for parent, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _foreign(d) and Path(parent, d).resolve() != skip)
        yield from (Path(parent, n) for n in names if not _foreign(n))


def _shown(path: Path, raw: Path) -> Path:
    for base in (raw, raw.parent):
        try:
            return path.relative_to(base)
        except ValueError:
            pass
    parts = path.parts
    return Path(*parts[parts.index("unpacked") + 1:]) if "unpacked" in parts else path


# --- reading ------------------------------------------------------------------------------

def read_image(path: Path, settings: RasterSettings, bands: tuple[int, ...] = (),
               grey_quirk: str | None = None, raw: RawDownload | None = None) -> tuple[np.ndarray, bool]:
    """H x W x 3 uint8 RGB through the runtime reader, and whether the file already held exactly that.

    ``bands``: the release's documented band order for this file (e.g. FLAIR R, G, B, NIR,
    elevation → ``(1, 2, 3)``), used unless the user passed ``--bands``. A single-band image is
    refused unless ``--bands 1`` is given or ``grey_quirk`` names the release's known grey
    images (they are then replicated to grey RGB and counted under that name).

    Raises:
        DatasetError: unreadable file, or a conversion only the user can choose, naming the
        file and the flag (``--bands``, ``--scaling``, ``--range``).
    """
    try:
        array, info = read_raster(str(path))
    except RasterError as err:
        raise DatasetError(_flag_message(str(err))) from err
    if not settings.bands and bands:
        settings = replace(settings, bands=bands)
    if array.shape[2] == 1 and not settings.bands:
        if grey_quirk is None:
            raise DatasetError(
                f"image {info.describe()} has a single band where an RGB image is expected (a grey or "
                "mis-exported tile would give grey crops); pass --bands 1 to write it as grey RGB, or replace the file")
        if raw is not None:
            raw.note(grey_quirk, path)
        settings = replace(settings, bands=(1,))  # one band: grey RGB (raster.py)
    try:
        rgb = to_rgb8(array, info, settings)
    except RasterError as err:
        raise DatasetError(_flag_message(str(err))) from err
    exact = (array.dtype == np.uint8 and array.shape[2] == 3 and settings.bands in ((), (1, 2, 3))
             and settings.scaling == "auto" and info.nodata is None)
    return rgb, exact


def read_label(path: Path, colours: bool) -> np.ndarray:
    """A raw label as stored, through the runtime readers.

    ``colours=False``: :func:`read_mask` — H x W ids (palette PNGs give their indices,
    16-bit values kept) or H x W x C for multi-band files. ``colours=True`` (colour tables):
    :func:`read_raster` — H x W x 3 colours (palette PNGs give their palette colours); an alpha
    band is dropped; a label that is not 8-bit is refused.
    """
    if not colours:
        label = read_mask(str(path))
        return label[..., :3] if label.ndim == 3 else label
    try:
        array, info = read_raster(str(path))
    except RasterError as err:
        raise DatasetError(str(err).replace("cannot read image", "cannot read label")) from err
    if array.dtype != np.uint8:
        raise DatasetError(f"label {info.describe()}: colour-coded labels must be 8-bit, got {array.dtype}")
    return array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3]


def _flag_message(message: str) -> str:
    for key, flag in _FLAGS.items():
        message = message.replace(key, flag)
    return message


# --- label conversion -----------------------------------------------------------------------

class LabelMap:
    """Raw label → contiguous ids. ``key`` enters the recipe fingerprint; ``colours`` says
    whether it reads colours (palette PNGs expanded) or ids (palette indices)."""

    key: str
    colours: bool = False

    def __call__(self, label: np.ndarray, path: Path) -> np.ndarray:
        raise NotImplementedError

    def quirks(self, label: np.ndarray) -> list[str]:
        """Names of release quirks present in ``label`` (counted in the log)."""
        return []


class ColourMap(LabelMap):
    """Colour-coded labels: ``colours[i]`` → ``ids[i]`` (default ``i``), ``extra`` colours
    (e.g. black boundaries) to given ids. Any other colour is an error unless ``unknown``
    names the id it becomes."""

    colours = True

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
            raise DatasetError(f"label {path} holds colours outside the class table: {shown} "
                               "(pass --unknown-colour 255 to ignore them)")
        return np.where(known, self._ids[index], self._unknown or 0).astype(np.uint8)


class IdMap(LabelMap):
    """Index labels: raw id → id through ``table``; raw ids not in it are an error unless
    ``default`` names the id they become. ``quirk_ids``: raw ids whose presence is a named
    release quirk (mapped by ``table`` like any other, and counted)."""

    def __init__(self, table: Mapping[int, int], default: int | None = None,
                 quirk_ids: Mapping[int, str] | None = None) -> None:
        self._table = dict(table)
        self._default = default
        self._quirk_ids = dict(quirk_ids or {})
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

    def quirks(self, label: np.ndarray) -> list[str]:
        return [name for raw, name in self._quirk_ids.items() if label.ndim == 2 and (label == raw).any()]


class IdsOrColours(LabelMap):
    """Releases distributed both ways (DLRSD): single-channel labels (index or palette PNGs,
    read as indices) go through ``ids``, RGB labels through ``colours``."""

    def __init__(self, ids: IdMap, colours: ColourMap) -> None:
        self._ids, self._colours = ids, colours
        self.key = f"{ids.key}|{colours.key}"

    def __call__(self, label: np.ndarray, path: Path) -> np.ndarray:
        return (self._ids if label.ndim == 2 else self._colours)(label, path)

    def quirks(self, label: np.ndarray) -> list[str]:
        return (self._ids if label.ndim == 2 else self._colours).quirks(label)


class Threshold(LabelMap):
    """Binary tasks (§5): value >= ``at`` → 1 else 0 (SegEarth-OV's converters: 128; xBD: 1).
    Colour labels are first reduced to grey with OpenCV's BT.601 luma (0.299 R + 0.587 G +
    0.114 B), which is what the converters' ``cv2.imread(..., IMREAD_GRAYSCALE)`` computes."""

    def __init__(self, at: int = 128) -> None:
        self._at = at
        self.key = f"threshold{at}-luma"

    def __call__(self, label: np.ndarray, path: Path) -> np.ndarray:
        if self._at > 1 and 0 < int(label.max()) < self._at:
            raise DatasetError(f"label {path} holds values up to {int(label.max())} only, all below the threshold "
                               f"{self._at}: it looks already converted (0/1); pass the release's 0/255 labels")
        gray = cv2.cvtColor(np.ascontiguousarray(label.astype(np.uint8)), cv2.COLOR_RGB2GRAY) if label.ndim == 3 \
            else label
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
    """One raw image/label pair. ``group`` is its raw split (or any tag targets select on);
    ``bands``: the release's documented RGB band order for this image (``()``: the file's)."""

    stem: str
    image: Path
    label: Path
    group: str = ""
    bands: tuple[int, ...] = ()


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

    def takes(self, source: Source) -> bool:
        return not self.groups or source.group in self.groups

    def fingerprint(self, recipe: str, settings: RasterSettings) -> str:
        key = f"{recipe}|{self.dataset}|{self.labels.key if self.labels else 'copy'}|{self.tiling}|{settings.as_dict()}"
        return hashlib.sha1(key.encode()).hexdigest()


def prepare(sources: Sequence[Source], targets: Sequence[Target], root: str | os.PathLike, recipe: str,
            raw: RawDownload | None = None, grey_quirk: str | None = None, dry_run: bool | None = None) -> None:
    """Write every target's folders from ``sources``, skipping finished pairs, then check them.

    With ``dry_run`` (default: ``raw.dry_run``) only report what would be read and written.
    ``grey_quirk``: the name of the release's known single-band images (see :func:`read_image`).
    """
    root = str(root)
    settings = raw.settings if raw is not None else RasterSettings(key=FLAG_KEY)
    sources = [s for s in sources if any(t.takes(s) for t in targets)]
    if not sources:
        problem = "no raw image/label pairs found for the selected splits"
        if raw is not None:
            raise raw.error(problem)
        raise DatasetError(problem)
    _check_unique_stems(sources)
    if dry_run if dry_run is not None else (raw is not None and raw.dry_run):
        _dry_run(sources, targets, root, recipe, raw)
        return
    if settings.scaling == "percentile_dataset":  # one stretch for the whole release, from a sample of it
        sample = replace(settings, bands=settings.bands or sources[0].bands)
        try:
            stats = dataset_percentiles([str(s.image) for s in sources], sample)
        except RasterError as err:
            raise DatasetError(_flag_message(str(err))) from err
        settings = replace(settings, dataset_stats=stats)
    done = skipped = 0
    for source in tqdm(sources, desc=recipe, unit="image", file=sys.stdout, mininterval=2):
        todo = [t for t in targets if t.takes(source) and not _finished(root, t, source, recipe, settings)]
        if not todo:
            skipped += 1
            continue
        _convert(source, todo, root, settings, grey_quirk, raw)
        for target in todo:
            marker = _marker(root, target, source)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(target.fingerprint(recipe, settings))
        done += 1
    print(f"{recipe}: converted {done} raw images, {skipped} already prepared")
    if raw is not None:
        raw.report()
    fed = [t for t in targets if any(t.takes(s) for s in sources)]
    for target in fed:
        if target.tiling is not None and not os.path.isdir(target.record.folders(root)[1]):
            sizes = [_image_size(str(s.image)) or (0, 0) for s in sources if target.takes(s)]
            raise DatasetError(f"{target.dataset}: no {target.tiling.size}x{target.tiling.size} tile fits in any of "
                               f"its {len(sizes)} raw images (largest {max(sizes)[0]}x{max(sizes)[1]}); the release's "
                               "images are larger: a truncated or resampled download?")
    for record in _unique_folders(t.record for t in fed):
        check_dataset(record, root)


def _dry_run(sources: Sequence[Source], targets: Sequence[Target], root: str, recipe: str,
             raw: RawDownload | None) -> None:
    groups = Counter(s.group or "(all)" for s in sources)
    base = raw.raw if raw is not None else Path(root)
    print(f"{recipe} (dry run): would read {len(sources)} image/label pairs from {base} "
          f"({', '.join(f'{g}: {n}' for g, n in sorted(groups.items()))})")
    for archive, dest in raw.pending if raw is not None else ():
        print(f"  would unpack {archive.describe()} ({archive.kind}) into {dest}")
    for source in sources[:3]:
        print(f"  e.g. {_shown(source.image, base)} + {_shown(source.label, base)} -> {source.stem}")
    if raw is not None:
        raw.report()
    for target in targets:
        taken = [s for s in sources if target.takes(s)]
        image_dir, mask_dir = target.record.folders(root)
        note = ""
        if target.tiling is None:
            count = f"{len(taken)} images + {len(taken)} masks"
        else:
            tiles, unknown = 0, 0
            for source in taken:
                size = _image_size(str(source.image)) if source.image.is_file() else None
                if size is None:
                    unknown += 1
                    continue
                starts = [len(tile_starts(n, target.tiling.size, target.tiling.stride, target.tiling.remainder))
                          for n in size]
                tiles += starts[0] * starts[1]
            count = (f"{'at most ' if target.tiling.drop_empty else ''}{tiles} "
                     f"{target.tiling.size}x{target.tiling.size} tiles (+ masks)")
            if unknown:
                note = (f"; the tile count covers the {len(taken) - unknown} images already unpacked, not the "
                        f"{unknown} still inside archives")
        splits = ", ".join(target.groups) if target.groups else "all"
        print(f"  {target.dataset}: would write {count} from {len(taken)} raw images (splits: {splits}) into "
              f"{image_dir} and {mask_dir}{note}")
    print(f"{recipe}: dry run, nothing written")


def _check_unique_stems(sources: Sequence[Source]) -> None:
    """Output files are named by stem, and splits may share a folder: stems must be unique."""
    seen: dict[str, Path] = {}
    for source in sources:
        if source.stem in seen:
            raise DatasetError(f"two raw images map to the output stem {source.stem!r}: {seen[source.stem]} and "
                               f"{source.image} (the same release extracted twice under --raw, or an archive next "
                               "to its extracted folder? keep one)")
        seen[source.stem] = source.image


def _marker(root: str, target: Target, source: Source) -> Path:
    return Path(root, STATE_DIR, target.dataset, source.group, source.stem + ".done")


def _finished(root: str, target: Target, source: Source, recipe: str, settings: RasterSettings) -> bool:
    marker = _marker(root, target, source)
    return marker.is_file() and marker.read_text() == target.fingerprint(recipe, settings)


def _convert(source: Source, targets: Sequence[Target], root: str, settings: RasterSettings,
             grey_quirk: str | None, raw: RawDownload | None) -> None:
    image, exact = read_image(source.image, settings, source.bands, grey_quirk, raw)
    labels: dict[bool, np.ndarray] = {}

    def label_as(colours: bool) -> np.ndarray:
        if colours not in labels:
            labels[colours] = read_label(source.label, colours)
            if labels[colours].shape[:2] != image.shape[:2]:
                found = labels[colours]
                raise DatasetError(f"label {source.label} is {found.shape[1]}x{found.shape[0]} but image "
                                   f"{source.image} is {image.shape[1]}x{image.shape[0]}")
        return labels[colours]

    content_ok = exact and any(t.tiling is None for t in targets) and _content_matches(source, raw)
    quirks: set[str] = set()
    written: dict[tuple, Path] = {}  # content key → first file written with it (later ones link)
    for target in targets:
        record = target.record
        image_dir, mask_dir = (Path(p) for p in record.folders(root))
        raw_label = label_as(bool(target.labels and target.labels.colours))
        ids = target.labels(raw_label, source.label) if target.labels else raw_label
        quirks |= set(target.labels.quirks(raw_label)) if target.labels else set()
        if ids.ndim != 2:
            raise DatasetError(f"label {source.label} has shape {raw_label.shape}; {record.name} needs a "
                               "single-channel id map (give the target a colour table)")
        image_ext = record.image_ext or ".png"
        label_key = target.labels.key if target.labels else "copy"
        if target.tiling is None:
            copy_image = content_ok and source.image.suffix.lower() == image_ext.lower()
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
    for quirk in sorted(quirks) if raw is not None else ():
        raw.note(quirk, source.label)


def _content_matches(source: Source, raw: RawDownload | None) -> bool:
    """Whether the image file's bytes are the format its suffix names (SegEarth-OV's UAVid
    converter writes BMP data under ``.png`` names: such files are re-encoded, and counted)."""
    magic = _MAGIC.get(source.image.suffix.lower())
    if magic is None:
        return True
    with open(source.image, "rb") as f:
        head = f.read(4)
    if any(head.startswith(m) for m in magic):
        return True
    if raw is not None:
        raw.note(f"file content is not {source.image.suffix} (e.g. BMP data under a .png name): re-encoded",
                 source.image)
    return False


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
    """``--raw`` (the download: a folder, or one archive; unless ``raw=False``), ``--root``,
    ``--dry-run`` and the image-conversion flags (``args.raster``: :class:`RasterSettings`)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if raw:
        parser.add_argument("--raw", type=Path, required=True,
                            help="the download: a folder of extracted files and/or archives (zip, split zip "
                                 "X.z01…X.zip, tar), or one archive")
    parser.add_argument("--root", default=dataset_root(),
                        help="dataset root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--dry-run", action="store_true",
                        help="report what would be read and written (counts per split), write nothing")
    group = parser.add_argument_group("image conversion (as INPUT.RASTER; default: 8-bit RGB only)")
    group.add_argument("--bands", type=int, nargs="+", default=None, metavar="B",
                       help="1-based bands feeding R, G, B (one band = grey), e.g. --bands 1 2 3 for R,G,B,NIR stacks")
    group.add_argument("--scaling", choices=SCALINGS, default="auto",
                       help="how non-8-bit values map to 0..255 (auto: refuse anything but 8-bit)")
    group.add_argument("--range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="value range of --scaling fixed, in stored units")
    group.add_argument("--percentiles", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="percentiles of --scaling percentile / percentile_dataset")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if raw and not args.raw.exists():
        parser.error(f"--raw {args.raw} does not exist")
    if raw and args.raw.is_file() and not find_archives(args.raw):
        parser.error(f"--raw {args.raw} is a file but not an archive (.zip, .z01, .tar, .tar.gz, …)")
    default = RasterSettings(key=FLAG_KEY)
    try:
        args.raster = RasterSettings(bands=tuple(args.bands or ()), scaling=args.scaling,
                                     value_range=tuple(args.range or default.value_range),
                                     percentiles=tuple(args.percentiles or default.percentiles), key=FLAG_KEY)
    except RasterError as err:
        parser.error(_flag_message(str(err)))
    return args


def open_raw(args: argparse.Namespace, expected: str) -> RawDownload:
    """The :class:`RawDownload` of parsed ``args`` (``--raw``, ``--root``, ``--dry-run``, raster flags)."""
    return RawDownload(args.raw, args.root, expected, dry_run=args.dry_run, settings=args.raster)


def add_unknown_colour_option(parser: argparse.ArgumentParser) -> None:
    """For colour-coded labels: what a colour outside the class table becomes."""
    parser.add_argument("--unknown-colour", type=int, default=None, metavar="ID",
                        help="map colours outside the class table to this id (e.g. 255) instead of failing")


def add_splits_option(parser: argparse.ArgumentParser, default: Sequence[str], choices: Sequence[str]) -> None:
    """Which raw splits form a single registered ``all`` split."""
    parser.add_argument("--splits", nargs="+", default=list(default), choices=list(choices),
                        help=f"raw splits to include (default: {' '.join(default)})")


def split_of(path: Path, splits: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """The raw split a file belongs to: the nearest folder above it named a split
    (case-insensitive, ``aliases`` e.g. ``{"test_gt": "test"}``, or ``<prefix>_<split>`` as
    UAVid's ``uavid_train``); ``""`` when none."""
    aliases = {k.lower(): v for k, v in (aliases or {}).items()}
    for part in reversed(path.parent.parts):
        name = part.lower()
        if name in aliases:
            return aliases[name]
        for split in splits:
            if name == split or name.endswith("_" + split):
                return split
    return ""


def pair_by_stem(images: Iterable[Path], labels: Iterable[Path], *, label_stem: Callable[[str], str] = str,
                 image_stem: Callable[[str], str] = str, key: Callable[[Path], str] | None = None,
                 group: str = "", raw: RawDownload | None = None,
                 lonely_labels: Mapping[str, Callable[[str], bool]] | None = None,
                 lonely_images: Mapping[str, Callable[[str], bool]] | None = None) -> list[Source]:
    """Pair images and labels whose (transformed) stems agree (or whose ``key(path)`` agree,
    which then also names the output: e.g. UAVid's ``<sequence>_<frame>``).

    An unpaired file is an error (naming examples, the expected layout and what was found)
    unless a release quirk accounts for it: ``lonely_labels`` / ``lonely_images`` map a quirk
    name to a predicate on the stem (e.g. "OpenEarthMap_wo_xBD labels of xBD tiles"); such
    files are left out and counted under that name.
    """
    by_stem = _by_key(images, key or (lambda p: image_stem(p.stem)), "images", raw)
    label_by_stem = _by_key(labels, key or (lambda p: label_stem(p.stem)), "labels", raw)
    lonely = {"image": sorted(by_stem.keys() - label_by_stem.keys()),
              "label": sorted(label_by_stem.keys() - by_stem.keys())}
    for kind, quirks, files in (("image", lonely_images, by_stem), ("label", lonely_labels, label_by_stem)):
        for name, known in (quirks or {}).items():
            hits = [s for s in lonely[kind] if known(s)]
            if raw is not None:
                raw.skip(name, (files[s] for s in hits))
            lonely[kind] = [s for s in lonely[kind] if s not in set(hits)]
            for stem in hits:
                files.pop(stem)
    if lonely["image"] or lonely["label"]:
        problem = (f"raw images and labels do not pair: {len(lonely['image'])} images without a label "
                   f"(e.g. {[str(by_stem[s]) for s in lonely['image'][:_EXAMPLES]]}), {len(lonely['label'])} labels "
                   f"without an image (e.g. {[str(label_by_stem[s]) for s in lonely['label'][:_EXAMPLES]]})")
        raise raw.error(problem) if raw is not None else DatasetError(problem)
    return [Source(stem, by_stem[stem], label_by_stem[stem], group) for stem in sorted(by_stem)]


def _by_key(files: Iterable[Path], key: Callable[[Path], str], kind: str, raw: RawDownload | None) -> dict[str, Path]:
    """``{key: file}``; two files with one key (the release twice under --raw) are an error."""
    found: dict[str, Path] = {}
    for path in files:
        name = key(path)
        if name in found and raw is not None and raw.from_archive(path) != raw.from_archive(found[name]) \
                and raw.size(path) == raw.size(found[name]):  # a partial extraction beside its archive
            extracted, packed = (found[name], path) if raw.from_archive(path) else (path, found[name])
            raw.skip(BOTH, [packed])
            found[name] = extracted
            continue
        if name in found:
            problem = (f"two raw {kind} map to the output stem {name!r}: {found[name]} and {path} (the same release "
                       "twice under --raw, e.g. an archive next to a partial extraction of it? keep one)")
            raise raw.error(problem) if raw is not None else DatasetError(problem)
        found[name] = path
    return found


def split_folder_pairs(raw: RawDownload, splits: Sequence[str], image_dir: str, label_dir: str,
                       image_suffixes: Sequence[str] = (".jpg", ".png", ".tif"), label_suffix: str = ".png",
                       ) -> list[Source]:
    """Pairs from downloads laid out as ``<split>/<image_dir>`` + ``<split>/<label_dir>``
    anywhere in the download (UDD5, VDD, OVRSIS95K, FAST); each source's group is its split.
    Files of other splits are never mixed in: images and labels pair within one split folder."""
    sources = []
    for split in splits:
        images = [p for p in raw.files("*", f"{split}/{image_dir}") if p.suffix.lower() in image_suffixes
                  and p.parent.parts[-len(Path(image_dir).parts) - 1:] == (split,) + Path(image_dir).parts]
        labels = [p for p in raw.files("*", f"{split}/{label_dir}") if p.suffix.lower() == label_suffix
                  and p.parent.parts[-len(Path(label_dir).parts) - 1:] == (split,) + Path(label_dir).parts]
        folders = sorted({p.parents[len(Path(image_dir).parts)] for p in images}
                         | {p.parents[len(Path(label_dir).parts)] for p in labels})
        for folder in folders:
            sources += pair_by_stem([p for p in images if folder in p.parents],
                                    [p for p in labels if folder in p.parents], group=split, raw=raw)
    return sources
