#!/usr/bin/env python
"""UAVid (datasets.md §2.5, §7.2) → uavid/Images with uavid/Labels (V1, 8 classes) and
uavid/Labels_v2 (V2 and Pi-Seg's seen/unseen split, 7 classes).

Raw download: ``uavid_train/seq*/{Images,Labels}/*.png`` and ``uavid_val/...`` (and
``uavid_test`` if you have its labels) extracted under --raw; labels are colour-coded.
V2 merges moving and static car into Car (id 5) and moves Human to 6 [derived]. Images
stay full resolution (3840x2160 or 4096x2160); output stems are ``<seq>_<frame>``.
Which frames form the benchmark's ``all`` split is UNCERTAIN (§2.5): the default is
train + val (270 images).
"""
from __future__ import annotations

from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import UAVID_COLOURS, UAVID_V1_TO_V2
from ovrsis.data.prepare import (ColourMap, Source, Target, add_splits_option, add_unknown_colour_option,
                                 find_files, parse_args, prepare)

SPLITS = ("train", "val", "test")


def find_sources(raw: Path) -> list[Source]:
    sources = []
    for label in find_files(raw, "*.png"):
        if label.parent.name != "Labels":
            continue
        sequence = label.parent.parent
        image = sequence / "Images" / label.name
        split = next((s for s in SPLITS if sequence.parent.name.endswith(s)), "")
        sources.append(Source(f"{sequence.name}_{label.stem}", image, label, split))
    return sources


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: (add_unknown_colour_option(p),
                                                add_splits_option(p, ("train", "val"), SPLITS)))
    groups = tuple(args.splits)
    targets = [Target("v1_uavid_all", ColourMap(UAVID_COLOURS, unknown=args.unknown_colour), groups),
               Target("v2_uavid_all", ColourMap(UAVID_COLOURS, UAVID_V1_TO_V2, unknown=args.unknown_colour), groups)]
    prepare(find_sources(args.raw), targets, args.root, recipe="uavid")


if __name__ == "__main__":
    main()
