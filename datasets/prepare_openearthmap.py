#!/usr/bin/env python
"""OpenEarthMap (datasets.md §3.3, §7.1) → OpenEarthMap/{images,labels} (V2, raw ids, .tif) and
OpenEarthMap_256/{train,val}/{imgs,masks} (AerOSeg's 256x256 re-tiling, 8 official classes).

Raw download: ``OpenEarthMap_wo_xBD`` extracted under --raw: ``<region>/images/<region>_<n>.tif``,
``<region>/labels/<region>_<n>.tif`` (index 0 unknown .. 8 building) and the split lists
``train.txt`` / ``val.txt`` (file names) at its top level.
- V2: labels copied unchanged (id 0 evaluated as "Background"). Which splits form the
  benchmark's ``all`` is UNCERTAIN; the default is train + val (test labels are withheld).
- AerOSeg (INFERRED recipe): non-overlapping 256x256 tiles, remainder dropped; unknown (0)
  → 255, ids 1-8 → 0-7.
"""
from __future__ import annotations

from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import (Source, Target, Tiling, add_splits_option, find_files, pair_by_stem, parse_args,
                                 prepare, shifted_ids)

SPLITS = ("train", "val")


def find_sources(raw: Path) -> list[Source]:
    split_of = {}
    for split in SPLITS:
        for listing in find_files(raw, f"{split}.txt"):
            split_of.update({Path(line.strip()).stem: split for line in listing.read_text().splitlines() if line.strip()})
    images = [p for p in find_files(raw, "*.tif") if p.parent.name == "images"]
    labels = [p for p in find_files(raw, "*.tif") if p.parent.name == "labels"]
    pairs = pair_by_stem(images, labels)
    return [Source(p.stem, p.image, p.label, split_of.get(p.stem, "")) for p in pairs]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: add_splits_option(p, SPLITS, SPLITS))
    aeroseg = shifted_ids(9, dropped=0)
    tiling = Tiling(256, 256, remainder="drop")
    targets = [Target("v2_openearthmap_all", groups=tuple(args.splits)),
               Target("oem256_train", aeroseg, ("train",), tiling),
               Target("aeroseg_oem_val", aeroseg, ("val",), tiling)]
    prepare(find_sources(args.raw), targets, args.root, recipe="openearthmap")


if __name__ == "__main__":
    main()
