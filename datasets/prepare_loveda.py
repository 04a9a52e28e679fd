#!/usr/bin/env python
"""LoveDA (datasets.md §2.7) → LoveDA/images_png with LoveDA/masks_png (V1: raw ids, no-data
evaluated) and LoveDA/masks_png2 (V2: raw id - 1, no-data → 255).

Raw download (Zenodo 5706578): ``Train.zip``, ``Val.zip`` extracted under --raw, each with
``Urban/`` and ``Rural/`` holding ``images_png/*.png`` and ``masks_png/*.png`` (index masks
0 no-data .. 7 agriculture). Test masks are withheld.
Split: the default is **val** only (1,669 images). [derived] train + val (4,191) cannot be
the benchmark's ``all``: UAVid + UDD5 + LoveDA + VDD hold 3,232 images together (§2.0).
"""
from __future__ import annotations

from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import (Source, Target, add_splits_option, find_files, pair_by_stem, parse_args,
                                 prepare, shifted_ids)

SPLITS = ("train", "val")


def find_sources(raw: Path, splits: tuple[str, ...]) -> list[Source]:
    sources = []
    for split in splits:
        for area in sorted(p for p in raw.rglob("*") if p.is_dir() and p.name in ("Urban", "Rural")
                           and p.parent.name.lower() == split):
            sources += pair_by_stem(find_files(area / "images_png", "*.png"), find_files(area / "masks_png", "*.png"),
                                    group=split)
    return sources


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: add_splits_option(p, ("val",), SPLITS))
    targets = [Target("v1_loveda_all"), Target("v2_loveda_all", shifted_ids(8, dropped=0))]
    prepare(find_sources(args.raw, tuple(args.splits)), targets, args.root, recipe="loveda")


if __name__ == "__main__":
    main()
