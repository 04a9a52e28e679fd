#!/usr/bin/env python
"""SegEarth-OV's eight semantic evaluation sets → SegEarth/<Set>/{images,masks} (Table 1).

    python datasets/prepare_segearth.py --raw <SegEarth-OV data/> [--dataset segearth_loveda_val ...]

Input: the ``data/`` folder SegEarth-OV's ``dataset_prepare.md`` builds with its converters
(``tools/dataset_converters/*.py``; mmseg layouts). Masks are rewritten as PNG with the label ids
the reference evaluates: reduce_zero_label (raw 0 → 255, k → k − 1) for LoveDA, Potsdam and
Vaihingen (mmseg's dataset defaults), ids kept for the others; images are copied. Folders read
(methods-part2.md §S.1):

- segearth_openearthmap_val: ``OpenEarthMap/{img_dir,ann_dir}/val`` (.tif / .tif)
- segearth_loveda_val: ``LoveDA/{img_dir,ann_dir}/val``
- segearth_isaid_val: ``iSAID/{img_dir,ann_dir}/val`` (ann ``*_instance_color_RGB`` stems → image stems)
- segearth_potsdam_val: ``potsdam/{img_dir,ann_dir}/val``
- segearth_vaihingen_val: ``vaihingen/{img_dir,ann_dir}/val``
- segearth_uavid_test: ``UAVid/{img_dir,ann_dir}/test``
- segearth_udd5_val: ``UDD/UDD/UDD5/val/{src,gt}`` (.JPG / .png)
- segearth_vdd_test: ``VDD/test/{src,gt}`` (.JPG / .png)
"""
from __future__ import annotations

from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.catalog import RECORDS
from ovrsis.data.prepare import IdMap, Source, Target, find_files, pair_by_stem, parse_args, prepare, shifted_ids

IMAGE_SUFFIXES = (".png", ".jpg", ".tif", ".tiff")
# record → (image folder, label folder, reduce_zero_label, label-stem suffix to drop)
LAYOUTS = {
    "segearth_openearthmap_val": ("OpenEarthMap/img_dir/val", "OpenEarthMap/ann_dir/val", False, ""),
    "segearth_loveda_val": ("LoveDA/img_dir/val", "LoveDA/ann_dir/val", True, ""),
    "segearth_isaid_val": ("iSAID/img_dir/val", "iSAID/ann_dir/val", False, "_instance_color_RGB"),
    "segearth_potsdam_val": ("potsdam/img_dir/val", "potsdam/ann_dir/val", True, ""),
    "segearth_vaihingen_val": ("vaihingen/img_dir/val", "vaihingen/ann_dir/val", True, ""),
    "segearth_uavid_test": ("UAVid/img_dir/test", "UAVid/ann_dir/test", False, ""),
    "segearth_udd5_val": ("UDD/UDD/UDD5/val/src", "UDD/UDD/UDD5/val/gt", False, ""),
    "segearth_vdd_test": ("VDD/test/src", "VDD/test/gt", False, ""),
}


def label_map(name: str) -> IdMap:
    """reduce_zero_label where the reference applies it, else ids kept (255 stays ignored)."""
    classes = len(RECORDS[name].classes)
    if LAYOUTS[name][2]:
        return shifted_ids(classes + 1, dropped=0)
    return IdMap({**{k: k for k in range(classes)}, 255: 255})


def sources(name: str, raw: Path) -> list[Source]:
    image_dir, label_dir, _, label_suffix = LAYOUTS[name]
    images = [p for p in find_files(raw / image_dir, "*") if p.suffix.lower() in IMAGE_SUFFIXES]
    labels = [p for p in find_files(raw / label_dir, "*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return pair_by_stem(images, labels, label_stem=lambda s: s[: -len(label_suffix)] if label_suffix and
                        s.endswith(label_suffix) else s)


def main() -> None:
    def extra(parser):
        parser.add_argument("--dataset", nargs="+", choices=sorted(LAYOUTS), default=sorted(LAYOUTS),
                            help="sets to prepare (default: all eight)")
    args = parse_args(__doc__, extra=extra)
    for name in args.dataset:
        prepare(sources(name, args.raw), [Target(name, label_map(name))], args.root, f"segearth-{name}")


if __name__ == "__main__":
    main()
