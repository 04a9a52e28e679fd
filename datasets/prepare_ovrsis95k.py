#!/usr/bin/env python
"""OVRSIS95K (datasets.md §3.1) → OVRSIS95K/{train,val}/{img,mask}.

Raw download: the Hugging Face package ``kkk2026/OVRSIS95K`` extracted under --raw. It is
already in ids 0-34 (background = 34, a trained class); the script copies it into the
registered layout and checks every mask. The package README names the folders
``images``/``annotations`` while the code reads ``img``/``mask`` (INFERRED: both accepted).
"""
from __future__ import annotations

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, parse_args, prepare, split_folder_pairs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    sources = (split_folder_pairs(args.raw, ("train", "val"), "img", "mask")
               or split_folder_pairs(args.raw, ("train", "val"), "images", "annotations"))
    targets = [Target("ovrsis95k_train", groups=("train",)), Target("ovrsis95k_val", groups=("val",))]
    prepare(sources, targets, args.root, recipe="ovrsis95k")


if __name__ == "__main__":
    main()
