"""A scene read window by window: any GDAL raster (GeoTIFF, COG, JPEG 2000, VRT mosaics, ...)
through rasterio, its values turned into model input by the one raster path
(:func:`ovrsis.data.raster.convert`: ``INPUT.RASTER`` bands, scaling and no-data).

Percentile stretches need statistics of the whole scene, never a full read:
:func:`scene_percentiles` takes them from the file's smallest overview of at least
``OVERVIEW_SIDE`` pixels when it has overviews, else from a grid of ``SAMPLE_WINDOWS`` windows
spread evenly over the scene, with at most 65,536 valid pixels per scene (fixed seed), as
:func:`~ovrsis.data.raster.dataset_percentiles` does for datasets. ``percentile`` (per image)
uses the scene's own sample, ``percentile_dataset`` one sample over all scenes of the run.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from ..data.raster import (RasterError, RasterImage, RasterInfo, RasterSettings, band_percentiles, convert,
                           open_rasterio, raster_info, select_bands, valid_pixels)

OVERVIEW_SIDE = 1024  # long side of the overview read for statistics
SAMPLE_WINDOWS = 4  # windows per axis sampled for statistics when there are no overviews
SAMPLE_SIDE = 256  # side of each sampled window
SAMPLE_PIXELS = 65536  # valid pixels kept per scene


def open_scene(path: str):
    """The rasterio dataset of ``path`` (georeferencing warnings silenced).

    Raises:
        RasterError: an unreadable file, naming it.
    """
    return open_rasterio(path, what="scene")


def scene_info(path: str) -> RasterInfo:
    """The header of a scene (:func:`~ovrsis.data.raster.raster_info`).

    Raises:
        RasterError: an unreadable file, or a multi-page TIFF band stack (pages cannot be read
        window by window here: merge them into one file first, e.g. ``gdal_translate``).
    """
    info = raster_info(path)
    if getattr(info, "pages", 1) > 1:
        raise RasterError(f"scene {path} stores its bands in {info.pages} TIFF pages; a scene is read window by "
                          "window from one multi-band image: merge the pages first (e.g. gdal_merge.py -separate)")
    return info


class SceneReader:
    """Reads windows of one scene as :class:`~ovrsis.data.raster.RasterImage` (uint8 RGB and the
    valid-pixel mask). Holds its own rasterio dataset: use one reader per thread."""

    def __init__(self, path: str, info: RasterInfo, settings: RasterSettings) -> None:
        from rasterio.enums import ColorInterp, MaskFlags

        self.path, self.info, self.settings = path, info, settings
        self._src = open_scene(path)
        flags = self._src.mask_flag_enums[0] if self._src.count else ()
        # the file's own mask band (internal or .msk), as read_raster reads it for whole images
        self._mask_band = MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags \
            and MaskFlags.nodata not in flags
        self._palette = _palette(self._src) if self._src.colorinterp[:1] == (ColorInterp.palette,) else None
        if self._palette is not None:  # a palette image reads as its colours, as read_raster gives them
            self.info = dataclasses.replace(info, count=3, dtype="uint8", alpha_band=None)

    def stored(self, row: int, col: int, height: int, width: int, out_shape: Optional[tuple] = None
               ) -> tuple[np.ndarray, RasterInfo]:
        """The stored values (h, w, C) of the window of ``height`` x ``width`` pixels at
        ``(row, col)`` (a palette image: its colours) and the info describing them (with the
        window's mask band); ``out_shape`` (h, w) reads it decimated (GDAL uses overviews).

        Raises:
            RasterError: a decode error.
        """
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        shape = None if out_shape is None else (self._src.count, *out_shape)
        try:
            array = self._src.read(window=window, out_shape=shape)
            mask = None
            if self._mask_band:
                mask = self._src.dataset_mask(window=window, out_shape=out_shape) > 0
        except Exception as err:  # GDAL decode errors surface as several rasterio types
            raise RasterError(f"cannot read scene {self.path} at rows {row}..{row + height}, columns "
                              f"{col}..{col + width}: {err}") from err
        if self._palette is not None:
            array = self._palette[array[0]].transpose(2, 0, 1)
        info = dataclasses.replace(self.info, height=array.shape[1], width=array.shape[2], mask=mask)
        return np.ascontiguousarray(array.transpose(1, 2, 0)), info

    def read(self, row: int, col: int, height: int, width: int) -> RasterImage:
        """The window of ``height`` x ``width`` pixels at ``(row, col)``, converted for the model.

        Raises:
            RasterError: a decode error, or values needing a band/scaling choice.
        """
        return convert(*self.stored(row, col, height, width), self.settings)

    def close(self) -> None:
        self._src.close()


def _palette(src) -> np.ndarray:
    """(entries, 3) uint8 RGB lookup table of band 1's colour table."""
    table = src.colormap(1)
    lut = np.zeros((max(256, max(table) + 1), 3), np.uint8)
    for index, colour in table.items():
        lut[index] = colour[:3]
    return lut


def _sample(path: str, settings: RasterSettings, rng: np.random.Generator) -> np.ndarray:
    """Up to ``SAMPLE_PIXELS`` valid (N, 3) float64 band values of the scene (module docstring)."""
    reader = SceneReader(path, scene_info(path), settings)
    src = reader._src
    usable = [f for f in (src.overviews(1) if src.count else []) if max(src.height, src.width) // f >= OVERVIEW_SIDE]
    if usable:
        factor = max(usable)
        reads = [reader.stored(0, 0, src.height, src.width,
                               (max(1, src.height // factor), max(1, src.width // factor)))]
    else:
        side_y, side_x = min(SAMPLE_SIDE, src.height), min(SAMPLE_SIDE, src.width)
        ys = sorted({int(y) for y in np.linspace(0, src.height - side_y, SAMPLE_WINDOWS)})
        xs = sorted({int(x) for x in np.linspace(0, src.width - side_x, SAMPLE_WINDOWS)})
        reads = [reader.stored(y, x, side_y, side_x) for y in ys for x in xs]
    reader.close()
    chunks = []
    for array, info in reads:
        rgb = select_bands(array, info, settings)
        valid = valid_pixels(array, info, settings)
        chunks.append((rgb.reshape(-1, 3) if valid is None else rgb[valid]).astype(np.float64))
    values = np.concatenate(chunks)
    if len(values) > SAMPLE_PIXELS:
        values = values[rng.choice(len(values), SAMPLE_PIXELS, replace=False)]
    return values


def scene_percentiles(paths: Sequence[str], settings: RasterSettings) -> tuple:
    """Per-band ``(low, high)`` percentiles (``settings.percentiles``) over a sample of each
    scene (module docstring); the ``dataset_stats`` of :class:`~ovrsis.data.raster.RasterSettings`."""
    rng = np.random.default_rng(0)
    values = np.concatenate([_sample(p, settings, rng) for p in paths])
    lo, hi = band_percentiles(values[:, None, :], None, settings.percentiles)
    return tuple(lo.tolist()), tuple(hi.tolist())


def scene_settings(path: str, settings: RasterSettings, shared: Optional[tuple] = None) -> RasterSettings:
    """``settings`` ready for window-by-window conversion of ``path``: percentile stretches get
    fixed statistics (``shared`` for ``percentile_dataset``, else computed from the scene) so every
    window of the scene is mapped alike; other scalings are returned unchanged."""
    if settings.scaling == "percentile":
        return dataclasses.replace(settings, scaling="percentile_dataset",
                                   dataset_stats=scene_percentiles([path], settings))
    if settings.scaling == "percentile_dataset" and settings.dataset_stats is None:
        return dataclasses.replace(settings, dataset_stats=shared or scene_percentiles([path], settings))
    return settings
