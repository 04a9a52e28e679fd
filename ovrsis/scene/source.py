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
import warnings
from typing import Optional, Sequence

import numpy as np

from ..data.raster import RasterError, RasterImage, RasterInfo, RasterSettings, band_percentiles, convert, \
    raster_info, select_bands, valid_pixels

OVERVIEW_SIDE = 1024  # long side of the overview read for statistics
SAMPLE_WINDOWS = 4  # windows per axis sampled for statistics when there are no overviews
SAMPLE_SIDE = 256  # side of each sampled window
SAMPLE_PIXELS = 65536  # valid pixels kept per scene


def open_scene(path: str):
    """The rasterio dataset of ``path`` (georeferencing warnings silenced).

    Raises:
        RasterError: an unreadable file, naming it.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        raise RasterError(f"cannot read scene {path}: {err}") from err


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
        from rasterio.enums import MaskFlags

        self.path, self.info, self.settings = path, info, settings
        self._src = open_scene(path)
        flags = self._src.mask_flag_enums[0] if self._src.count else ()
        # the file's own mask band (internal or .msk), as read_raster reads it for whole images
        self._mask_band = MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags \
            and MaskFlags.nodata not in flags

    def read(self, row: int, col: int, height: int, width: int) -> RasterImage:
        """The window of ``height`` x ``width`` pixels at ``(row, col)``.

        Raises:
            RasterError: a decode error, or values needing a band/scaling choice.
        """
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        try:
            array = self._src.read(window=window)
            mask = self._src.dataset_mask(window=window) > 0 if self._mask_band else None
        except Exception as err:  # GDAL decode errors surface as several rasterio types
            raise RasterError(f"cannot read scene {self.path} at rows {row}..{row + height}, columns "
                              f"{col}..{col + width}: {err}") from err
        info = dataclasses.replace(self.info, height=height, width=width, mask=mask)
        return convert(np.ascontiguousarray(array.transpose(1, 2, 0)), info, self.settings)

    def close(self) -> None:
        self._src.close()


def _sample(path: str, settings: RasterSettings, rng: np.random.Generator) -> np.ndarray:
    """Up to ``SAMPLE_PIXELS`` valid (N, 3) float64 band values of the scene (module docstring)."""
    info = scene_info(path)
    with open_scene(path) as src:
        arrays = []
        overviews = src.overviews(1) if src.count else []
        usable = [f for f in overviews if max(src.height, src.width) // f >= OVERVIEW_SIDE]
        if usable:
            factor = max(usable)
            shape = (src.count, max(1, src.height // factor), max(1, src.width // factor))
            arrays.append(src.read(out_shape=shape))
        else:
            side_y, side_x = min(SAMPLE_SIDE, src.height), min(SAMPLE_SIDE, src.width)
            for y in np.linspace(0, src.height - side_y, SAMPLE_WINDOWS).astype(int):
                for x in np.linspace(0, src.width - side_x, SAMPLE_WINDOWS).astype(int):
                    from rasterio.windows import Window

                    arrays.append(src.read(window=Window(int(x), int(y), side_x, side_y)))
    chunks = []
    for array in arrays:
        hwc = np.ascontiguousarray(array.transpose(1, 2, 0))
        part = dataclasses.replace(info, height=hwc.shape[0], width=hwc.shape[1], mask=None)
        rgb = select_bands(hwc, part, settings)
        valid = valid_pixels(hwc, part, settings)
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
