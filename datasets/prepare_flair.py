#!/usr/bin/env python
"""FLAIR #1 test (datasets.md §3.2, §4.3) → FLAIR_test/{image,mask} (V2) and FLAIR/test/{image,mask} (GSNet).

Raw download: the IGN FLAIR #1 test archives (``IGNF/FLAIR``, ``flair#1-test``) extracted
under --raw: ``.../img/IMG_<n>.tif`` (5 bands: R, G, B, NIR, elevation; RGB kept, needs
``tifffile``) and ``.../msk/MSK_<n>.tif`` (raw ids 1-19).
- V2: ids 1-12 → 0-11, ids >= 13 ("other" and the rare classes) → 255.
- GSNet: ids 1-12 → 0-11, ids >= 13 → 12 ("other"), which is GSNet's ignore value.
"""
from __future__ import annotations

from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import IdMap, Source, Target, find_files, pair_by_stem, parse_args, prepare

RAW_IDS = range(1, 20)


def find_sources(raw: Path) -> list[Source]:
    return pair_by_stem(find_files(raw, "IMG_*.tif"), find_files(raw, "MSK_*.tif"),
                        label_stem=lambda s: "IMG_" + s[len("MSK_"):])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    v2 = IdMap({raw: raw - 1 if raw <= 12 else 255 for raw in RAW_IDS})
    gsnet = IdMap({raw: raw - 1 if raw <= 12 else 12 for raw in RAW_IDS})
    prepare(find_sources(args.raw), [Target("v2_flair_test", v2), Target("gsnet_flair_test", gsnet)], args.root,
            recipe="flair")


if __name__ == "__main__":
    main()
