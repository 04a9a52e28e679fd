#!/usr/bin/env python
"""FAST validation split, GSNet protocol (datasets.md §4.2) → FAST/val/{images,semlabels/gray}.

Raw download (INFERRED layout): the FAST part of SAMRS, or GSNet's ``Stev929/OVRSISS_test``
package, extracted under --raw with ``val/images/*.png`` and ``val/semlabels/gray/*.png``
(grayscale index masks, ids 0-36, unlabeled 255). The script copies and checks them.
"""
from __future__ import annotations

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, find_files, pair_by_stem, parse_args, prepare


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    pngs = find_files(args.raw, "*.png")
    images = [p for p in pngs if p.parent.name == "images" and p.parent.parent.name == "val"]
    labels = [p for p in pngs if p.parent.name == "gray" and p.parent.parent.name == "semlabels"]
    prepare(pair_by_stem(images, labels), [Target("gsnet_fast_val")], args.root, recipe="fast")


if __name__ == "__main__":
    main()
