#!/usr/bin/env python
"""ISPRS Potsdam (datasets.md §2.3, §4.4) → Potsdam/{imgs,D2masks} (V1/V2) and
PotsdamSplit/{img_dir,ann_dir}/val (GSNet).

Raw download: ``2_Ortho_RGB.zip`` (``top_potsdam_<id>_RGB.tif``) and
``5_Labels_all_noBoundary.zip`` (``top_potsdam_<id>_label_noBoundary.tif``) extracted under
--raw. Colours → ids 0-5 (impervious, building, low vegetation, tree, car, clutter),
black boundary → 255.

- V1/V2: all 38 tiles cut into non-overlapping 256x256 crops, the 112-px remainder dropped
  (38 x 23 x 23 = 20,102, the benchmark's count [derived]).
- GSNet: the 14 MMSeg validation tiles cut into 512x512 crops every 512 px with the last
  crop aligned to the border (144 per tile, 2,016 in all); clutter (5) is the ignore value, so
  boundaries become 5 too (a split has one ignore value; 255 would be an out-of-range id).
"""
from __future__ import annotations

from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import ISPRS_BOUNDARY, ISPRS_COLOURS, POTSDAM_VAL_TILES
from ovrsis.data.prepare import (ColourMap, Source, Target, Tiling, add_unknown_colour_option, find_files,
                                 pair_by_stem, parse_args, prepare)


def find_sources(raw: Path) -> list[Source]:
    pairs = pair_by_stem(find_files(raw, "top_potsdam_*_RGB.tif"), find_files(raw, "top_potsdam_*_label_noBoundary.tif"),
                         image_stem=lambda s: s[: -len("_RGB")], label_stem=lambda s: s[: -len("_label_noBoundary")])
    return [Source(p.stem, p.image, p.label, _split(p.stem)) for p in pairs]


def _split(stem: str) -> str:
    return "val" if stem[len("top_potsdam_"):] in POTSDAM_VAL_TILES else "train"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, add_unknown_colour_option)
    v1 = ColourMap(ISPRS_COLOURS, extra={ISPRS_BOUNDARY: 255}, unknown=args.unknown_colour)
    gsnet = ColourMap(ISPRS_COLOURS, extra={ISPRS_BOUNDARY: 5}, unknown=args.unknown_colour)
    targets = [Target("v1_potsdam_all", v1, tiling=Tiling(256, 256, remainder="drop")),
               Target("gsnet_potsdam_val", gsnet, ("val",), Tiling(512, 512, remainder="shift"))]
    prepare(find_sources(args.raw), targets, args.root, recipe="potsdam")


if __name__ == "__main__":
    main()
