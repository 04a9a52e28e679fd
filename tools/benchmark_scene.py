#!/usr/bin/env python
"""Whole-scene streaming benchmark: peak memory and throughput against scene size.

    python tools/benchmark_scene.py [--sizes 2000 8000 20000] [--work DIR] [--classes 8] \\
        [--config-file configs/quickstart.yaml] [--json FILE] [KEY VALUE ...]

For each size S it writes a synthetic S x S 3-band uint8 GeoTIFF (tiled, 512-row strips written
one at a time, so the scene is never whole in memory: fields of five classes and a road grid,
:data:`CLASSES`, from a fixed seed; with ``--keep`` also their class ids, ``WORK/truth/``), then predicts it in a fresh process with ``Predictor.predict_scene``
(random-initialised model of the config, ``--classes`` dummy class names, labels and quick-look
written) and records wall time, Mpx/s and the process's peak RSS. The table gives each size's
peak relative to the smallest size's (the acceptance: at most 1.2 at 20,000²) and the machine's
load average, since a shared machine's throughput varies with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext

import numpy as np

from ovrsis.engine.cli import parse_args_with_overrides

STRIP = 512
CLASSES = ["water", "tree, forest", "building", "bare soil", "cropland", "road"]  # ids of the truth raster
COLOURS = np.array([[30, 80, 160], [40, 140, 50], [150, 150, 150], [190, 170, 120], [90, 120, 40], [200, 200, 200]],
                   np.int16)


def write_scene(path: str, size: int, truth: str = "", seed: int = 0) -> None:
    """A synthetic ``size`` x ``size`` RGB GeoTIFF written strip by strip (never whole in memory):
    fields of the first five :data:`CLASSES` and a road grid; ``truth``: also its class ids
    (uint8 GeoTIFF on the same grid)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    cell = 97  # field size in pixels
    profile = {"driver": "GTiff", "height": size, "width": size, "tiled": True, "blockxsize": 512,
               "blockysize": 512, "crs": "EPSG:32633", "transform": from_origin(500000.0, 5200000.0, 1.0, 1.0)}
    with rasterio.open(path, "w", count=3, dtype="uint8", **profile) as dst, \
            (rasterio.open(truth, "w", count=1, dtype="uint8", **profile) if truth else nullcontext()) as ids:
        cols = np.arange(size)
        for row in range(0, size, STRIP):
            rows = np.arange(row, min(row + STRIP, size))
            rng = np.random.default_rng([seed, row])
            field = ((rows[:, None] // cell) * 7919 + (cols[None, :] // cell) * 104729) % (len(COLOURS) - 1)
            field[(rows % 640 < 12)[:, None] | (cols % 900 < 10)[None, :]] = len(COLOURS) - 1  # roads
            image = COLOURS[field] + rng.integers(-25, 26, (len(rows), size, 3), dtype=np.int16)
            window = Window(0, row, size, len(rows))
            dst.write(np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1), window=window)
            if ids is not None:
                ids.write(field.astype(np.uint8), 1, window=window)


def predict(args: argparse.Namespace) -> None:
    """Worker (a fresh process per size): predict one scene, print one JSON line."""
    import ovrsis  # before torch: the CPU defaults (ovrsis.runtime)
    import torch
    from ovrsis.scene import SceneOptions

    predictor = ovrsis.Predictor(args.config_file, None, device="cpu", inference_mode="tiled",
                                 opts=["INPUT.MIN_SIZE_TEST", "0", "MODEL.CLIP.PRETRAINED", ""] + args.opts)
    names = [f"class {i}" for i in range(args.classes)]
    start = time.perf_counter()
    result = predictor.predict_scene(args.scene, names, args.output, SceneOptions(panel_width=args.panel_width),
                                     progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "mpx": result.megapixels, "peak_rss_mb": result.peak_rss_mb,
                      "threads": torch.get_num_threads(), "summary": result.summary()}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 8000, 20000], metavar="S")
    parser.add_argument("--work", default="output/benchmark_scene", metavar="DIR", help="scenes and outputs")
    parser.add_argument("--config-file", default="configs/quickstart.yaml", metavar="FILE")
    parser.add_argument("--classes", type=int, default=8, metavar="T", help="vocabulary size (dummy names)")
    parser.add_argument("--panel-width", type=int, default=2048, metavar="PX")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scenes and outputs, and write each scene's class ids to WORK/truth/")
    parser.add_argument("--json", default="", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--scene", help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    args = parse_args_with_overrides(parser)
    if args.scene:
        predict(args)
        return 0
    os.makedirs(os.path.join(args.work, "truth"), exist_ok=True)
    rows = []
    for size in args.sizes:
        scene = os.path.join(args.work, f"scene_{size}.tif")
        output = os.path.join(args.work, f"out_{size}")
        shutil.rmtree(output, ignore_errors=True)
        start = time.perf_counter()
        write_scene(scene, size, os.path.join(args.work, "truth", f"scene_{size}.tif") if args.keep else "")
        written = time.perf_counter() - start
        load_before = os.getloadavg()[0]
        worker = [sys.executable, __file__, "--scene", scene, "--output", output, "--config-file", args.config_file,
                  "--classes", str(args.classes), "--panel-width", str(args.panel_width), *args.opts]
        done = subprocess.run(worker, check=True, capture_output=True, text=True)
        numbers = json.loads(done.stdout.strip().splitlines()[-1])
        row = {"size": size, "mpx": numbers["mpx"], "seconds": round(numbers["seconds"], 1),
               "mpx_per_s": round(numbers["mpx"] / numbers["seconds"], 3), "peak_rss_mb": round(numbers["peak_rss_mb"]),
               "threads": numbers["threads"], "write_s": round(written, 1),
               "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            os.remove(scene)
            shutil.rmtree(output, ignore_errors=True)
    base = rows[0]["peak_rss_mb"]
    print(f"\n| scene | Mpx | time (s) | Mpx/s | peak RSS (MB) | vs {rows[0]['size']}² | torch threads | load avg "
          "(start, end) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']:,}² | {r['mpx']:.0f} | {r['seconds']} | {r['mpx_per_s']:.2f} | {r['peak_rss_mb']} | "
              f"{r['peak_rss_mb'] / base:.2f}x | {r['threads']} | {r['load_avg'][0]}, {r['load_avg'][1]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
