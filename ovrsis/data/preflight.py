"""Pre-flight check of the datasets a run uses: every mistake found before the first iteration.

Without it a bad id, an unreadable image or a size mismatch surfaces only when the sampler
first draws that file — possibly hours into training — and some mistakes (binary masks saved
as 0/255, where 255 is the ignore value) are never reported at all.

:func:`scan_records` reads every image and mask of a dataset (or an evenly spaced sample of a
huge one) in parallel worker processes and reports, in one message:

* unreadable files (missing, empty, truncated, undecodable), unpaired files;
* images the configured raster settings cannot turn into RGB (4+ bands without ``BANDS``,
  16-bit data under ``SCALING auto``, ...);
* image/mask size mismatches; masks that are not single-channel id maps (colour-coded RGB
  masks are named as such) or not integer-typed;
* ids outside the class list and the ignore value;
* vocabulary classes without a single pixel, and a suspicious ignore share with its likely
  cause (0/255 binary masks).

A dataset that passed is remembered (``$OVRSIS_CACHE/preflight``, keyed by the file list with
sizes and modification times, the class list, ignore value and raster settings), so the check
is free on the next run. Time per 1,000 images is reported in the closing note of issue 10.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from ..errors import DatasetError
from ..runtime import available_cpus
from .raster import RasterError, RasterSettings, read_raster, to_rgb8

logger = logging.getLogger(__name__)

_EXAMPLES = 3
_MAX_ID = 65536  # histogram length: ids of uint8/uint16 masks
_PARALLEL_ABOVE = 48  # fewer pairs are scanned in-process (pool start-up costs more)
SUSPICIOUS_IGNORE_SHARE = 0.3


@dataclass
class DatasetReport:
    """What :func:`scan_records` found in one dataset.

    ``problems`` maps a kind ("unreadable image", "size mismatch", ...) to example messages;
    ``counts`` how many files had that problem; ``histogram`` counts mask pixels per id.
    """

    name: str
    pairs: int
    scanned: int
    classes: List[str]
    ignore_value: int
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(_MAX_ID, np.int64))
    problems: Dict[str, List[str]] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.problems.setdefault(kind, [])
        if len(examples) < _EXAMPLES:
            examples.append(message)

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        """One paragraph: the dataset, then each kind of problem with its count and examples."""
        head = f"dataset {self.name!r} ({self.pairs} pairs, {self.scanned} scanned)"
        if self.ok:
            return head + ": no problem found"
        lines = [head + ":"]
        for kind, examples in self.problems.items():
            lines.append(f"  - {kind} ({self.counts[kind]}): " + "; ".join(examples)
                         + (" ..." if self.counts[kind] > len(examples) else ""))
        return "\n".join(lines)

    def class_table(self) -> List[list]:
        """Rows (id, class, pixels, %) for every class and the ignore value."""
        total = max(int(self.histogram.sum()), 1)
        rows = [[i, name, int(self.histogram[i]), 100.0 * self.histogram[i] / total]
                for i, name in enumerate(self.classes)]
        if 0 <= self.ignore_value < _MAX_ID:
            rows.append([self.ignore_value, "(ignore)", int(self.histogram[self.ignore_value]),
                         100.0 * self.histogram[self.ignore_value] / total])
        return rows


def _check_pair(args: tuple) -> dict:
    """Read one image and its mask; return the problems and the mask's id histogram."""
    record, raster_dict = args
    problems: List[tuple] = []
    image_path, mask_path = record["file_name"], record["sem_seg_file_name"]
    image_shape = None
    try:
        array, info = read_raster(image_path)
        image_shape = array.shape[:2]
        settings = RasterSettings.from_dict(raster_dict)
        if settings.scaling != "percentile_dataset":
            to_rgb8(array, info, settings)
    except RasterError as err:
        kind = "unreadable image" if "cannot read image" in str(err) else "image the raster settings cannot convert"
        problems.append((kind, str(err)))
    from .folder_dataset import read_mask  # folder_dataset imports this module's users

    try:
        mask = read_mask(mask_path)
    except DatasetError as err:
        problems.append(("unreadable mask", str(err)))
        return {"problems": problems, "ids": None}
    if mask.ndim == 3:
        kind = "colour-coded (RGB) mask" if mask.shape[2] in (3, 4) else "multi-channel mask"
        problems.append((kind, f"{mask_path} has shape {mask.shape}; masks must be single-channel class-id maps "
                               "(convert colours to ids, e.g. with a datasets/prepare_*.py colour table)"))
        return {"problems": problems, "ids": None}
    if mask.dtype.kind not in "ui":
        problems.append(("mask of non-integer type", f"{mask_path} holds {mask.dtype} values"))
        return {"problems": problems, "ids": None}
    if image_shape is not None and tuple(mask.shape) != tuple(image_shape):
        problems.append(("image/mask size mismatch", f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but "
                                                     f"image {image_path} is {image_shape[1]}x{image_shape[0]}"))
    if mask.size and (mask.min() < 0 or mask.max() >= _MAX_ID):
        problems.append(("ids outside the class list", f"{mask_path} holds ids {int(mask.min())}..{int(mask.max())}"))
        return {"problems": problems, "ids": None}
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=1)
    nonzero = np.flatnonzero(counts)
    return {"problems": problems, "ids": (nonzero.tolist(), counts[nonzero].tolist()), "mask": mask_path}


