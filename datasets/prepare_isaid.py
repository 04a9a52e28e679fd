#!/usr/bin/env python
"""iSAID (datasets.md §2.2) → iSAID/{imgs,D2masks} (all) and iSAID_split/{train,val}/{imgs,D2masks}.

Raw download (per SegEarth-OV's guide): DOTA-v1.0 images ``train/images/P*.png`` and
``val/images/P*.png``, iSAID semantic masks ``train/Semantic_masks/images/*_instance_color_RGB.png``
and ``val/Semantic_masks/...`` extracted under --raw. Colours map to the 15 class ids,
black background → 255.

Tiling (INFERRED: the benchmark's 256x256 recipe is not published): non-overlapping
256x256 tiles, the remainder dropped, tiles whose mask is entirely background dropped.
The counts will not match the package's 18,076 / 6,363 exactly; use the package for
comparable numbers.
"""
from __future__ import annotations

from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import ISAID_BACKGROUND, ISAID_COLOURS
from ovrsis.data.prepare import (ColourMap, Source, Target, Tiling, add_unknown_colour_option, find_files,
                                 pair_by_stem, parse_args, prepare)

MASK_SUFFIX = "_instance_color_RGB"


def find_sources(raw: Path) -> list[Source]:
    sources = []
    for split in ("train", "val"):
        pngs = find_files(raw / split, "*.png") if (raw / split).is_dir() else []
        labels = [p for p in pngs if p.stem.endswith(MASK_SUFFIX)]
        images = [p for p in pngs if "_instance_" not in p.stem]
        sources += pair_by_stem(images, labels, label_stem=lambda s: s[: -len(MASK_SUFFIX)], group=split)
    return sources


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, add_unknown_colour_option)
    labels = ColourMap(ISAID_COLOURS, extra={ISAID_BACKGROUND: 255}, unknown=args.unknown_colour)
    tiling = Tiling(256, 256, remainder="drop", drop_empty=True)
    targets = [Target("v1_isaid_all", labels, tiling=tiling), Target("v1_isaid_train", labels, ("train",), tiling),
               Target("v1_isaid_val", labels, ("val",), tiling)]
    prepare(find_sources(args.raw), targets, args.root, recipe="isaid")


if __name__ == "__main__":
    main()
