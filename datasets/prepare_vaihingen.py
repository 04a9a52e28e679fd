#!/usr/bin/env python
"""ISPRS Vaihingen (datasets.md §2.4) → Vaihingen/{imgs,D2masks} (V1/V2).

Raw download: ``ISPRS_semantic_labeling_Vaihingen.zip`` (``top/top_mosaic_09cm_area<N>.tif``,
IRRG false colour) and ``ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip``
(``top_mosaic_09cm_area<N>_noBoundary.tif``) extracted under --raw. Colours as Potsdam,
black boundary → 255. All 33 areas cut into non-overlapping 256x256 crops, remainder
dropped (INFERRED: the benchmark reports 2,254 crops; its recipe is not published).
"""
from __future__ import annotations

from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import ISPRS_BOUNDARY, ISPRS_COLOURS
from ovrsis.data.prepare import (ColourMap, Source, Target, Tiling, add_unknown_colour_option, find_files,
                                 pair_by_stem, parse_args, prepare)


def find_sources(raw: Path) -> list[Source]:
    labels = find_files(raw, "top_mosaic_09cm_area*_noBoundary.tif")
    images = [p for p in find_files(raw, "top_mosaic_09cm_area*.tif") if p.parent.name == "top"]
    return pair_by_stem(images, labels, label_stem=lambda s: s[: -len("_noBoundary")])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, add_unknown_colour_option)
    labels = ColourMap(ISPRS_COLOURS, extra={ISPRS_BOUNDARY: 255}, unknown=args.unknown_colour)
    prepare(find_sources(args.raw), [Target("v1_vaihingen_all", labels, tiling=Tiling(256, 256, remainder="drop"))],
            args.root, recipe="vaihingen")


if __name__ == "__main__":
    main()