def print_report(report: DatasetReport) -> None:
    """Print the per-class pixel table and the problems of ``report``."""
    from tabulate import tabulate

    print(tabulate(report.class_table(), headers=["id", "class", "pixels", "%"], floatfmt=".2f", tablefmt="simple"))
    empty = [row[1] for row in report.class_table()[: len(report.classes)] if row[2] == 0]
    if empty:
        print(f"warning: no pixels of {empty}")
    print(report.describe() + f" [{report.seconds:.2f} s{', cached' if report.cached else ''}]")


def _fingerprint(name: str, records: Sequence[dict], classes: Sequence[str], ignore_value: int,
                 raster: RasterSettings, sample: int) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([name, list(classes), ignore_value, raster.as_dict(), sample, 3]).encode())  # 3: band-stack and alpha rules
    for r in records:
        for path in (r["file_name"], r["sem_seg_file_name"]):
            try:
                st = os.stat(path)
                h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{path}|missing\n".encode())
    return h.hexdigest()[:20]


def _cache_file(key: str) -> str:
    root = os.environ.get("OVRSIS_CACHE", os.path.expanduser("~/.cache/ovrsis"))
    return os.path.join(root, "preflight", key + ".json")


def scan_records(name: str, records: Sequence[dict], classes: Sequence[str], ignore_value: int,
                 raster: RasterSettings = RasterSettings(), sample: int = 0, workers: int = 0,
                 use_cache: bool = True) -> DatasetReport:
    """Check the image/mask pairs ``records`` (``file_name``, ``sem_seg_file_name``) of ``name``.

    Args:
        classes: the dataset's class list (ids 0..K-1); ``ignore_value`` its ignore id.
        raster: settings used to read the images (a record's own ``raster`` entry wins).
        sample: check at most this many evenly spaced pairs (0 = all).
        workers: processes reading files (0 = one per available core, at most 8).
        use_cache: skip a dataset that passed with the same files and settings before.

    Returns:
        the :class:`DatasetReport` (problems are reported, not raised).
    """
    start = time.perf_counter()
    chosen = list(records)
    if sample and len(chosen) > sample:
        chosen = [chosen[int(i)] for i in np.linspace(0, len(chosen) - 1, sample)]
    report = DatasetReport(name, len(records), len(chosen), list(classes), int(ignore_value))
    key = _fingerprint(name, chosen, classes, ignore_value, raster, sample)
    if use_cache and os.path.isfile(_cache_file(key)):
        with open(_cache_file(key)) as f:
            stored = json.load(f)
        report.histogram[np.asarray(stored["ids"], np.int64)] = np.asarray(stored["counts"], np.int64)
        report.cached = True
        report.seconds = time.perf_counter() - start
        return report
    jobs = [(r, r.get("raster") or raster.as_dict()) for r in chosen]
    if workers <= 0:
        workers = min(len(available_cpus()), 8)
    if len(jobs) > _PARALLEL_ABOVE and workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_check_pair, jobs, chunksize=16))
    else:
        results = [_check_pair(job) for job in jobs]
    offenders: Dict[int, List[str]] = {}
    valid_ids = set(range(len(classes))) | {int(ignore_value)}
    for result in results:
        for kind, message in result["problems"]:
            report.add(kind, message)
        if result["ids"] is None:
            continue
        ids, counts = result["ids"]
        report.histogram[ids] += counts
        for value in ids:
            if value not in valid_ids:
                offenders.setdefault(value, []).append(result["mask"])
    for value, files in sorted(offenders.items()):
        report.counts["ids outside the class list"] = report.counts.get("ids outside the class list", 0) + len(files)
        report.problems.setdefault("ids outside the class list", []).append(
            f"id {value} in {len(files)} masks (e.g. {', '.join(files[:_EXAMPLES])}); valid: 0..{len(classes) - 1} "
            f"and the ignore value {ignore_value}")
    _check_class_coverage(report)
    report.seconds = time.perf_counter() - start
    if report.ok and use_cache:
        _store(key, report)
    return report


