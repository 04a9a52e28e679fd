#!/usr/bin/env python
"""ISPRS Potsdam (datasets.md §2.3, §4.4) → Potsdam/{imgs,D2masks} (V1/V2) and
PotsdamSplit/{img_dir,ann_dir}/val (GSNet).

Release layout (ISPRS 2D semantic labelling download; mmsegmentation's
``tools/dataset_converters/potsdam.py`` reads the same zips), zipped or extracted under --raw:

- images: ``2_Ortho_RGB.zip`` → ``top_potsdam_<id>_RGB.tif`` (8-bit RGB), or torchgeo's
  ``4_Ortho_RGBIR.zip`` → ``4_Ortho_RGBIR/top_potsdam_<id>_RGBIR.tif`` (R, G, B, IR: bands 1-3
  kept, by the ISPRS band order). Where a tile is in both, the RGB file is used (counted).
- labels: ``5_Labels_all_noBoundary.zip`` → ``top_potsdam_<id>_label_noBoundary.tif`` (eroded,
  black boundaries: the benchmarks' and mmsegmentation's choice). ``--labels full`` reads
  ``5_Labels_all.zip`` → ``top_potsdam_<id>_label.tif`` instead (torchgeo's choice).

Colours → ids 0-5 (impervious, building, low vegetation, tree, car, clutter), black
boundary → 255; the same names per colour as mmsegmentation's converter (checked in
tests/test_prepare_classes.py). A single-band "RGB" tile is refused (``--bands 1`` accepts it
as grey).

- V1/V2: all 38 tiles cut into non-overlapping 256x256 crops, the 112-px remainder dropped
  (38 x 23 x 23 = 20,102, the benchmark's count [derived]).
- GSNet: the 14 MMSeg validation tiles cut into 512x512 crops every 512 px with the last
  crop aligned to the border (144 per tile, 2,016 in all); clutter (5) is the ignore value, so
  boundaries become 5 too (a split has one ignore value; 255 would be an out-of-range id).
"""
from __future__ import annotations

import sys
from dataclasses import replace

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import ISPRS_BOUNDARY, ISPRS_COLOURS, POTSDAM_VAL_TILES
from ovrsis.data.prepare import (ColourMap, RawDownload, Source, Target, Tiling, add_unknown_colour_option,
                                 open_raw, pair_by_stem, parse_args, prepare)
from ovrsis.engine import report_user_errors

EXPECTED = ("2_Ortho_RGB.zip (top_potsdam_<id>_RGB.tif) or 4_Ortho_RGBIR.zip (top_potsdam_<id>_RGBIR.tif), and "
            "5_Labels_all_noBoundary.zip (top_potsdam_<id>_label_noBoundary.tif; with --labels full: 5_Labels_all.zip, "
            "top_potsdam_<id>_label.tif), zipped or extracted")
LABEL_SUFFIX = {"noBoundary": "_label_noBoundary", "full": "_label"}
RGBIR_BANDS = (1, 2, 3)  # 4_Ortho_RGBIR band order: R, G, B, IR (ISPRS readme; torchgeo's Potsdam2D)


def find_sources(raw: RawDownload, labels: str = "noBoundary") -> list[Source]:
    rgb = raw.by_key(raw.files("top_potsdam_*_RGB.tif"), lambda p: p.stem[: -len("_RGB")], "images")
    rgbir = raw.by_key(raw.files("top_potsdam_*_RGBIR.tif"), lambda p: p.stem[: -len("_RGBIR")], "images")
    raw.skip("4_Ortho_RGBIR tiles also present in 2_Ortho_RGB (the RGB file is used)",
             [rgbir.pop(k) for k in sorted(rgb.keys() & rgbir.keys())])
    suffix = LABEL_SUFFIX[labels]
    label_files = raw.files(f"top_potsdam_*{suffix}.tif")
    other = next(k for k in LABEL_SUFFIX if k != labels)
    if not label_files and raw.files(f"top_potsdam_*{LABEL_SUFFIX[other]}.tif"):
        kind = {"full": "5_Labels_all (full labels)", "noBoundary": "5_Labels_all_noBoundary (eroded labels)"}
        raise raw.error(f"found {kind[other]} but not {kind[labels]}; pass --labels {other} to use them "
                        "(the benchmarks use the eroded noBoundary labels)")
    pairs = pair_by_stem(list(rgb.values()) + list(rgbir.values()), label_files, raw=raw,
                         image_stem=lambda s: s.rsplit("_", 1)[0], label_stem=lambda s: s[: -len(suffix)])
    return [replace(p, group=_split(p.stem), bands=RGBIR_BANDS if p.image.stem.endswith("_RGBIR") else ())
            for p in pairs]


def _split(stem: str) -> str:
    return "val" if stem[len("top_potsdam_"):] in POTSDAM_VAL_TILES else "train"


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        add_unknown_colour_option(parser)
        parser.add_argument("--labels", choices=sorted(LABEL_SUFFIX), default="noBoundary",
                            help="noBoundary: 5_Labels_all_noBoundary (default); full: 5_Labels_all")

    args = parse_args(__doc__, argv, options)
    raw = open_raw(args, EXPECTED)
    v1 = ColourMap(ISPRS_COLOURS, extra={ISPRS_BOUNDARY: 255}, unknown=args.unknown_colour)
    gsnet = ColourMap(ISPRS_COLOURS, extra={ISPRS_BOUNDARY: 5}, unknown=args.unknown_colour)
    targets = [Target("v1_potsdam_all", v1, tiling=Tiling(256, 256, remainder="drop")),
               Target("gsnet_potsdam_val", gsnet, ("val",), Tiling(512, 512, remainder="shift"))]
    prepare(find_sources(raw, args.labels), targets, args.root, recipe="potsdam", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
