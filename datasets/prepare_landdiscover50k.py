#!/usr/bin/env python
"""LandDiscover50K (datasets.md §4.1) → LandDiscover50K/{TR_Image,GT_ID}.

Release layout: ``Stev929/LandDiscover50K`` on Hugging Face, a split zip ``LD50KSplit.z01 …
LD50KSplit.zip`` → ``TR_Image/*.png`` and ``GT_ID/*.png``. Pass the folder holding the parts
(or the parts already extracted) as --raw: the parts are read as one archive without joining
them (what ``zip -s 0 LD50KSplit.zip --out LD50K.zip`` does; ``cat LD50KSplit.z* > …`` does
not work: the parts' offsets are per part, and ``unzip`` extracts nothing). Masks are already
ids 0-39 with 0 = background, GSNet's ignore value; the script copies and checks them.
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, open_raw, pair_by_stem, parse_args, prepare
from ovrsis.engine import report_user_errors

EXPECTED = "LD50KSplit.z01 … LD50KSplit.zip (split zip) or extracted: TR_Image/*.png with GT_ID/*.png"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    raw = open_raw(args, EXPECTED)
    sources = pair_by_stem(raw.files("*.png", "TR_Image"), raw.files("*.png", "GT_ID"), raw=raw)
    prepare(sources, [Target("landdiscover50k_train")], args.root, recipe="landdiscover50k", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
