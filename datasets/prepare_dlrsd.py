#!/usr/bin/env python
"""DLRSD (datasets.md §2.1) → DLRSD/{imgs,D2masks} and DLRSD_split/{train,val}/{imgs,D2masks}.

Release layout, zipped or extracted under --raw: the UC Merced images
(``UCMerced_LandUse.zip`` → ``UCMerced_LandUse/Images/<class>/<class><NN>.tif``) and the DLRSD
labels (``DLRSD.zip`` → ``DLRSD/Images/<class>/<class><NN>.png``, or ``Labels/``); images and
labels pair by file stem.

Labels are read in either encoding:

- single-channel index PNGs as distributed (palette or grey; read as indices): ids 1-17 in
  alphabetical class order (airplane … water) → 0-16, id 0 (unlabelled) → 255, counted — the
  convention of the third-party DLRSD loaders (e.g. the few-shot ``DatasetDLRSD`` classes,
  which compare ``mask == class + 1`` with the same alphabetical class dictionary);
- colour-coded RGB labels: the registration's colours (UNCERTAIN whether they equal the
  original palette: the run fails on any other colour; ``--unknown-colour`` overrides).

The benchmark's own "processed DLRSD" has 7,002 images (5,601/1,401) whose derivation from
the 2,100 originals is undocumented; this rebuild keeps the 2,100 and splits them 80/20 by
a hash of the stem. For comparable numbers, use the benchmark package and run
``python datasets/check_dataset.py v1_dlrsd_all``.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import replace

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import DLRSD_CLASSES, DLRSD_COLOURS
from ovrsis.data.prepare import (ColourMap, IdMap, IdsOrColours, RawDownload, Source, Target,
                                 add_unknown_colour_option, open_raw, pair_by_stem, parse_args, prepare)
from ovrsis.engine import report_user_errors

EXPECTED = ("UCMerced_LandUse.zip (UCMerced_LandUse/Images/<class>/<class><NN>.tif) and DLRSD.zip "
            "(DLRSD/Images/<class>/<class><NN>.png: index labels 1-17, or colour-coded RGB), zipped or extracted")
UNLABELLED = "DLRSD index labels holding id 0 (unlabelled): those pixels ignored (255)"
INDEX_IDS = {0: 255} | {k + 1: k for k in range(len(DLRSD_CLASSES))}  # 1-based alphabetical → 0-based


def find_sources(raw: RawDownload) -> list[Source]:
    pairs = pair_by_stem(raw.files("*.tif"), raw.files("*.png"), raw=raw)
    return [replace(p, group=_split(p.stem)) for p in pairs]


def _split(stem: str) -> str:
    """Deterministic 80/20 train/val split (the package's own split is not published)."""
    return "val" if int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) % 5 == 0 else "train"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, add_unknown_colour_option)
    raw = open_raw(args, EXPECTED)
    labels = IdsOrColours(IdMap(INDEX_IDS, quirk_ids={0: UNLABELLED}),
                          ColourMap(DLRSD_COLOURS, unknown=args.unknown_colour))
    targets = [Target("v1_dlrsd_all", labels), Target("v1_dlrsd_train", labels, ("train",)),
               Target("v1_dlrsd_val", labels, ("val",))]
    prepare(find_sources(raw), targets, args.root, recipe="dlrsd", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
