#!/usr/bin/env python
"""DLRSD (datasets.md §2.1) → DLRSD/{imgs,D2masks} and DLRSD_split/{train,val}/{imgs,D2masks}.

Raw download (INFERRED layout): the UC Merced images (``UCMerced_LandUse/Images/<class>/*.tif``)
and the DLRSD colour-coded labels (``<class>/*.png``) extracted anywhere under --raw; images
and labels pair by file stem. Labels map colour → id with the registration's colours
(UNCERTAIN whether they equal the original palette: the run fails on any other colour).
The benchmark's own "processed DLRSD" has 7,002 images (5,601/1,401) whose derivation from
the 2,100 originals is undocumented; this rebuild keeps the 2,100 and splits them 80/20 by
a hash of the stem. For comparable numbers, use the benchmark package and run
``python datasets/check_dataset.py v1_dlrsd_all``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import DLRSD_COLOURS
from ovrsis.data.prepare import (ColourMap, Source, Target, add_unknown_colour_option, find_files, pair_by_stem,
                                 parse_args, prepare)


def find_sources(raw: Path) -> list[Source]:
    pairs = pair_by_stem(find_files(raw, "*.tif"), find_files(raw, "*.png"))
    return [Source(p.stem, p.image, p.label, _split(p.stem)) for p in pairs]


def _split(stem: str) -> str:
    """Deterministic 80/20 train/val split (the package's own split is not published)."""
    return "val" if int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) % 5 == 0 else "train"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, add_unknown_colour_option)
    labels = ColourMap(DLRSD_COLOURS, unknown=args.unknown_colour)
    targets = [Target("v1_dlrsd_all", labels), Target("v1_dlrsd_train", labels, ("train",)),
               Target("v1_dlrsd_val", labels, ("val",))]
    prepare(find_sources(args.raw), targets, args.root, recipe="dlrsd")


if __name__ == "__main__":
    main()
