#!/usr/bin/env python
"""FAST validation split, GSNet protocol (datasets.md §4.2) → FAST/val/{images,semlabels/gray}.

Release layout (INFERRED: the FAST part of SAMRS, or GSNet's ``Stev929/OVRSISS_test`` package),
zipped or extracted under --raw: ``FAST/{train,val}/images/*.png`` with
``FAST/{train,val}/semlabels/gray/*.png`` (grayscale index masks, ids 0-36, unlabeled 255).
Only ``val/`` is read; images and labels pair within it, so a ``train/`` beside it is never
mixed in. The script copies and checks them.
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, open_raw, parse_args, prepare, split_folder_pairs
from ovrsis.engine import report_user_errors

EXPECTED = "FAST/val/images/*.png with FAST/val/semlabels/gray/*.png (a train/ beside val/ is not read)"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    raw = open_raw(args, EXPECTED)
    sources = split_folder_pairs(raw, ("val",), "images", "semlabels/gray", image_suffixes=(".png",))
    prepare(sources, [Target("gsnet_fast_val")], args.root, recipe="fast", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
