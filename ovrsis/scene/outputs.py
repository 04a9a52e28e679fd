"""The files a scene prediction writes, block by block, and how they become cloud-optimised GeoTIFFs.

Per scene ``STEM`` in the output folder:

* ``STEM_labels.tif`` — class ids (uint8; uint16 above 255 classes) as a tiled, DEFLATE-compressed
  cloud-optimised GeoTIFF (GDAL's COG driver) with nearest-neighbour overviews, the input's CRS
  and transform, a colour table (:func:`ovrsis.visualization.class_colors`, as the demo), the
  class names in its metadata (``CLASS_NAMES``, a JSON list; band description ``class id``) and
  the no-data value 255 (65535) wherever the input holds no data;
* ``STEM_probabilities.tif`` (optional) — one band per class, described by its name, in the same
  layout: ``uint8`` (default) stores ``round(p · 254)`` with band scale 1/254 (GDAL's unscaled
  value is the probability; quantisation step 1/254) and no-data 255; ``float16`` (half floats,
  GDAL ``NBITS=16``) and ``float32`` store ``p`` with no-data NaN; averaged overviews;
* ``STEM_quicklook.png`` — the scene and its prediction side by side with the legend, at most
  ``quicklook`` pixels on the long side, read from the overviews (never the full scene).

While the scene runs, the rasters are plain tiled GeoTIFFs named ``*.partial`` that every chunk
is written into (opened, written, closed, so what the state file records is on disk); at the
end each is copied to a COG beside it and renamed over the final name in one step.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..data.raster import RasterInfo, open_rasterio
from ..data.vocabulary import display_name
from ..export import label_dtype

PROBABILITY_FORMATS = ("uint8", "float16", "float32")
QUANTISATION = 254  # uint8 probabilities: round(p * 254); 255 is no data
BLOCK = 256  # block side of the partial files
COG_BLOCK = 512  # block side of the final COGs


@dataclass(frozen=True)
class ScenePaths:
    """Output file names of one scene."""

    output: str
    stem: str

    def _path(self, suffix: str) -> str:
        return os.path.join(self.output, self.stem + suffix)

    @property
    def labels(self) -> str:
        return self._path("_labels.tif")

    @property
    def probabilities(self) -> str:
        return self._path("_probabilities.tif")

    @property
    def polygons(self) -> str:
        return self._path("_polygons.geojson")

    @property
    def quicklook(self) -> str:
        return self._path("_quicklook.png")

    @property
    def metrics(self) -> str:
        return self._path("_metrics.json")

    @property
    def record(self) -> str:
        """Written last: the scene is finished (its signature, size, time)."""
        return self._path(".scene.json")

    def state(self, part: str = "") -> str:
        """Resume state of the whole scene, or of one process's ``part`` of its panels."""
        return self._path(f".scene-state{part}.json")

    @staticmethod
    def partial(path: str, part: str = "") -> str:
        """The partial raster of ``path`` (of one process's ``part`` when several share the scene)."""
        return f"{path}{part}.partial"


