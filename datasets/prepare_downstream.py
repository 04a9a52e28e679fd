#!/usr/bin/env python
"""Downstream single-class sets (datasets.md §5) → <Name>/<split>/{images,masks} with 0/1 masks.

    python datasets/prepare_downstream.py --dataset whu_aerial_val --raw <download>

Labels become 0 background / 1 foreground as SegEarth-OV's converters do
(``tools/dataset_converters/{whu,chn6-cug,deepglobe_road,roadval,xBD,wbs-si}.py``: grey value
>= 128, xBD targets >= 1; colour labels are reduced to grey as ``cv2.IMREAD_GRAYSCALE`` does).
Labels already converted to 0/1 are refused (the threshold would erase them). Release layouts
accepted (zipped or extracted under --raw; the first that matches is read; suffixes removed
from stems to pair):

- whu_aerial_val: ``val/image/*`` + ``val/label/*`` as ``.tif`` (WHU building dataset) or
  ``.png`` (how SegEarth-OV's ``WHUDataset`` and Pi-Seg read it)
- whu_sat2_test: ``test/image/*`` + ``test/label/*`` of "1. The cropped image tiles" (INFERRED)
- inria_test: ``train/images/<tile>.tif``, ``train/gt/<tile>.tif``; the 27 FCtL test tiles, cut
  into non-overlapping 1000x1000 crops (675)
- xbd_pre_test: ``test/images/*_pre_disaster.png``, ``test/targets/*_pre_disaster_target.png``
- chn6cug_test: ``val/images/*_sat.jpg``, ``val/gt/*_mask.png`` (SegEarth-OV's converter)
- deepglobe_road_test / massachusetts_road_test / spacenet_road_test: GRNet's GlobalRoadSet
  ``DeepGlobe_test_1530`` / ``Massachusetts_test_49`` / ``SpaceNet_test_567``, each as
  SegEarth-OV's converters read it, ``img/`` + ``gt/`` (``_sat`` / ``_mask`` suffixes where
  present), or ``image/`` + ``label/``
- wbssi_val: Kaggle ``Water Bodies Dataset/{Images,Masks}/*.jpg``; only the 499 stems of
  SegEarth-OV's ``tools/dataset_converters/wbs-si_val.txt`` (pass it as --val-list). Masks are
  written as PNG (the reference keeps JPEG, whose compression noise the threshold removes).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.benchmarks.classes import INRIA_TEST_TILES
from ovrsis.data.folder_dataset import DatasetError
from ovrsis.data.prepare import RawDownload, Source, Target, Threshold, Tiling, open_raw, pair_by_stem, parse_args, \
    prepare
from ovrsis.engine import report_user_errors

SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


@dataclass(frozen=True)
class Layout:
    """One release layout: relative globs of images and labels, stem suffixes removed to pair."""

    images: str
    labels: str
    image_suffix: str = ""
    label_suffix: str = ""

    def describe(self) -> str:
        return f"{self.images} + {self.labels}"


@dataclass(frozen=True)
class Task:
    layouts: tuple[Layout, ...]
    threshold: int = 128
    tiling: Tiling | None = None


def _roads(folder: str) -> tuple[Layout, ...]:
    return (Layout(f"{folder}/img/*", f"{folder}/gt/*", "_sat", "_mask"),
            Layout(f"{folder}/image/*", f"{folder}/label/*", "_sat", "_mask"))


TASKS = {
    "whu_aerial_val": Task((Layout("val/image/*", "val/label/*"),)),
    "whu_sat2_test": Task((Layout("test/image/*", "test/label/*"),)),
    "inria_test": Task((Layout("train/images/*", "train/gt/*"),), tiling=Tiling(1000, 1000, remainder="drop")),
    "xbd_pre_test": Task((Layout("test/images/*_pre_disaster.*", "test/targets/*_pre_disaster_target.*",
                                 label_suffix="_target"),), threshold=1),
    "chn6cug_test": Task((Layout("val/images/*", "val/gt/*", "_sat", "_mask"),)),
    "deepglobe_road_test": Task(_roads("DeepGlobe_test_1530")),
    "massachusetts_road_test": Task(_roads("Massachusetts_test_49")),
    "spacenet_road_test": Task(_roads("SpaceNet_test_567")),
    "wbssi_val": Task((Layout("Images/*.jpg", "Masks/*.jpg"),)),
}


def find_sources(name: str, raw: RawDownload, val_list: Path | None) -> list[Source]:
    for layout in TASKS[name].layouts:
        images, labels = raw.glob(layout.images, SUFFIXES), raw.glob(layout.labels, SUFFIXES)
        if images or labels:
            break
    else:
        raise raw.error(f"{name}: none of the release layouts found")
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
                        label_stem=lambda s: s.removesuffix(layout.label_suffix), raw=raw)


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        parser.add_argument("--dataset", required=True, choices=sorted(TASKS))
        parser.add_argument("--val-list", type=Path, help="wbssi_val only: SegEarth-OV's wbs-si_val.txt")

    args = parse_args(__doc__, argv, options)
    task = TASKS[args.dataset]
    raw = open_raw(args, " or ".join(layout.describe() for layout in task.layouts))
    target = Target(args.dataset, Threshold(task.threshold), tiling=task.tiling)
    prepare(find_sources(args.dataset, raw, args.val_list), [target], args.root, recipe=args.dataset, raw=raw)


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
