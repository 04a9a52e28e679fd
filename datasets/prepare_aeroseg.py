#!/usr/bin/env python
"""AerOSeg seen/unseen training masks (datasets.md §7.1), derived from prepared datasets.

Run after ``prepare_isaid.py``, ``prepare_dlrsd.py`` and/or ``prepare_openearthmap.py``
(or after extracting the benchmark packages). For each of iSAID, DLRSD and OpenEarthMap
whose training split is present, writes ``<train>/<masks>_aeroseg_seen`` with ids into the
seen-class list and unseen pixels → 255 (UNCERTAIN: AerOSeg does not say whether unseen
pixels were ignored or background), registered as ``aeroseg_<set>_train_seen``; the
validation splits (``aeroseg_<set>_val``) are the prepared val folders with all classes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.catalog import RECORDS
from ovrsis.data.prepare import IdMap, Source, Target, check_dataset, parse_args, prepare
from ovrsis.data.folder_dataset import load_folder_dataset
from ovrsis.engine import report_user_errors

# seen-only training split → the all-class training split it is derived from
DERIVED_FROM = {"aeroseg_isaid_train_seen": "v1_isaid_train", "aeroseg_dlrsd_train_seen": "v1_dlrsd_train",
                "aeroseg_oem_train_seen": "oem256_train"}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, raw=False)
    for name, source_name in DERIVED_FROM.items():
        source, seen = RECORDS[source_name], RECORDS[name]
        image_dir, mask_dir = source.folders(args.root)
        if not os.path.isdir(mask_dir):
            print(f"skip {name}: {source_name} is not prepared ({mask_dir} missing)")
            continue
        ids = {i: seen.classes.index(c) if c in seen.classes else 255 for i, c in enumerate(source.classes)}
        samples = load_folder_dataset(source_name, image_dir, mask_dir, source.image_ext, source.mask_ext)
        sources = [Source(s["image_id"], Path(s["file_name"]), Path(s["sem_seg_file_name"])) for s in samples]
        prepare(sources, [Target(name, IdMap(ids | {source.ignore_value: 255}))], args.root, recipe=name,
                dry_run=args.dry_run)
        if not args.dry_run:
            check_dataset(RECORDS[name.replace("_train_seen", "_val")], args.root)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