def _check_class_coverage(report: DatasetReport) -> None:
    """Classes without pixels, and a large ignore share with its likely cause."""
    if not report.scanned or report.problems.get("unreadable mask"):
        return
    hist = report.histogram
    total = int(hist.sum())
    ignore = int(hist[report.ignore_value]) if 0 <= report.ignore_value < _MAX_ID else 0
    empty = [c for i, c in enumerate(report.classes) if hist[i] == 0]
    share = ignore / total if total else 0.0
    binary = ignore > 0 and len(report.classes) >= 2 and set(np.flatnonzero(hist).tolist()) <= {0, report.ignore_value}
    if empty and binary:
        report.add("suspicious ignore share", (
            f"{100 * share:.1f}% of the mask pixels are the ignore value {report.ignore_value} and classes {empty} "
            f"have no pixel. The masks hold only 0 and {report.ignore_value}: binary masks saved as "
            f"0/{report.ignore_value}? {report.ignore_value} is the ignore value, so {empty} get no pixels; store the "
            f"foreground as id 1 (e.g. mask // {report.ignore_value}) or set IGNORE_VALUE."))
    elif empty and share > SUSPICIOUS_IGNORE_SHARE:
        logger.warning("dataset %r: %.1f%% of the mask pixels are the ignore value %d and classes %s have no pixel "
                       "(expected for seen-only training masks; otherwise check IGNORE_VALUE)", report.name,
                       100 * share, report.ignore_value, empty)
    elif empty and report.scanned == report.pairs:
        logger.warning("dataset %r: classes %s have no pixel in any mask (their IoU will be undefined and left "
                       "out of the means)", report.name, empty)


def _store(key: str, report: DatasetReport) -> None:
    path = _cache_file(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ids = np.flatnonzero(report.histogram)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"dataset": report.name, "ids": ids.tolist(), "counts": report.histogram[ids].tolist()}, f)
    os.replace(tmp, path)


def scan_registered(name: str, default_raster: RasterSettings = RasterSettings(), sample: int = 0,
                    sample_above: int = 0, use_cache: bool = True) -> DatasetReport:
    """:func:`scan_records` on a registered dataset (benchmark, config-registered or synthetic);
    a dataset whose folders cannot even be listed (missing, unpaired files) is reported too.
    With ``sample_above > 0`` only datasets larger than that are sampled (``sample`` pairs)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    meta = MetadataCatalog.get(name)
    classes, ignore = list(meta.get("stuff_classes", [])), int(meta.get("ignore_label", 255))
    own = meta.get("raster", None)
    raster = RasterSettings.from_dict(own) if own else default_raster
    try:
        records = DatasetCatalog.get(name)
    except DatasetError as err:
        report = DatasetReport(name, 0, 0, classes, ignore)
        report.add("files that cannot be listed or paired", str(err))
        return report
    if not records or "sem_seg_file_name" not in records[0]:
        report = DatasetReport(name, len(records), 0, classes, ignore)
        if not records:
            report.add("empty dataset", "no image/mask pairs")
        return report
    if sample_above and len(records) <= sample_above:
        sample = 0
    return scan_records(name, records, classes, ignore, raster, sample=sample, use_cache=use_cache)


def preflight(dataset_names: Sequence[str], default_raster: RasterSettings = RasterSettings(),
              sample_above: int = 20000, sample: int = 2000, use_cache: bool = True) -> List[DatasetReport]:
    """Check every named dataset; raise one :class:`DatasetError` listing every problem found.

    Datasets with more than ``sample_above`` pairs are checked on ``sample`` evenly spaced
    pairs (``sample_above=0``: always everything).
    """
    reports = [scan_registered(name, default_raster, sample=sample if sample_above else 0,
                               sample_above=sample_above, use_cache=use_cache)
               for name in dict.fromkeys(dataset_names)]
    for r in reports:
        logger.info("pre-flight %s: %d/%d pairs %s in %.1f s", r.name, r.scanned, r.pairs,
                    "known good (cached)" if r.cached else ("ok" if r.ok else "with problems"), r.seconds)
    bad = [r for r in reports if not r.ok]
    if bad:
        raise DatasetError("pre-flight dataset check failed (DATASETS.PREFLIGHT.ENABLED False skips it):\n"
                           + "\n".join(r.describe() for r in bad))
    return reports
