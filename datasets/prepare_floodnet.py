#!/usr/bin/env python
"""FloodNet Track 1, GSNet protocol (datasets.md §4.5) → FloodNet/val+test/{img,lbl}.

Release layout (INFERRED folder names of FloodNet-Supervised_v1.0), zipped or extracted under
--raw: ``{val,test}/{val,test}-org-img/*.jpg`` with ``{val,test}/{val,test}-label-img/*_lab.png``.
Labels are index masks 0-9 (FloodNet's class table) used unchanged; GSNet ignores 0 (Background).
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, open_raw, pair_by_stem, parse_args, prepare
from ovrsis.engine import report_user_errors

EXPECTED = "{val,test}/{val,test}-org-img/*.jpg with {val,test}/{val,test}-label-img/*_lab.png, zipped or extracted"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    raw = open_raw(args, EXPECTED)
    sources = []
    for split in ("val", "test"):
        images = raw.files("*.jpg", f"{split}-org-img")
        labels = raw.files("*_lab.png", f"{split}-label-img")
        sources += pair_by_stem(images, labels, label_stem=lambda s: s[: -len("_lab")], group=split, raw=raw)
    prepare(sources, [Target("gsnet_floodnet_valtest")], args.root, recipe="floodnet", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
