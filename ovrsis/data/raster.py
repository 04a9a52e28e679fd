"""One image-reading path for datasets, evaluation and the predictor: rasters read faithfully.

Remote-sensing imagery is 16-bit or float and multi-band more often than not. Reading it
through Pillow/detectron2 silently turns a 3-band uint16 GeoTIFF into near-black uint8 and
refuses 4-band files. Here:

* :func:`read_raster` returns the stored values unchanged, (H, W, C) in the file's dtype.
  TIFF/GeoTIFF, JPEG 2000 and every other GDAL format go through **rasterio** (GDAL reads
  any band count, bit depth and compression, JP2 included, and keeps the georeferencing the
  demo writes back); PNG/JPEG/BMP go through OpenCV's ``IMREAD_UNCHANGED`` (fast, and unlike
  Pillow it keeps 16-bit RGB PNGs). Pillow cannot do either faithfully.
* :func:`to_rgb8` turns those values into the 8-bit RGB the CLIP-family encoders expect,
  as the :class:`RasterSettings` say: which bands (1-based, e.g. Landsat-8 ``[4, 3, 2]``) and
  how values map to 0..255:

  - ``auto``: 8-bit data passes unchanged; anything else is an error asking for a choice;
  - ``fixed``: ``RANGE = [lo, hi]`` maps linearly to 0..255 (e.g. Sentinel-2 L2A reflectance
    ``[0, 10000]`` or ``[0, 3000]``); values outside are clipped and the clipped share is
    logged once per dataset;
  - ``percentile``: per image and band, ``PERCENTILES = [p_lo, p_hi]`` of the valid pixels
    map to 0 and 255 (the GIS "cumulative count cut" display stretch);
  - ``percentile_dataset``: the same, with the percentiles of a fixed sample of the dataset's
    images (:func:`dataset_percentiles`), so every image shares one mapping.

  No-data pixels (the file's declared no-data value) become 0 and are excluded from
  percentiles. Anything the pipeline would have to guess — more than 3 bands without
  ``BANDS``, 2 bands, a band index out of range, non-8-bit data under ``auto`` — raises
  :class:`~ovrsis.errors.DatasetError`-style errors naming the file, its dtype and band count
  and the config key to set.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import DatasetError

logger = logging.getLogger(__name__)
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # decode failures are raised, not printed

OPENCV_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".jp2", ".j2k", ".img", ".vrt")
SCALINGS = ("auto", "fixed", "percentile", "percentile_dataset")
_logged: set = set()


class RasterError(DatasetError):
    """An image cannot be read, or cannot be turned into RGB without a choice only the user can make."""


@dataclass(frozen=True)
class RasterSettings:
    """How stored raster values become the 8-bit RGB the encoders were trained on.

    Attributes:
        bands: 1-based band indices feeding R, G, B (``()`` = the file's bands: 1 band is
            replicated to grey RGB, 3 bands are RGB, an RGB+alpha file drops its alpha).
        scaling: ``auto`` | ``fixed`` | ``percentile`` | ``percentile_dataset`` (module docstring).
        value_range: ``(lo, hi)`` of ``fixed`` scaling, in stored units.
        percentiles: ``(p_lo, p_hi)`` in percent for the percentile stretches.
        key: the config key prefix named in errors (``INPUT.RASTER`` or ``DATASETS.REGISTER.<name>``).
    """

    bands: Tuple[int, ...] = ()
    scaling: str = "auto"
    value_range: Tuple[float, float] = (0.0, 255.0)
    percentiles: Tuple[float, float] = (2.0, 98.0)
    key: str = "INPUT.RASTER"
    dataset_stats: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise RasterError(f"{self.key}.SCALING must be one of {SCALINGS}, got {self.scaling!r}")
        if any(int(b) < 1 for b in self.bands):
            raise RasterError(f"{self.key}.BANDS are 1-based band numbers, got {list(self.bands)}")
        if len(self.bands) not in (0, 1, 3):
            raise RasterError(f"{self.key}.BANDS must name 1 band (grey) or 3 bands (R, G, B), got {list(self.bands)}")
        lo, hi = self.value_range
        if not hi > lo:
            raise RasterError(f"{self.key}.RANGE must be [low, high] with high > low, got {list(self.value_range)}")
        p_lo, p_hi = self.percentiles
        if not 0.0 <= p_lo < p_hi <= 100.0:
            raise RasterError(f"{self.key}.PERCENTILES must be [low, high] within 0..100, got {list(self.percentiles)}")

    @classmethod
    def from_config(cls, node: Any, key: str = "INPUT.RASTER", base: Optional["RasterSettings"] = None
                    ) -> "RasterSettings":
        """From a config node with ``BANDS``, ``SCALING``, ``RANGE``, ``PERCENTILES``; keys it
        lacks come from ``base`` (e.g. a dataset entry over ``INPUT.RASTER``), else the defaults."""
        default = base or cls()
        get = node.get if hasattr(node, "get") else (lambda k, d=None: getattr(node, k, d))
        return cls(
            bands=tuple(int(b) for b in get("BANDS", default.bands) or ()),
            scaling=str(get("SCALING", default.scaling)),
            value_range=tuple(float(v) for v in get("RANGE", default.value_range)),
            percentiles=tuple(float(v) for v in get("PERCENTILES", default.percentiles)),
            key=key,
        )

    def as_dict(self) -> Dict[str, Any]:
        """Plain values (records and the pre-flight cache store them)."""
        return {"bands": list(self.bands), "scaling": self.scaling, "value_range": list(self.value_range),
                "percentiles": list(self.percentiles), "key": self.key,
                "dataset_stats": [list(s) for s in self.dataset_stats] if self.dataset_stats else None}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RasterSettings":
        stats = d.get("dataset_stats")
        return cls(bands=tuple(d["bands"]), scaling=d["scaling"], value_range=tuple(d["value_range"]),
                   percentiles=tuple(d["percentiles"]), key=d.get("key", "INPUT.RASTER"),
                   dataset_stats=tuple(tuple(s) for s in stats) if stats else None)


@dataclass
class RasterInfo:
    """What a file holds: shape, dtype, band count, no-data value and (for GDAL files)
    ``crs``/``transform``/``colorinterp`` as rasterio reports them."""

    path: str
    height: int
    width: int
    count: int
    dtype: str
    nodata: Optional[float] = None
    alpha_band: Optional[int] = None  # 1-based index of a declared alpha band
    crs: Any = None
    transform: Any = None
    profile: Dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.path} ({self.width}x{self.height}, {self.count} band(s), {self.dtype})"


def _uses_opencv(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in OPENCV_EXTENSIONS


def _open_rasterio(path: str):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        raise RasterError(f"cannot read image {path}: {_reason(path, err)}") from err


def _reason(path: str, err: Exception) -> str:
    if not os.path.exists(path):
        return "no such file"
    size = os.path.getsize(path)
    if size == 0:
        return "the file is empty (0 bytes)"
    return f"not a readable raster ({size} bytes; the file may be truncated or of an unsupported format): {err}"


def raster_info(path: str) -> RasterInfo:
    """Header of an image file (no pixel decoding for GDAL formats).

    Raises:
        RasterError: missing, empty, truncated or unsupported file.
    """
    if _uses_opencv(path):
        array = read_raster(path)[0]  # OpenCV has no header-only read; small 8-bit files
        return RasterInfo(path, array.shape[0], array.shape[1], array.shape[2], str(array.dtype),
                          alpha_band=4 if array.shape[2] == 4 else None)
    with _open_rasterio(path) as src:
        return _info_from_dataset(path, src)


def _info_from_dataset(path: str, src) -> RasterInfo:
    from rasterio.enums import ColorInterp

    interp = list(src.colorinterp)
    alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
    photometric = str(getattr(src.photometric, "name", src.photometric) or "").upper()
    jpeg = "JPEG" in str(getattr(src.compression, "name", src.compression) or "").upper()
    if photometric in ("CMYK", "CIELAB", "ICCLAB", "ITULAB") or (photometric == "YCBCR" and not jpeg):
        # GDAL turns JPEG-compressed YCbCr (common for orthophotos) into RGB itself; the rest it cannot
        raise RasterError(
            f"cannot read image {path}: photometric interpretation {photometric} is not supported; "
            "convert it to RGB or a band stack first (e.g. gdal_translate)")
    dtypes = set(src.dtypes)
    if len(dtypes) != 1:
        raise RasterError(f"cannot read image {path}: bands of different types {sorted(dtypes)}")
    return RasterInfo(path, src.height, src.width, src.count, src.dtypes[0], src.nodata, alpha, src.crs,
                      src.transform, dict(src.profile))


def read_raster(path: str) -> Tuple[np.ndarray, RasterInfo]:
    """All bands of ``path`` as stored: an (H, W, C) array in the file's dtype, and its info.

    Palette PNGs give their colours (use :func:`~ovrsis.data.folder_dataset.read_mask` for
    index masks). OpenCV's BGR order is turned into the file's band order (R, G, B[, A]).

    Raises:
        RasterError: missing, empty, truncated, corrupt or unsupported file, naming it.
    """
    if _uses_opencv(path):
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise RasterError(f"cannot read image {path}: {_reason(path, OSError())}")
        array = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if array is None:
            raise RasterError(f"cannot read image {path}: {_reason(path, OSError('OpenCV could not decode it'))}")
        if array.ndim == 2:
            array = array[:, :, None]
        elif array.shape[2] == 3:
            array = array[:, :, ::-1]
        elif array.shape[2] == 4:
            array = array[:, :, [2, 1, 0, 3]]
        array = np.ascontiguousarray(array)
        info = RasterInfo(path, array.shape[0], array.shape[1], array.shape[2], str(array.dtype),
                          alpha_band=4 if array.shape[2] == 4 else None)
        return array, info
    with _open_rasterio(path) as src:
        info = _info_from_dataset(path, src)
        try:
            array = src.read()  # (C, H, W)
        except Exception as err:  # GDAL decode errors surface as several rasterio types
            raise RasterError(f"cannot read image {path}: {_reason(path, err)}") from err
    return np.ascontiguousarray(array.transpose(1, 2, 0)), info


def select_bands(array: np.ndarray, info: RasterInfo, settings: RasterSettings) -> np.ndarray:
    """(H, W, 3) view of the bands feeding R, G, B (module docstring for the rules)."""
    count = array.shape[2]
    if settings.bands:
        bad = [b for b in settings.bands if b > count]
        if bad:
            raise RasterError(f"image {info.describe()}: {settings.key}.BANDS {list(settings.bands)} names band(s) "
                              f"{bad} but the file has {count}")
        picked = array[:, :, [b - 1 for b in settings.bands]]
        return np.repeat(picked, 3, axis=2) if picked.shape[2] == 1 else picked
    if count == 1:
        return np.repeat(array, 3, axis=2)
    if count == 3:
        return array
    if count == 4 and info.alpha_band == 4:
        _log_once(("alpha", settings.key), "%s: 4-band images with an alpha band (e.g. %s): the alpha band is "
                  "not fed to the model (set %s.BANDS to choose bands)", settings.key, info.path, settings.key)
        return array[:, :, :3]
    raise RasterError(
        f"image {info.describe()}: cannot tell which bands are red, green and blue; set {settings.key}.BANDS "
        "to three 1-based band numbers (e.g. [4, 3, 2] for a Landsat-8 band stack)")


def to_rgb8(array: np.ndarray, info: RasterInfo, settings: RasterSettings) -> np.ndarray:
    """Stored values (H, W, C) → uint8 RGB (H, W, 3) as ``settings`` say (module docstring).

    Raises:
        RasterError: a choice the user must make (bands, non-8-bit data under ``auto``).
    """
    rgb = select_bands(array, info, settings)
    valid = _valid_mask(rgb, info)
    if settings.scaling == "auto":
        if rgb.dtype == np.uint8:
            return np.ascontiguousarray(rgb)
        finite = rgb[valid] if valid is not None else rgb
        lo, hi = (float(np.nanmin(finite)), float(np.nanmax(finite))) if finite.size else (0.0, 0.0)
        raise RasterError(
            f"image {info.describe()} holds {rgb.dtype} values {lo:g}..{hi:g}; the encoders expect 8-bit RGB. "
            f"Choose how values map to 0..255: set {settings.key}.SCALING to 'fixed' (with {settings.key}.RANGE, "
            f"e.g. [0, 10000] for reflectance x 10^4), 'percentile' (per image) or 'percentile_dataset'")
    data = rgb.astype(np.float32)
    if settings.scaling == "fixed":
        lo = np.full(3, settings.value_range[0], np.float32)
        hi = np.full(3, settings.value_range[1], np.float32)
        outside = (data < lo) | (data > hi)
        if valid is not None:
            outside &= valid[..., None]
        share = float(outside.mean()) if outside.size else 0.0
        if share > 0.01:
            _log_once(("clip", settings.key), "%s: %.1f%% of the band values of %s lie outside RANGE %s and are "
                      "clipped (first such image; widen %s.RANGE if that is not intended)", settings.key,
                      100 * share, info.path, list(settings.value_range), settings.key)
    elif settings.scaling == "percentile":
        lo, hi = band_percentiles(rgb, valid, settings.percentiles)
    else:
        if settings.dataset_stats is None:
            raise RasterError(f"{settings.key}.SCALING 'percentile_dataset' needs dataset statistics; "
                              "they are computed when the dataset's mapper is built (dataset_percentiles)")
        lo, hi = (np.asarray(s, np.float32) for s in settings.dataset_stats)
        if len(lo) != 3:
            raise RasterError(f"{settings.key}: dataset statistics hold {len(lo)} bands, expected 3")
    scaled = (data - lo) / np.maximum(hi - lo, 1e-12) * 255.0
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if valid is not None:
        out[~valid] = 0
    return out


def band_percentiles(rgb: np.ndarray, valid: Optional[np.ndarray], percentiles: Sequence[float]
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-band ``(low, high)`` percentiles (each shape (3,)) over the valid pixels."""
    lows, highs = [], []
    for c in range(rgb.shape[2]):
        values = rgb[..., c][valid] if valid is not None else rgb[..., c].ravel()
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if values.size == 0:
            lows.append(0.0), highs.append(1.0)
            continue
        lo, hi = np.percentile(values, percentiles)
        lows.append(float(lo)), highs.append(float(hi) if hi > lo else float(lo) + 1.0)
    return np.asarray(lows, np.float32), np.asarray(highs, np.float32)


