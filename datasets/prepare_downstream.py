#!/usr/bin/env python
"""Downstream single-class sets (datasets.md §5) → <Name>/<split>/{images,masks} with 0/1 masks.

    python datasets/prepare_downstream.py --dataset whu_aerial_val --raw <download>

Labels become 0 background / 1 foreground: 8-bit labels are thresholded at 128 (SegEarth-OV's
converters), xBD targets at 1 (any damage level is a building). Raw layouts, as SegEarth-OV's
preparation guide describes the downloads (those marked INFERRED could not be checked):

- whu_aerial_val: ``val/image/*.tif``, ``val/label/*.tif`` (INFERRED)
- whu_sat2_test: ``test/image/*.tif``, ``test/label/*.tif`` of "1. The cropped image tiles" (INFERRED)
- inria_test: ``train/images/<tile>.tif``, ``train/gt/<tile>.tif``; the 27 FCtL test tiles, cut
  into non-overlapping 1000x1000 crops (675)
- xbd_pre_test: ``test/images/*_pre_disaster.png``, ``test/targets/*_pre_disaster_target.png``
- chn6cug_test: ``val/images/*_sat.jpg``, ``val/gt/*_mask.png`` (INFERRED folder names)
- deepglobe_road_test / massachusetts_road_test / spacenet_road_test: GRNet's GlobalRoadSet
  ``DeepGlobe_test_1530`` / ``Massachusetts_test_49`` / ``SpaceNet_test_567``, each with
  ``image/`` and ``label/`` (INFERRED folder names)
- wbssi_val: Kaggle ``Water Bodies Dataset/{Images,Masks}/*.jpg``; only the 499 stems of
  SegEarth-OV's ``tools/dataset_converters/wbs-si_val.txt`` (pass it as --val-list). Masks are
  written as PNG (the reference keeps JPEG, whose compression noise the threshold removes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import INRIA_TEST_TILES
from ovrsis.data.folder_dataset import DatasetError
from ovrsis.data.prepare import Source, Target, Threshold, Tiling, pair_by_stem, parse_args, prepare


@dataclass(frozen=True)
class Layout:
    images: str  # glob under --raw
    labels: str
    image_suffix: str = ""  # removed from image stems
    label_suffix: str = ""  # removed from label stems
    threshold: int = 128
    tiling: Tiling | None = None


LAYOUTS = {
    "whu_aerial_val": Layout("val/image/*.tif", "val/label/*.tif"),
    "whu_sat2_test": Layout("test/image/*.tif", "test/label/*.tif"),
    "inria_test": Layout("train/images/*.tif", "train/gt/*.tif", tiling=Tiling(1000, 1000, remainder="drop")),
    "xbd_pre_test": Layout("test/images/*_pre_disaster.png", "test/targets/*_pre_disaster_target.png",
                           label_suffix="_target", threshold=1),
    "chn6cug_test": Layout("val/images/*_sat.jpg", "val/gt/*_mask.png", "_sat", "_mask"),
    "deepglobe_road_test": Layout("DeepGlobe_test_1530/image/*", "DeepGlobe_test_1530/label/*"),
    "massachusetts_road_test": Layout("Massachusetts_test_49/image/*", "Massachusetts_test_49/label/*"),
    "spacenet_road_test": Layout("SpaceNet_test_567/image/*", "SpaceNet_test_567/label/*"),
    "wbssi_val": Layout("**/Images/*.jpg", "**/Masks/*.jpg"),
}


def find_sources(name: str, raw: Path, val_list: Path | None) -> list[Source]:
    layout = LAYOUTS[name]
    images, labels = sorted(raw.glob(layout.images)), sorted(raw.glob(layout.labels))
    if name == "inria_test":
        images = [p for p in images if p.stem in INRIA_TEST_TILES]
        labels = [p for p in labels if p.stem in INRIA_TEST_TILES]
    if name == "wbssi_val":
        if val_list is None:
            raise DatasetError("wbssi_val needs --val-list (SegEarth-OV's wbs-si_val.txt: the 499 validation stems)")
        keep = {Path(line.strip()).stem for line in val_list.read_text().splitlines() if line.strip()}
        images = [p for p in images if p.stem in keep]
        labels = [p for p in labels if p.stem in keep]
    return pair_by_stem(images, labels, image_stem=lambda s: s.removesuffix(layout.image_suffix),
                        label_stem=lambda s: s.removesuffix(layout.label_suffix))


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        parser.add_argument("--dataset", required=True, choices=sorted(LAYOUTS))
        parser.add_argument("--val-list", type=Path, help="wbssi_val only: SegEarth-OV's wbs-si_val.txt")

    args = parse_args(__doc__, argv, options)
    layout = LAYOUTS[args.dataset]
    target = Target(args.dataset, Threshold(layout.threshold), tiling=layout.tiling)
    prepare(find_sources(args.dataset, args.raw, args.val_list), [target], args.root, recipe=args.dataset)


if __name__ == "__main__":
    main()
