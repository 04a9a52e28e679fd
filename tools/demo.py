#!/usr/bin/env python
"""Segment your own images with any vocabulary (detectron2's demo.py / mmseg's image_demo.py).

    python tools/demo.py IMAGE|FOLDER|GLOB [...] --config-file CFG --weights CKPT \\
        --classes water "tree, forest" building [--output DIR] [KEY VALUE ...]

Inputs: files, folders (every raster file inside, sorted) and glob patterns. Class names:
``--classes`` (one argument per class; a comma inside one separates sub-prompts, ``\\,`` is a
literal comma) or ``--classes-file`` (.txt one per line, or a .json list).

Per image ``STEM`` it writes into ``--output``:

* ``STEM_labels.tif`` — georeferenced inputs (GeoTIFF/JP2 with a CRS or transform): the label
  map as a GeoTIFF with the input's CRS and transform and a colour table; other inputs get
  ``STEM_labels.png`` (uint8 class ids; uint16 above 255 classes). The input's no-data pixels
  (declared value, mask band, alpha mask, ``INPUT.RASTER.NODATA``) are 255 (65535) there, NaN
  in the probabilities and outside every GeoJSON polygon;
* ``STEM_mask.png`` — the image and the colourised prediction side by side, with the legend;
* ``STEM_overlay.png`` — the prediction blended over the image, at the image's size;
* ``STEM_heat_NN_CLASS.png`` (``--heatmaps``) — one probability heat-map per class (viridis, 0..1);
* ``STEM_probabilities.tif`` (``--probabilities``) — all class scores, float32, one band per class;
* ``STEM.geojson`` (``--geojson``) — the label map as polygons (WGS 84 when the input has a CRS);
* ``classes.json`` — class ids, names and colours.

Rasters: ``--bands 4 3 2`` (1-based; sets INPUT.RASTER.BANDS), ``--scaling`` auto | fixed |
percentile | percentile_dataset (INPUT.RASTER.SCALING; ``percentile_dataset`` takes the
percentiles over all inputs), ``--range LO HI`` (fixed), ``--percentiles LO HI`` (default 2 98).
Non-8-bit input without a scaling is an error naming these flags, never a silent clip.
Large scenes: ``--mode tiled`` (TEST.TILED geometry) with ``--native-resolution`` (no test-time
resize: INPUT.MIN_SIZE_TEST 0) scores the scene tile by tile, with a progress bar on a terminal.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.raster import RASTER_EXTENSIONS, dataset_percentiles
from ovrsis.data.vocabulary import display_name
from ovrsis.engine import report_user_errors
from ovrsis.engine.cli import split_overrides  # noqa: E402
from ovrsis.errors import ConfigError, OVRSISError
from ovrsis.export import (is_georeferenced, label_polygons, write_json, write_label_geotiff, write_label_png,
                           write_probability_geotiff)
from ovrsis.predictor import Prediction, Predictor
from ovrsis.visualization import class_colors, colorize, figure_with_legend, heatmap_figure, overlay, save_figure

NO_DATA = -1  # label of the input's no-data pixels in the pictures (black panel, unpainted overlay)


def add_model_arguments(parser: argparse.ArgumentParser, classes_file: bool = True) -> None:
    """``--config-file``, ``--weights``, ``--device`` and the vocabulary: ``--classes`` (or, with
    ``classes_file``, ``--classes-file`` instead) — the prediction tools' shared flags."""
    parser.add_argument("--config-file", required=True, metavar="FILE", help="ovrsis config of the model")
    parser.add_argument("--weights", default=None, metavar="CKPT", help="checkpoint (default: MODEL.WEIGHTS)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: MODEL.DEVICE)")
    if not classes_file:
        parser.add_argument("--classes", nargs="+", required=True, metavar="NAME", help="class names")
        return
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", nargs="+", metavar="NAME", help="class names, one argument per class")
    vocab.add_argument("--classes-file", metavar="FILE", help="class names: .txt (one per line) or .json list")