def dataset_percentiles(paths: Sequence[str], settings: RasterSettings, sample: int = 32,
                        cache_dir: Optional[str] = None) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-band percentiles over an evenly spaced sample of ``paths`` (the ``percentile_dataset`` stretch).

    Each sampled image contributes up to 65,536 random valid pixels (fixed seed), so the
    result is deterministic. Cached as JSON under ``cache_dir`` (default
    ``$OVRSIS_CACHE/raster_stats`` or ``~/.cache/ovrsis/raster_stats``) keyed by the sampled
    files (path, size, mtime) and the band/percentile settings.
    """
    if not paths:
        raise RasterError(f"{settings.key}: no images to compute dataset percentiles from")
    picked = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(sample, len(paths)))]
    ident = [settings.bands, settings.percentiles] + [(p, os.path.getsize(p), os.path.getmtime(p)) for p in picked]
    digest = hashlib.sha1(json.dumps(ident, default=str).encode()).hexdigest()[:16]
    cache_dir = cache_dir or os.path.join(os.environ.get("OVRSIS_CACHE", os.path.expanduser("~/.cache/ovrsis")),
                                          "raster_stats")
    cache_file = os.path.join(cache_dir, digest + ".json")
    if os.path.isfile(cache_file):
        with open(cache_file) as f:
            stored = json.load(f)
        return tuple(stored["low"]), tuple(stored["high"])
    rng = np.random.default_rng(0)
    chunks = []
    for path in picked:
        array, info = read_raster(path)
        rgb = select_bands(array, info, settings)
        valid = _valid_mask(rgb, info)
        flat = rgb.reshape(-1, 3)[valid.ravel()] if valid is not None else rgb.reshape(-1, 3)
        if len(flat) > 65536:
            flat = flat[rng.choice(len(flat), 65536, replace=False)]
        chunks.append(flat.astype(np.float64))
    values = np.concatenate(chunks)
    lo, hi = band_percentiles(values[:, None, :], None, settings.percentiles)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{cache_file}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"low": lo.tolist(), "high": hi.tolist(), "files": len(picked)}, f)
    os.replace(tmp, cache_file)
    return tuple(lo.tolist()), tuple(hi.tolist())


def read_rgb8(path: str, settings: RasterSettings = RasterSettings()) -> np.ndarray:
    """Read ``path`` and return uint8 RGB (H, W, 3) per ``settings``: the one entry point
    the mappers, the evaluator's visualisations and the predictor use."""
    array, info = read_raster(path)
    return to_rgb8(array, info, settings)


def _valid_mask(rgb: np.ndarray, info: RasterInfo) -> Optional[np.ndarray]:
    """(H, W) True where every band holds data (not the declared no-data value, finite)."""
    valid = None
    if info.nodata is not None:
        nodata = info.nodata
        invalid = np.isnan(rgb).all(axis=2) if np.isnan(nodata) else (rgb == nodata).all(axis=2)
        valid = ~invalid
    if rgb.dtype.kind == "f":
        finite = np.isfinite(rgb).all(axis=2)
        valid = finite if valid is None else valid & finite
    return valid


def _log_once(key: tuple, message: str, *args: Any) -> None:
    if key not in _logged:
        _logged.add(key)
        logger.warning(message, *args)