def _profile(info: RasterInfo, count: int, dtype: str, nodata: float, compress: str, **extra) -> dict:
    profile = {"driver": "GTiff", "height": info.height, "width": info.width, "count": count, "dtype": dtype,
               "crs": info.crs, "transform": info.transform, "nodata": nodata, "compress": compress,
               "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "BIGTIFF": "IF_SAFER", **extra}
    return {k: v for k, v in profile.items() if v is not None or k == "nodata"}


def _open(path: str, mode: str = "r", **profile):
    return open_rasterio(path, "scene output", mode, **profile)


class SceneRasters:
    """The partial rasters of one scene: created once, written chunk by chunk, finalised to COGs.

    Args:
        paths: the scene's file names.
        info: the input's header (size, CRS, transform).
        class_names: the vocabulary (band descriptions, metadata).
        colors: (T, 3) uint8 colour table of the labels.
        probabilities: None, or one of :data:`PROBABILITY_FORMATS`.
        part: ``""``, or ``.rankRofW`` when process R of W writes its panels into its own files.
    """

    def __init__(self, paths: ScenePaths, info: RasterInfo, class_names: Sequence[str], colors: np.ndarray,
                 probabilities: Optional[str], compress: str = "deflate", part: str = "") -> None:
        if probabilities is not None and probabilities not in PROBABILITY_FORMATS:
            raise ValueError(f"probabilities must be one of {PROBABILITY_FORMATS}, got {probabilities!r}")
        self.paths, self.info, self.class_names = paths, info, list(class_names)
        self.colors, self.probabilities, self.compress, self.part = colors, probabilities, compress, part
        self.label_dtype = label_dtype(len(class_names))
        self.label_nodata = int(np.iinfo(self.label_dtype).max)

    def targets(self) -> list[str]:
        """Final raster paths this scene writes."""
        return [self.paths.labels] + ([self.paths.probabilities] if self.probabilities else [])

    def partials(self) -> list[str]:
        """This part's partial rasters (labels first)."""
        return [ScenePaths.partial(t, self.part) for t in self.targets()]

    def create(self) -> None:
        """Create the empty partial rasters (no-data everywhere until written)."""
        names = json.dumps(self.class_names)
        profile = _profile(self.info, 1, self.label_dtype.name, self.label_nodata, "zstd", zstd_level=1)
        with _open(self.partials()[0], "w", **profile) as dst:
            if self.label_dtype == np.uint8:
                dst.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(self.colors)})
            dst.update_tags(CLASS_NAMES=names)
            dst.set_band_description(1, "class id")
        if self.probabilities is None:
            return
        quantised = self.probabilities == "uint8"
        extra = {"nbits": 16} if self.probabilities == "float16" else {}
        profile = _profile(self.info, len(self.class_names), "uint8" if quantised else "float32",
                           255 if quantised else float("nan"), "zstd", zstd_level=1, **extra)
        with _open(self.partials()[1], "w", **profile) as dst:
            dst.update_tags(CLASS_NAMES=names, PROBABILITY_FORMAT=self.probabilities)
            for i, name in enumerate(self.class_names):
                dst.set_band_description(i + 1, display_name(name))
            if quantised:
                dst.scales = [1.0 / QUANTISATION] * len(self.class_names)

    def write(self, row: int, col: int, labels: np.ndarray, probabilities: Optional[np.ndarray]) -> None:
        """Write one chunk at ``(row, col)``: ``labels`` (h, w) in the label dtype (no-data already
        set) and, when probabilities are written, ``probabilities`` (T, h, w) float32 in 0..1 with NaN
        at no-data pixels."""
        from rasterio.windows import Window

        window = Window(col, row, labels.shape[1], labels.shape[0])
        with _open(self.partials()[0], "r+") as dst:
            dst.write(labels, 1, window=window)
        if self.probabilities is None:
            return
        if self.probabilities == "uint8":
            data = np.where(np.isnan(probabilities), 255, np.rint(np.nan_to_num(probabilities) * QUANTISATION))
            data = data.astype(np.uint8)
        else:
            data = probabilities.astype(np.float32, copy=False)
        with _open(self.partials()[1], "r+") as dst:
            dst.write(data, window=window)

    def merge(self, parts: Sequence["SceneRasters"], columns: Sequence[Sequence[tuple[int, int]]],
              rows: int = 1024) -> None:
        """Assemble this (whole-scene) raster set from processes' ``parts``: part ``i`` holds the
        output columns ``columns[i]`` (``(start, stop)`` per panel), copied ``rows`` rows at a time;
        the parts' files are removed."""
        from rasterio.windows import Window

        self.create()
        for part, spans in zip(parts, columns):
            for source, target in zip(part.partials(), self.partials()):
                with _open(source) as src, _open(target, "r+") as dst:
                    for start, stop in spans:
                        for row in range(0, src.height, rows):
                            window = Window(start, row, stop - start, min(rows, src.height - row))
                            dst.write(src.read(window=window), window=window)
                os.remove(source)

    def finalise(self) -> None:
        """Each partial raster → a COG beside it → renamed over the final name; partials removed."""
        from rasterio.shutil import copy

        for target, partial, resampling in zip(self.targets(), self.partials(), ("nearest", "average")):
            tmp = target + ".cog-tmp"
            extra = {"nbits": 16} if resampling == "average" and self.probabilities == "float16" else {}
            copy(partial, tmp, driver="COG", compress=self.compress, blocksize=COG_BLOCK,
                 overview_resampling=resampling, bigtiff="IF_SAFER", **extra)
            os.replace(tmp, target)
            os.remove(partial)

    def partials_exist(self) -> bool:
        return all(os.path.exists(p) for p in self.partials())


def write_quicklook(paths: ScenePaths, scene: str, reader_settings, class_names: Sequence[str], colors: np.ndarray,
                    cap: int) -> None:
    """``STEM_quicklook.png``: the scene (through the raster settings) and its labels side by side,
    with the legend, the long side at most ``cap`` pixels; both read decimated (overviews when the
    files have them, the labels COG always does)."""
    from ..data.raster import convert
    from ..visualization import colorize, figure_with_legend, save_figure
    from .source import SceneReader, scene_info

    with _open(paths.labels) as src:
        scale = max(1.0, max(src.height, src.width) / cap)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        labels = src.read(1, out_shape=shape)
        nodata = int(src.nodata)
    reader = SceneReader(scene, scene_info(scene), reader_settings)
    image = convert(*reader.stored(0, 0, reader.info.height, reader.info.width, shape), reader_settings).rgb
    reader.close()
    fig = figure_with_legend([image, colorize(labels, colors, ignore=nodata)], ["scene", "prediction"],
                             list(class_names), colors, tile_inches=max(max(shape) / 100, 1.5))  # ≥ 1.5 in: room for titles
    save_figure(fig, paths.quicklook)
