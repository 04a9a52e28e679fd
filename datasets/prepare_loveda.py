#!/usr/bin/env python
"""LoveDA (datasets.md §2.7) → LoveDA/images_png with LoveDA/masks_png (V1: raw ids, no-data
evaluated) and LoveDA/masks_png2 (V2: raw id - 1, no-data → 255).

Release layout (Zenodo 5706578, as mmsegmentation's ``tools/dataset_converters/loveda.py``
reads it), zipped or extracted under --raw: ``Train.zip`` and ``Val.zip`` → ``{Train,Val}/
{Urban,Rural}/{images_png,masks_png}/<n>.png`` (index masks 0 no-data .. 7 agriculture).
``Test.zip`` has no masks and is not read.
Split: the default is **val** only (1,669 images). [derived] train + val (4,191) cannot be
the benchmark's ``all``: UAVid + UDD5 + LoveDA + VDD hold 3,232 images together (§2.0).
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import (RawDownload, Source, Target, add_splits_option, open_raw, pair_by_stem, parse_args,
                                 prepare, shifted_ids, split_of)
from ovrsis.engine import report_user_errors

EXPECTED = ("Train.zip / Val.zip → {Train,Val}/{Urban,Rural}/images_png/<n>.png with .../masks_png/<n>.png "
            "(index masks 0-7), zipped or extracted")
SPLITS = ("train", "val")


def find_sources(raw: RawDownload, splits: tuple[str, ...]) -> list[Source]:
    sources = []
    for split in splits:
        images = [p for p in raw.files("*.png", "images_png") if split_of(p, SPLITS + ("test",)) == split]
        masks = [p for p in raw.files("*.png", "masks_png") if split_of(p, SPLITS + ("test",)) == split]
        sources += pair_by_stem(images, masks, group=split, raw=raw)
    return sources


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: add_splits_option(p, ("val",), SPLITS))
    raw = open_raw(args, EXPECTED)
    targets = [Target("v1_loveda_all"), Target("v2_loveda_all", shifted_ids(8, dropped=0))]
    prepare(find_sources(raw, tuple(args.splits)), targets, args.root, recipe="loveda", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
