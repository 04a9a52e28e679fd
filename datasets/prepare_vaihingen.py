#!/usr/bin/env python
"""ISPRS Vaihingen (datasets.md §2.4) → Vaihingen/{imgs,D2masks} (V1/V2).

Release layout (ISPRS download; mmsegmentation's ``tools/dataset_converters/vaihingen.py``
reads the same zips), zipped or extracted under --raw:

- ``ISPRS_semantic_labeling_Vaihingen.zip`` → ``top/top_mosaic_09cm_area<N>.tif`` (IRRG false
  colour, 8-bit, 3 bands; written as stored). Its ``gts_for_participants/`` and ``dsm/`` are not read.
- ``ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip`` →
  ``top_mosaic_09cm_area<N>_noBoundary.tif``. ``--labels full`` reads torchgeo's
  ``…_ground_truth_COMPLETE.zip`` (``top_mosaic_09cm_area<N>.tif`` outside ``top/``) instead.

Release quirk handled by name: the eroded ground truth holds **area 9**, whose image is not in
``top/``; it is left out and counted (mmsegmentation's converter deletes it too). Any other
label without an image is an error. Colours as Potsdam, black boundary → 255. All areas cut
into non-overlapping 256x256 crops, remainder dropped (INFERRED: the benchmark reports 2,254
crops; its recipe is not published).
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import ISPRS_BOUNDARY, ISPRS_COLOURS
from ovrsis.data.prepare import (ColourMap, RawDownload, Source, Target, Tiling, add_unknown_colour_option,
                                 open_raw, pair_by_stem, parse_args, prepare)
from ovrsis.engine import report_user_errors

EXPECTED = ("ISPRS_semantic_labeling_Vaihingen.zip (top/top_mosaic_09cm_area<N>.tif) and "
            "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip (top_mosaic_09cm_area<N>_noBoundary.tif; "
            "with --labels full: ..._ground_truth_COMPLETE.zip, top_mosaic_09cm_area<N>.tif), zipped or extracted")
AREA9 = "eroded ground truth of area 9, which has no image in top/ (mmsegmentation's converter drops it too)"


def find_sources(raw: RawDownload, labels: str = "noBoundary") -> list[Source]:
    images = [p for p in raw.files("top_mosaic_09cm_area*.tif") if p.parent.name == "top"]
    if labels == "noBoundary":
        label_files = raw.files("top_mosaic_09cm_area*_noBoundary.tif")
        stem = lambda s: s[: -len("_noBoundary")]  # noqa: E731
    else:
        label_files = [p for p in raw.files("top_mosaic_09cm_area*.tif") if p.parent.name != "top"
                       and not p.stem.endswith("_noBoundary")]
        complete = [p for p in label_files if p.parent.name != "gts_for_participants"]
        if complete:
            raw.skip("gts_for_participants labels (16 areas) also in the COMPLETE ground truth (COMPLETE is used)",
                     [p for p in label_files if p.parent.name == "gts_for_participants"])
            label_files = complete
        stem = str
    if not label_files:
        full = [p for p in raw.files("top_mosaic_09cm_area*.tif") if p.parent.name != "top"
                and not p.stem.endswith("_noBoundary")]
        hint = ("; found full labels (ground_truth_COMPLETE): pass --labels full to use them (the benchmarks use the "
                "eroded ones)") if labels == "noBoundary" and full else ""
        raise raw.error(f"no Vaihingen {'eroded (noBoundary)' if labels == 'noBoundary' else 'full'} labels found"
                        + hint)
    return pair_by_stem(images, label_files, label_stem=stem, raw=raw,
                        lonely_labels={AREA9: lambda s: s == "top_mosaic_09cm_area9"})


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        add_unknown_colour_option(parser)
        parser.add_argument("--labels", choices=("noBoundary", "full"), default="noBoundary",
                            help="noBoundary: the eroded ground truth (default); full: the COMPLETE ground truth")

    args = parse_args(__doc__, argv, options)
    raw = open_raw(args, EXPECTED)
    labels = ColourMap(ISPRS_COLOURS, extra={ISPRS_BOUNDARY: 255}, unknown=args.unknown_colour)
    prepare(find_sources(raw, args.labels),
            [Target("v1_vaihingen_all", labels, tiling=Tiling(256, 256, remainder="drop"))],
            args.root, recipe="vaihingen", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
