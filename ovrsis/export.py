"""Writing predictions for other tools: label maps (PNG, or GeoTIFF keeping the input's
georeferencing), per-class probability GeoTIFFs, and polygons (GeoJSON) for GIS users.

GeoTIFFs go through rasterio with the input's CRS and affine transform unchanged: the
predictor returns maps at the image's stored size, so pixel (row, col) of the output covers
exactly the ground of pixel (row, col) of the input. Label GeoTIFFs carry a colour table
(the :func:`ovrsis.visualization.palette` colours) so GIS software shows the classes at once.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Optional

import cv2
import numpy as np

from .data.raster import RasterInfo
from .data.vocabulary import display_name, split_subprompts


def label_dtype(num_classes: int) -> np.dtype:
    """uint8 for up to 255 classes (255 stays free for "no data"), else uint16."""
    return np.dtype(np.uint8 if num_classes <= 255 else np.uint16)


def is_georeferenced(info: Optional[RasterInfo]) -> bool:
    """True when ``info`` (a GDAL-read file) has a CRS or a non-identity transform."""
    if info is None or info.transform is None:
        return False
    from affine import Affine

    return info.crs is not None or info.transform != Affine.identity()


def write_label_png(path: str, labels: np.ndarray, num_classes: int, valid: Optional[np.ndarray] = None) -> None:
    """Label map (H, W) as a single-channel PNG (uint8, or uint16 above 255 classes); where
    ``valid`` (H, W) is False the pixel gets the no-data value 255 (65535 for uint16)."""
    dtype = label_dtype(num_classes)
    data = labels.astype(dtype)
    if valid is not None:
        data[~valid] = np.iinfo(dtype).max
    if not cv2.imwrite(path, data):
        raise OSError(f"could not write {path}")


def _geo_profile(info: RasterInfo, count: int, dtype: np.dtype, nodata: Optional[float]) -> dict:
    profile = {"driver": "GTiff", "height": info.height, "width": info.width, "count": count,
               "dtype": np.dtype(dtype).name, "crs": info.crs, "transform": info.transform,
               "compress": "deflate", "nodata": nodata}
    if info.height >= 256 and info.width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def write_label_geotiff(path: str, labels: np.ndarray, info: RasterInfo, colors: Optional[np.ndarray] = None,
                        valid: Optional[np.ndarray] = None) -> None:
    """Label map (H, W) as a 1-band GeoTIFF with ``info``'s CRS and transform.

    ``colors`` (T, 3) uint8 become the colour table (uint8 maps only); where ``valid`` (H, W)
    is False the pixel gets the no-data value 255 (65535 for uint16).

    Raises:
        ValueError: a label map whose size differs from ``info``'s.
    """
    import rasterio

    if labels.shape != (info.height, info.width):
        raise ValueError(f"label map {labels.shape} does not match {info.describe()}")
    num = int(colors.shape[0]) if colors is not None else int(labels.max()) + 1
    dtype = label_dtype(num)
    nodata = np.iinfo(dtype).max
    data = labels.astype(dtype)
    if valid is not None:
        data[~valid] = nodata
    with rasterio.open(path, "w", **_geo_profile(info, 1, dtype, nodata)) as dst:
        dst.write(data, 1)
        if colors is not None and dtype == np.uint8:
            dst.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(colors)})


def write_probability_geotiff(path: str, probabilities: np.ndarray, info: RasterInfo,
                              class_names: Sequence[str], valid: Optional[np.ndarray] = None) -> None:
    """Per-class probabilities (T, H, W) as a T-band float32 GeoTIFF with ``info``'s georeferencing;
    band ``i + 1`` is described with class ``i``'s display name. Where ``valid`` (H, W) is False
    every band holds the declared no-data value NaN."""
    import rasterio

    if probabilities.shape[1:] != (info.height, info.width):
        raise ValueError(f"probabilities {probabilities.shape} do not match {info.describe()}")
    data = probabilities.astype(np.float32)
    if valid is not None:
        data[:, ~valid] = np.nan
    nodata = np.nan if valid is not None else None
    with rasterio.open(path, "w", **_geo_profile(info, probabilities.shape[0], np.float32, nodata)) as dst:
        dst.write(data)
        for i, name in enumerate(class_names):
            dst.set_band_description(i + 1, display_name(name))


def label_polygons(labels: np.ndarray, class_names: Sequence[str], info: Optional[RasterInfo] = None,
                   min_pixels: int = 0, to_wgs84: bool = True, valid: Optional[np.ndarray] = None) -> dict:
    """The label map as a GeoJSON FeatureCollection: one polygon per connected region
    (4-connectivity, ``rasterio.features.shapes``), properties ``class_id``, ``class`` (display
    name), ``prompts`` (the sub-prompts), ``pixels``.

    Coordinates: with a georeferenced ``info``, the input's CRS, reprojected to WGS 84
    longitude/latitude when ``to_wgs84`` (RFC 7946); otherwise (no CRS) pixel coordinates
    (x = column, y = row). The collection names its coordinates in the foreign member
    ``"coordinate_system"`` (RFC 7946 §6.1); a FeatureCollection may not carry a ``"coordinates"``
    member (§7.1).
    Regions smaller than ``min_pixels`` are left out, and so are pixels where ``valid`` (H, W)
    is False (the input's no-data).
    """
    from rasterio import features
    from rasterio.transform import Affine

    geo = is_georeferenced(info)
    transform = info.transform if geo else Affine.identity()
    data = labels.astype(np.int32)
    pixel_area = abs(transform.determinant)
    feats = []
    mask = None if valid is None else np.asarray(valid, bool)
    for geometry, value in features.shapes(data, mask=mask, transform=transform, connectivity=4):
        rings = geometry["coordinates"]
        pixels = int(round((_ring_area(rings[0]) - sum(_ring_area(h) for h in rings[1:])) / pixel_area))
        if pixels < min_pixels:
            continue
        feats.append(polygon_feature(geometry, int(value), class_names, pixels))
    if geo and info.crs is not None and to_wgs84:
        from rasterio.warp import transform_geom

        for f in feats:
            f["geometry"] = transform_geom(info.crs, "EPSG:4326", f["geometry"])
    return {"type": "FeatureCollection", "coordinate_system": coordinate_system(info, to_wgs84), "features": feats}


def polygon_feature(geometry: dict, class_id: int, class_names: Sequence[str], pixels: int) -> dict:
    """One region as a GeoJSON Feature with the properties ``class_id``, ``class`` (display name),
    ``prompts`` (the sub-prompts) and ``pixels`` (shared by :func:`label_polygons` and the
    streamed scene polygons, :mod:`ovrsis.scene.polygons`)."""
    name = class_names[class_id]
    return {"type": "Feature", "geometry": geometry,
            "properties": {"class_id": class_id, "class": display_name(name), "prompts": split_subprompts(name),
                           "pixels": pixels}}


def coordinate_system(info: Optional[RasterInfo], to_wgs84: bool = True) -> str:
    """What the polygons' coordinates are for an input ``info`` (the rule of :func:`label_polygons`)."""
    if is_georeferenced(info) and info.crs is not None:
        return "EPSG:4326 (longitude, latitude)" if to_wgs84 else str(info.crs)
    return "the input's transform (no CRS declared)" if is_georeferenced(info) else "pixel (x = column, y = row)"


def _ring_area(ring: Sequence[Sequence[float]]) -> float:
    """Absolute shoelace area of a closed ring."""
    xs = np.asarray([p[0] for p in ring], np.float64)
    ys = np.asarray([p[1] for p in ring], np.float64)
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def write_json(path: str, data: Any) -> None:
    """``data`` as JSON, written atomically."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