def add_raster_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bands``, ``--scaling``, ``--range``, ``--percentiles``: ``INPUT.RASTER`` as flags
    (:func:`raster_overrides` turns them into config overrides)."""
    parser.add_argument("--bands", nargs="+", type=int, metavar="B", help="1-based bands for R G B (or one band)")
    parser.add_argument("--scaling", choices=("auto", "fixed", "percentile", "percentile_dataset"),
                        help="stored values → 8 bits (INPUT.RASTER.SCALING)")
    parser.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"), help="fixed scaling range")
    parser.add_argument("--percentiles", nargs=2, type=float, metavar=("LO", "HI"), help="percentile stretch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|FOLDER|GLOB", help="images to segment")
    add_model_arguments(parser)
    parser.add_argument("--output", default="output/demo", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--mode", default=None,
                        help="inference protocol: whole | slide | tiled | a registered one (default: TEST.INFERENCE_MODE)")
    parser.add_argument("--native-resolution", action="store_true",
                        help="no test-time resize (INPUT.MIN_SIZE_TEST 0); use with --mode tiled for large scenes")
    add_raster_arguments(parser)
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: %(default)s)")
    parser.add_argument("--heatmaps", action="store_true", help="write one probability heat-map PNG per class")
    parser.add_argument("--probabilities", action="store_true", help="write all class scores as a float32 GeoTIFF")
    parser.add_argument("--geojson", action="store_true", help="write the label map as GeoJSON polygons")
    parser.add_argument("--min-polygon-pixels", type=int, default=0, metavar="N",
                        help="leave regions smaller than N pixels out of the GeoJSON")
    parser.epilog = "Config overrides go last, as KEY VALUE pairs (e.g. MODEL.DEVICE cpu TEST.TILED.TILE 256)."
    return parser


def expand_inputs(specs: list[str]) -> list[str]:
    """Files as given, folders → their raster files (sorted), globs → their matches (sorted).

    Raises:
        ConfigError: a spec matching nothing, or two inputs with the same file stem (their
        outputs would collide).
    """
    files: list[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(str(p) for p in Path(spec).iterdir() if p.suffix.lower() in RASTER_EXTENSIONS)
        elif any(ch in spec for ch in "*?["):
            found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        elif os.path.isfile(spec):
            found = [spec]
        else:
            raise ConfigError(f"input {spec!r} does not exist")
        if not found:
            raise ConfigError(f"input {spec!r} holds no images ({', '.join(RASTER_EXTENSIONS)})")
        files.extend(found)
    stems = [Path(f).stem for f in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ConfigError(f"several inputs share the file stem(s) {clashes}; their outputs would overwrite "
                          "each other: run them separately or into different --output folders")
    return files


def raster_overrides(args: argparse.Namespace) -> list[str]:
    """The raster flags as INPUT.RASTER config overrides."""
    opts = []
    if args.bands is not None:
        opts += ["INPUT.RASTER.BANDS", str(args.bands)]
    if args.scaling is not None:
        opts += ["INPUT.RASTER.SCALING", args.scaling]
    if args.range is not None:
        opts += ["INPUT.RASTER.RANGE", str(list(args.range))]
    if args.percentiles is not None:
        opts += ["INPUT.RASTER.PERCENTILES", str(list(args.percentiles))]
    return opts


# the config keys the prediction tools' flags set (add_model_arguments, add_raster_arguments)
FLAG_KEYS = {"MODEL.WEIGHTS": "--weights", "MODEL.DEVICE": "--device"}
RASTER_FLAGS = "--bands sets INPUT.RASTER.BANDS, --scaling .SCALING, --range .RANGE, --percentiles .PERCENTILES"


def with_flag_hint(err: OVRSISError) -> OVRSISError:
    """``err`` (same type) with the flags that set the config keys it names — ``--weights`` for
    ``MODEL.WEIGHTS``, ``--device`` for ``MODEL.DEVICE``, the raster flags for ``INPUT.RASTER``;
    ``err`` itself when it names none (an unreadable file, a grid mismatch)."""
    message = str(err)
    if "(flags: " in message:  # hinted already
        return err
    hints = [f"{flag} sets {key}" for key, flag in FLAG_KEYS.items() if key in message]
    if "INPUT.RASTER" in message:
        hints.append(RASTER_FLAGS)
    return type(err)(f"{message} (flags: {', '.join(hints)})") if hints else err


@contextlib.contextmanager
def flag_hints() -> Iterator[None]:
    """Re-raise ovrsis' user errors from the block (or the decorated function) with
    :func:`with_flag_hint`'s flags added."""
    try:
        yield
    except OVRSISError as err:
        hinted = with_flag_hint(err)
        if hinted is err:
            raise
        raise hinted from None


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", display_name(name)).strip("_")[:40] or "class"


