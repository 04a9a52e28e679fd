#!/usr/bin/env python
"""iSAID (datasets.md §2.2) → iSAID/{imgs,D2masks} (all) and iSAID_split/{train,val}/{imgs,D2masks}.

Release layout (as mmsegmentation's ``tools/dataset_converters/isaid.py`` and SegEarth-OV's
guide read it), zipped or extracted under --raw: DOTA-v1.0 images
``{train,val}/images/part<k>.zip`` → ``images/P<id>.png`` and iSAID semantic masks
``{train,val}/Semantic_masks/images.zip`` → ``images/P<id>_instance_color_RGB.png``. The split
is the ``train``/``val`` folder above each file (``test/`` has no masks and is not read).
Colours map to the 15 class ids (mmsegmentation's iSAID palette), black background → 255.

Release quirk handled by name: DOTA-v1.0 ships some grey (single-band) images; they are
replicated to grey RGB, as mmsegmentation's converter reads them (Pillow ``convert('RGB')``),
and counted.

Tiling (INFERRED: the benchmark's 256x256 recipe is not published): non-overlapping
256x256 tiles, the remainder dropped, tiles whose mask is entirely background dropped.
The counts will not match the package's 18,076 / 6,363 exactly; use the package for
comparable numbers.
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import ISAID_BACKGROUND, ISAID_COLOURS
from ovrsis.data.prepare import (ColourMap, RawDownload, Source, Target, Tiling, add_unknown_colour_option,
                                 open_raw, pair_by_stem, parse_args, prepare, split_of)
from ovrsis.engine import report_user_errors

EXPECTED = ("{train,val}/images/part<k>.zip (DOTA-v1.0: P<id>.png) and {train,val}/Semantic_masks/images.zip "
            "(P<id>_instance_color_RGB.png), zipped or extracted")
MASK_SUFFIX = "_instance_color_RGB"
SPLITS = ("train", "val")
GREY = "DOTA-v1.0 grey (single-band) images: replicated to grey RGB as mmsegmentation's converter does"


def find_sources(raw: RawDownload) -> list[Source]:
    sources = []
    pngs = raw.files("P*.png")
    for split in SPLITS:
        in_split = [p for p in pngs if split_of(p, ("train", "val", "test")) == split]
        labels = [p for p in in_split if p.stem.endswith(MASK_SUFFIX)]
        images = [p for p in in_split if "_instance_" not in p.stem]
        sources += pair_by_stem(images, labels, label_stem=lambda s: s[: -len(MASK_SUFFIX)], group=split, raw=raw)
    return sources


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, add_unknown_colour_option)
    raw = open_raw(args, EXPECTED)
    labels = ColourMap(ISAID_COLOURS, extra={ISAID_BACKGROUND: 255}, unknown=args.unknown_colour)
    tiling = Tiling(256, 256, remainder="drop", drop_empty=True)
    targets = [Target("v1_isaid_all", labels, tiling=tiling), Target("v1_isaid_train", labels, ("train",), tiling),
               Target("v1_isaid_val", labels, ("val",), tiling)]
    prepare(find_sources(raw), targets, args.root, recipe="isaid", raw=raw, grey_quirk=GREY)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
