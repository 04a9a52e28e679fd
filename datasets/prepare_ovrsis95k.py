#!/usr/bin/env python
"""OVRSIS95K (datasets.md §3.1) → OVRSIS95K/{train,val}/{img,mask}.

Release layout: the Hugging Face package ``kkk2026/OVRSIS95K``, zipped or extracted under
--raw: ``{train,val}/img`` + ``{train,val}/mask`` (what the code reads) or
``{train,val}/images`` + ``{train,val}/annotations`` (what the package README names; INFERRED:
both accepted). It is already in ids 0-34 (background = 34, a trained class); the script
copies it into the registered layout and checks every mask.
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, open_raw, parse_args, prepare, split_folder_pairs
from ovrsis.engine import report_user_errors

EXPECTED = "{train,val}/img/* with {train,val}/mask/*.png, or {train,val}/images/* with {train,val}/annotations/*.png"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    raw = open_raw(args, EXPECTED)
    sources = (split_folder_pairs(raw, ("train", "val"), "img", "mask")
               or split_folder_pairs(raw, ("train", "val"), "images", "annotations"))
    targets = [Target("ovrsis95k_train", groups=("train",)), Target("ovrsis95k_val", groups=("val",))]
    prepare(sources, targets, args.root, recipe="ovrsis95k", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
