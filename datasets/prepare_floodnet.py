#!/usr/bin/env python
"""FloodNet Track 1, GSNet protocol (datasets.md §4.5) → FloodNet/val+test/{img,lbl}.

Raw download (INFERRED layout of FloodNet-Supervised_v1.0): ``val/val-org-img/*.jpg`` with
``val/val-label-img/*_lab.png``, and the same for ``test``, extracted under --raw. Labels
are index masks 0-9 used unchanged; GSNet ignores 0 (Background).
"""
from __future__ import annotations

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.prepare import Target, find_files, pair_by_stem, parse_args, prepare


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    sources = []
    for split in ("val", "test"):
        images = [p for p in find_files(args.raw, "*.jpg") if p.parent.name == f"{split}-org-img"]
        labels = [p for p in find_files(args.raw, "*_lab.png") if p.parent.name == f"{split}-label-img"]
        sources += pair_by_stem(images, labels, label_stem=lambda s: s[: -len("_lab")], group=split)
    prepare(sources, [Target("gsnet_floodnet_valtest")], args.root, recipe="floodnet")


if __name__ == "__main__":
    main()
