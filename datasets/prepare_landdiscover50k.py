#!/usr/bin/env python
"""LandDiscover50K (datasets.md §4.1) → LandDiscover50K/{TR_Image,GT_ID}.

Raw download: ``Stev929/LandDiscover50K`` on Hugging Face, split zip parts ``LD50KSplit.z*``.
Join and extract them first (``cat LD50KSplit.z* > LD50K.zip && unzip LD50K.zip``; the
``.zip`` part sorts last), then pass the extracted folder as --raw. Masks are already ids
0-39 with 0 = background, GSNet's ignore value; the script copies and checks them.
"""
from __future__ import annotations

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, find_files, pair_by_stem, parse_args, prepare


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    images = [p for p in find_files(args.raw, "*.png") if p.parent.name == "TR_Image"]
    labels = [p for p in find_files(args.raw, "*.png") if p.parent.name == "GT_ID"]
    prepare(pair_by_stem(images, labels), [Target("landdiscover50k_train")], args.root, recipe="landdiscover50k")


if __name__ == "__main__":
    main()
