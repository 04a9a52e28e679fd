#!/usr/bin/env python
"""FLAIR #1 test (datasets.md §3.2, §4.3) → FLAIR_test/{image,mask} (V2) and FLAIR/test/{image,mask} (GSNet).

Release layout (IGN ``IGNF/FLAIR``, FLAIR #1 test archives ``flair_aerial_test.zip`` and
``flair_1_labels_test.zip``), zipped or extracted under --raw: ``<domain>/<zone>/img/IMG_<n>.tif``
(5 bands: R, G, B, NIR, elevation — bands 1-3 are the RGB, by the FLAIR datasheet; ``--bands``
overrides) and ``<domain>/<zone>/msk/MSK_<n>.tif`` (raw ids 1-19, FLAIR's class table).
- V2: ids 1-12 → 0-11, ids >= 13 ("other" and the rare classes) → 255.
- GSNet: ids 1-12 → 0-11, ids >= 13 → 12 ("other"), which is GSNet's ignore value.
"""
from __future__ import annotations

import sys
from dataclasses import replace

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import IdMap, RawDownload, Source, Target, open_raw, pair_by_stem, parse_args, prepare
from ovrsis.engine import report_user_errors

EXPECTED = ("flair_aerial_test.zip (<domain>/<zone>/img/IMG_<n>.tif, 5 bands) and flair_1_labels_test.zip "
            "(<domain>/<zone>/msk/MSK_<n>.tif, ids 1-19), zipped or extracted")
RAW_IDS = range(1, 20)
RGB_BANDS = (1, 2, 3)  # FLAIR #1 aerial bands: R, G, B, NIR, elevation


def find_sources(raw: RawDownload) -> list[Source]:
    pairs = pair_by_stem(raw.files("IMG_*.tif"), raw.files("MSK_*.tif"), label_stem=lambda s: "IMG_" + s[len("MSK_"):],
                         raw=raw)
    return [replace(p, bands=RGB_BANDS) for p in pairs]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    raw = open_raw(args, EXPECTED)
    v2 = IdMap({raw_id: raw_id - 1 if raw_id <= 12 else 255 for raw_id in RAW_IDS})
    gsnet = IdMap({raw_id: raw_id - 1 if raw_id <= 12 else 12 for raw_id in RAW_IDS})
    prepare(find_sources(raw), [Target("v2_flair_test", v2), Target("gsnet_flair_test", gsnet)], args.root,
            recipe="flair", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
