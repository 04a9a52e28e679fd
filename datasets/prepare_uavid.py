#!/usr/bin/env python
"""UAVid (datasets.md §2.5, §7.2) → uavid/Images with uavid/Labels (V1, 8 classes) and
uavid/Labels_v2 (V2 and Pi-Seg's seen/unseen split, 7 classes).

Release layout (``uavid_v1.5_official_release_image.zip``, as the UAVid toolkit reads it),
zipped or extracted under --raw: ``uavid_{train,val,test}/seq<N>/{Images,Labels}/<frame>.png``
with colour-coded labels (the UAVid toolkit's colour table). SegEarth-OV's ``test_gt/`` folder
(the test labels released later) is read as the test split.

Release quirk handled by name: the test split ships without ``Labels/``; its images are left
out and counted. An image without a label in any other split is an error.

V2 merges moving and static car into Car (id 5) and moves Human to 6 [derived]. Images
stay full resolution (3840x2160 or 4096x2160); output stems are ``<seq>_<frame>``.
Which frames form the benchmark's ``all`` split is UNCERTAIN (§2.5): the default is
train + val (270 images).
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import UAVID_COLOURS, UAVID_V1_TO_V2
from ovrsis.data.prepare import (ColourMap, RawDownload, Source, Target, add_splits_option,
                                 add_unknown_colour_option, open_raw, pair_by_stem, parse_args, prepare, split_of)
from ovrsis.engine import report_user_errors

EXPECTED = ("uavid_{train,val,test}/seq<N>/Images/<frame>.png and .../Labels/<frame>.png (colour-coded; "
            "SegEarth-OV's test_gt/ = test), zipped or extracted")
SPLITS = ("train", "val", "test")
ALIASES = {"test_gt": "test"}
NO_TEST_LABELS = "UAVid test images ship without labels (the official release withholds them)"


def _key(path: Path) -> str:
    return f"{path.parent.parent.name}_{path.stem}"


def find_sources(raw: RawDownload, splits: tuple[str, ...]) -> list[Source]:
    sources = []
    for split in splits:
        images = [p for p in raw.files("*.png") if p.parent.name == "Images" and split_of(p, SPLITS, ALIASES) == split]
        labels = [p for p in raw.files("*.png") if p.parent.name == "Labels" and split_of(p, SPLITS, ALIASES) == split]
        lonely = {NO_TEST_LABELS: lambda _: True} if split == "test" else {}
        sources += [replace(s, group=split) for s in pair_by_stem(images, labels, key=_key, raw=raw,
                                                                 lonely_images=lonely)]
    return sources


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, lambda p: (add_unknown_colour_option(p),
                                                add_splits_option(p, ("train", "val"), SPLITS)))
    raw = open_raw(args, EXPECTED)
    groups = tuple(args.splits)
    targets = [Target("v1_uavid_all", ColourMap(UAVID_COLOURS, unknown=args.unknown_colour), groups),
               Target("v2_uavid_all", ColourMap(UAVID_COLOURS, UAVID_V1_TO_V2, unknown=args.unknown_colour), groups)]
    prepare(find_sources(raw, groups), targets, args.root, recipe="uavid", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