def write_outputs(result: Prediction, stem: str, output: str, colors: np.ndarray, args: argparse.Namespace
                  ) -> list[str]:
    """Write one prediction's files (module docstring); returns their paths."""
    written = []
    names = result.class_names
    if is_georeferenced(result.info):
        path = os.path.join(output, f"{stem}_labels.tif")
        write_label_geotiff(path, result.labels, result.info, colors, result.valid)
    else:
        path = os.path.join(output, f"{stem}_labels.png")
        write_label_png(path, result.labels, len(names), result.valid)
    written.append(path)
    shown = result.labels if result.valid is None else np.where(result.valid, result.labels, NO_DATA)
    fig = figure_with_legend([result.image, colorize(shown, colors, ignore=NO_DATA)], ["image", "prediction"], names,
                             colors)
    written.append(os.path.join(output, f"{stem}_mask.png"))
    save_figure(fig, written[-1])
    written.append(os.path.join(output, f"{stem}_overlay.png"))  # no-data pixels: the image, unpainted
    cv2.imwrite(written[-1], overlay(result.image, shown, colors, args.alpha, ignore=NO_DATA)[:, :, ::-1])
    if args.heatmaps:
        probs = result.probabilities.numpy()
        for i, name in enumerate(names):
            written.append(os.path.join(output, f"{stem}_heat_{i:02d}_{safe_name(name)}.png"))
            save_figure(heatmap_figure(probs[i], f"{display_name(name)}: score"), written[-1])
    if args.probabilities:
        if result.info is None or result.info.transform is None:
            from affine import Affine

            info = dataclasses.replace(result.info, transform=Affine.identity(), crs=None)
        else:
            info = result.info
        written.append(os.path.join(output, f"{stem}_probabilities.tif"))
        write_probability_geotiff(written[-1], result.probabilities.numpy(), info, names, result.valid)
    if args.geojson:
        written.append(os.path.join(output, f"{stem}.geojson"))
        write_json(written[-1], label_polygons(result.labels, names, result.info, args.min_polygon_pixels,
                                               valid=result.valid))
    return written


@flag_hints()
def main(argv: list[str] | None = None) -> int:
    arguments, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(arguments)
    files = expand_inputs(args.inputs)
    opts = overrides + raster_overrides(args)
    if args.native_resolution:
        opts += ["INPUT.MIN_SIZE_TEST", "0"]
    predictor = Predictor(args.config_file, args.weights, device=args.device, inference_mode=args.mode, opts=opts)
    names = predictor.set_vocabulary(args.classes if args.classes else args.classes_file)
    raster = predictor.raster
    if raster.scaling == "percentile_dataset":
        raster = dataclasses.replace(raster, dataset_stats=dataset_percentiles(files, raster))
    colors = class_colors(names)
    os.makedirs(args.output, exist_ok=True)
    write_json(os.path.join(args.output, "classes.json"),
               [{"id": i, "class": n, "color": colors[i].tolist()} for i, n in enumerate(names)])
    print(f"{len(files)} image(s), {len(names)} classes, protocol {predictor.inference_mode}, "
          f"device {predictor.cfg.MODEL.DEVICE} → {args.output}", flush=True)
    for path in tqdm(files, desc="images", unit="img", disable=None if len(files) > 1 else True):
        bar = tqdm(desc=Path(path).name, unit="tile", leave=False, disable=None)

        def advance(done: int, total: int, bar: tqdm = bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        start = time.perf_counter()
        result = predictor.predict(path, names, raster, progress=advance)
        seconds = time.perf_counter() - start
        bar.close()
        written = write_outputs(result, Path(path).stem, args.output, colors, args)
        scored = result.labels if result.valid is None else result.labels[result.valid]
        shares = np.bincount(scored.ravel(), minlength=len(names)) / max(scored.size, 1)
        top = ", ".join(f"{display_name(names[i])} {100 * shares[i]:.0f}%" for i in np.argsort(-shares)[:3])
        tqdm.write(f"{path}: {result.labels.shape[1]}x{result.labels.shape[0]} in {seconds:.2f} s ({top}); "
                   f"wrote {', '.join(os.path.basename(w) for w in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
