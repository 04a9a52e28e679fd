#!/usr/bin/env python
"""OpenEarthMap (datasets.md §3.3, §7.1) → OpenEarthMap/{images,labels} (V2, raw ids, .tif) and
OpenEarthMap_256/{train,val}/{imgs,masks} (AerOSeg's 256x256 re-tiling, 8 official classes).

Release layout (``OpenEarthMap.zip`` from Zenodo; the dataset repository ``bao18/open_earth_map``
and SegEarth-OV's ``openearthmap.py`` converter read it), zipped or extracted under --raw:
``OpenEarthMap_wo_xBD/<region>/images/<region>_<n>.tif`` and ``.../labels/<region>_<n>.tif``
(index 0 unknown .. 8 building), with ``train.txt``, ``val.txt``, ``test.txt`` and
``xbd_files.csv`` at its top.

Release quirks handled by name (counted in the log):

- labels of the xBD tiles, whose images are not in ``OpenEarthMap_wo_xBD`` (``xbd_files.csv``
  names them: 697 train and 116 val tiles; the repository's ``data/compile_xbd.py`` rebuilds
  them from an xBD download — when it has been run, those tiles are used like any other);
- test images (``test.txt``), which ship without labels.

Any other unpaired file is an error listing it.

- V2: labels copied unchanged (id 0 evaluated as "Background"). Which splits form the
  benchmark's ``all`` is UNCERTAIN; the default is train + val (test labels are withheld).
- AerOSeg (INFERRED recipe): non-overlapping 256x256 tiles, remainder dropped; unknown (0)
  → 255, ids 1-8 → 0-7.
"""
from __future__ import annotations

import sys
from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import (RawDownload, Source, Target, Tiling, add_splits_option, open_raw, pair_by_stem,
                                 parse_args, prepare, shifted_ids)
from ovrsis.engine import report_user_errors

EXPECTED = ("OpenEarthMap_wo_xBD/<region>/images/<region>_<n>.tif with .../labels/<region>_<n>.tif, and train.txt, "
            "val.txt, test.txt, xbd_files.csv at its top (OpenEarthMap.zip, zipped or extracted)")
SPLITS = ("train", "val")
XBD = "OpenEarthMap_wo_xBD labels of xBD tiles, whose images are not shipped (listed in xbd_files.csv)"
TEST = "OpenEarthMap test images ship without labels (test.txt)"


def _listed(raw: RawDownload, name: str, column: int = 0) -> set[str]:
    names = set()
    for listing in raw.files(name):
        for line in raw.read_text(listing).splitlines():
            if line.strip():
                names.add(Path(line.split(",")[column].strip()).stem)
    return names


def find_sources(raw: RawDownload) -> list[Source]:
    split_of = {stem: split for split in SPLITS for stem in _listed(raw, f"{split}.txt")}
    xbd, test = _listed(raw, "xbd_files.csv", column=1), _listed(raw, "test.txt")
    images = [p for p in raw.files("*.tif") if p.parent.name == "images"]
    labels = [p for p in raw.files("*.tif") if p.parent.name == "labels"]
    if not raw.files("xbd_files.csv"):
        labels_only = {p.stem for p in labels} - {p.stem for p in images}
        if labels_only:
            raise raw.error(f"{len(labels_only)} labels have no image (e.g. {sorted(labels_only)[:5]}) and the "
                            "release's xbd_files.csv, which names the xBD tiles left out of OpenEarthMap_wo_xBD, "
                            "was not found; keep the release's top-level files together")
    pairs = pair_by_stem(images, labels, raw=raw, lonely_labels={XBD: xbd.__contains__},
                         lonely_images={TEST: test.__contains__})
    return [Source(p.stem, p.image, p.label, split_of.get(p.stem, "")) for p in pairs]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: add_splits_option(p, SPLITS, SPLITS))
    raw = open_raw(args, EXPECTED)
    aeroseg = shifted_ids(9, dropped=0)
    tiling = Tiling(256, 256, remainder="drop")
    targets = [Target("v2_openearthmap_all", groups=tuple(args.splits)),
               Target("oem256_train", aeroseg, ("train",), tiling),
               Target("aeroseg_oem_val", aeroseg, ("val",), tiling)]
    prepare(find_sources(raw), targets, args.root, recipe="openearthmap", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
