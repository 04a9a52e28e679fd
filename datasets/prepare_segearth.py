#!/usr/bin/env python
"""SegEarth-OV's eight semantic evaluation sets → SegEarth/<Set>/{images,masks} (Table 1).

    python datasets/prepare_segearth.py --raw <SegEarth-OV data/> [--dataset segearth_loveda_val ...]

Input: the ``data/`` folder SegEarth-OV's ``dataset_prepare.md`` builds with its converters
(``tools/dataset_converters/*.py``; mmseg layouts). Masks are rewritten as PNG with the label ids
the reference evaluates: reduce_zero_label (raw 0 → 255, k → k − 1) for LoveDA, Potsdam and
Vaihingen (mmseg's dataset defaults), ids kept for the others; images are copied (or re-encoded
where the file's bytes are not its suffix's format: SegEarth-OV's UAVid converter and
mmsegmentation's iSAID converter save BMP data under ``.png`` names; counted). Folders read (methods-part2.md §S.1):

- segearth_openearthmap_val: ``OpenEarthMap/{img_dir,ann_dir}/val`` (.tif / .tif)
- segearth_loveda_val: ``LoveDA/{img_dir,ann_dir}/val``
- segearth_isaid_val: ``iSAID/{img_dir,ann_dir}/val`` (ann ``*_instance_color_RGB`` stems → image stems)
- segearth_potsdam_val: ``potsdam/{img_dir,ann_dir}/val``
- segearth_vaihingen_val: ``vaihingen/{img_dir,ann_dir}/val``
- segearth_uavid_test: ``UAVid/{img_dir,ann_dir}/test``
- segearth_udd5_val: ``UDD/UDD/UDD5/val/{src,gt}`` (.JPG / .png)
- segearth_vdd_test: ``VDD/test/{src,gt}`` (.JPG / .png)

UAVid "moving car" (decision): SegEarth-OV's ``tools/dataset_converters/uavid.py`` (commit
4496e8b) writes moving car as id 3 (``i if i != 7 else 3``: "convert Moving_Car to Static_Car",
also the ``UAVidDataset`` docstring), so its 7-class labels hold ids 0-6. Labels made by a
converter without that line hold **id 7** for moving car; mmseg's IoU would then count those
pixels as false positives of whatever is predicted there and never as car. We map id 7 → 3
(car), which is what the current converter writes and what its class list (one "car")
scores; such files are counted in the log.
"""
from __future__ import annotations

import sys

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.catalog import RECORDS
from ovrsis.data.prepare import IdMap, RawDownload, Source, Target, open_raw, pair_by_stem, parse_args, prepare, \
    shifted_ids
from ovrsis.engine import report_user_errors

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


UAVID_MOVING_CAR = ("UAVid labels holding id 7 (moving car, from a SegEarth-OV converter before "
                    "'convert Moving_Car to Static_Car'): mapped to 3 (car) as the current converter does")


def label_map(name: str) -> IdMap:
    """reduce_zero_label where the reference applies it, else ids kept (255 stays ignored);
    UAVid's moving car (7) → car (3) (module docstring)."""
    classes = len(RECORDS[name].classes)
    if LAYOUTS[name][2]:
        return shifted_ids(classes + 1, dropped=0)
    if name == "segearth_uavid_test":
        return IdMap({**{k: k for k in range(classes)}, 7: 3, 255: 255}, quirk_ids={7: UAVID_MOVING_CAR})
    return IdMap({**{k: k for k in range(classes)}, 255: 255})


def sources(name: str, raw: RawDownload) -> list[Source]:
    image_dir, label_dir, _, label_suffix = LAYOUTS[name]
    images = [p for p in raw.files("*", image_dir) if p.suffix.lower() in IMAGE_SUFFIXES]
    labels = [p for p in raw.files("*", label_dir) if p.suffix.lower() in IMAGE_SUFFIXES]
    return pair_by_stem(images, labels, label_stem=lambda s: s[: -len(label_suffix)] if label_suffix and
                        s.endswith(label_suffix) else s, raw=raw)


def main(argv: list[str] | None = None) -> None:
    def extra(parser):
        parser.add_argument("--dataset", nargs="+", choices=sorted(LAYOUTS), default=sorted(LAYOUTS),
                            help="sets to prepare (default: all eight)")
    args = parse_args(__doc__, argv, extra)
    raw = open_raw(args, "")
    for name in args.dataset:  # one listing of data/, the expected layout per set
        image_dir, label_dir = LAYOUTS[name][:2]
        raw.expected = f"SegEarth-OV's data/ after its converters: {image_dir}/* with {label_dir}/*"
        prepare(sources(name, raw), [Target(name, label_map(name))], args.root, f"segearth-{name}", raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
