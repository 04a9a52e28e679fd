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

Band stacks — one rule for every layout GDAL and tifffile write (pixel- or band-interleaved,
one band per TIFF page, extra samples tagged alpha or unspecified): the file's bands are read
in order (a multi-page TIFF whose pages share size and type is one band per page; pages of another
size — previews, thumbnails — are not bands, and such a file is read as its first page). A band is
left out of the RGB only when (a) it is tagged alpha *and* is a genuine mask — it holds only 0
and the type's full value (255, 65535; 1.0 for floats) — and then it becomes the no-data mask,
or (b) ``BANDS`` leaves it out. A band tagged alpha that holds other values (an RGB+NIR stack
written with an RGBA default) is data: without ``BANDS`` that is an error asking for it, as is
any count other than 1 or 3 data bands.

No-data — the valid-pixel mask (:func:`valid_pixels`) that travels with the image
(:class:`RasterImage`): a pixel is no-data when every selected band equals the no-data value
(``NODATA`` if set, else the file's declared value), when a float band is not finite, when
the file's GDAL mask band (internal/external ``.msk``) says so, or when a genuine alpha mask is
0. No-data pixels become 0 in the RGB, are excluded from percentiles, are left out of the training
loss (``NO_DATA_LABEL`` in training masks) and of evaluation, and are written as no-data by the demo.

Anything the pipeline would have to guess raises :class:`RasterError` naming the file, its
dtype and band count and the config key to set.
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
from ..once import log_once

logger = logging.getLogger(__name__)
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # decode failures are raised, not printed

OPENCV_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".jp2", ".j2k", ".img", ".vrt")
SCALINGS = ("auto", "fixed", "percentile", "percentile_dataset")


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
        nodata: declared no-data value (``NODATA: [v]``) overriding the file's; None = the file's.
    """

    bands: Tuple[int, ...] = ()
    scaling: str = "auto"
    value_range: Tuple[float, float] = (0.0, 255.0)
    percentiles: Tuple[float, float] = (2.0, 98.0)
    key: str = "INPUT.RASTER"
    nodata: Optional[float] = None
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
        nodata = get("NODATA", None)
        if nodata is None:
            nodata = default.nodata
        elif isinstance(nodata, (list, tuple)):
            if len(nodata) > 1:
                raise RasterError(f"{key}.NODATA is [] (the file's declared value) or [value], got {list(nodata)}")
            nodata = float(nodata[0]) if nodata else None
        else:
            nodata = float(nodata)
        return cls(
            bands=tuple(int(b) for b in get("BANDS", default.bands) or ()),
            scaling=str(get("SCALING", default.scaling)),
            value_range=tuple(float(v) for v in get("RANGE", default.value_range)),
            percentiles=tuple(float(v) for v in get("PERCENTILES", default.percentiles)),
            key=key,
            nodata=nodata,
        )

    def as_dict(self) -> Dict[str, Any]:
        """Plain values (records and the pre-flight cache store them)."""
        return {"bands": list(self.bands), "scaling": self.scaling, "value_range": list(self.value_range),
                "percentiles": list(self.percentiles), "key": self.key, "nodata": self.nodata,
                "dataset_stats": [list(s) for s in self.dataset_stats] if self.dataset_stats else None}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RasterSettings":
        stats = d.get("dataset_stats")
        return cls(bands=tuple(d["bands"]), scaling=d["scaling"], value_range=tuple(d["value_range"]),
                   percentiles=tuple(d["percentiles"]), key=d.get("key", "INPUT.RASTER"),
                   nodata=d.get("nodata"), dataset_stats=tuple(tuple(s) for s in stats) if stats else None)


@dataclass
class RasterInfo:
    """What a file holds: shape, dtype, band count, no-data value and (for GDAL files)
    ``crs``/``transform``/``colorinterp`` as rasterio reports them.

    ``alpha_band`` is the 1-based band tagged alpha (whether it is a mask is decided from its
    values, :func:`select_bands`); ``mask`` the file's GDAL mask band ((H, W) bool, True =
    valid; set by :func:`read_raster` only); ``pages`` how many TIFF pages were stacked as bands."""

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
    mask: Optional[np.ndarray] = field(default=None, repr=False)
    pages: int = 1

    def describe(self) -> str:
        return f"{self.path} ({self.width}x{self.height}, {self.count} band(s), {self.dtype})"


@dataclass
class RasterImage:
    """An image ready for the model: ``rgb`` (H, W, 3) uint8 (0 at no-data pixels), ``valid``
    (H, W) bool (True = data) or None when every pixel holds data, and the file's ``info``."""

    rgb: np.ndarray
    valid: Optional[np.ndarray]
    info: RasterInfo


def _uses_opencv(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in OPENCV_EXTENSIONS


def open_rasterio(path: str, what: str = "image", mode: str = "r", **profile):
    """The rasterio dataset of ``path`` opened in ``mode`` (``"w"`` with a rasterio ``profile``),
    georeferencing warnings silenced (a context manager).

    Raises:
        RasterError: missing, empty, truncated or unsupported file, naming it as ``what``.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path, mode, **profile)
    except RasterioIOError as err:
        if mode == "w":
            raise RasterError(f"cannot write {what} {path}: {err}") from err
        raise RasterError(f"cannot read {what} {path}: {_reason(path, err)}") from err


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
    with open_rasterio(path) as src:
        info = _info_from_dataset(path, src)
        pages = _band_pages(path, src, info)
    if pages:
        info.count, info.pages, info.alpha_band = info.count + len(pages), len(pages) + 1, None
    return info


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


def _band_pages(path: str, src, info: RasterInfo) -> list:
    """The further pages of a multi-page TIFF that stores one band per page (tifffile's default
    for a (bands, H, W) stack), as GDAL subdataset names; [] for a one-page file, and for a file
    whose pages differ from the first in size, type or band count (previews, thumbnails: not
    bands; the file is then its first page, noted once)."""
    pages = [name for name in (src.subdatasets or []) if name.startswith("GTIFF_DIR:")]
    if not pages or src.driver != "GTiff":
        return []
    pages = [p for p in pages if not p.startswith("GTIFF_DIR:1:")]  # page 1 is ``src`` itself
    for page in pages:
        with open_rasterio(page) as other:
            if (other.height, other.width, other.count, other.dtypes[0]) != (info.height, info.width, info.count,
                                                                               info.dtype):
                _log_once(("pages", path), "%s: %d TIFF pages that differ (%dx%dx%d %s vs %dx%dx%d %s) are not a "
                          "band stack: the first page is read", path, len(pages) + 1, info.width, info.height,
                          info.count, info.dtype, other.width, other.height, other.count, other.dtypes[0])
                return []
    return pages


def read_raster(path: str) -> Tuple[np.ndarray, RasterInfo]:
    """All bands of ``path`` as stored: an (H, W, C) array in the file's dtype, and its info.

    Every layout gives the same array: pixel- or band-interleaved files, and multi-page TIFFs
    of equal pages (one band per page, in page order). The file's GDAL mask band, if any, is
    ``info.mask``. Palette PNGs give their colours (use
    :func:`~ovrsis.data.folder_dataset.read_mask` for index masks). OpenCV's BGR order is turned
    into the file's band order (R, G, B[, A]).

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
    from rasterio.enums import MaskFlags

    with open_rasterio(path) as src:
        info = _info_from_dataset(path, src)
        try:
            bands = [src.read()]  # (C, H, W)
            for page in _band_pages(path, src, info):
                with open_rasterio(page) as other:
                    bands.append(other.read())
            flags = src.mask_flag_enums[0] if src.count else ()
            if MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags and MaskFlags.nodata not in flags:
                info.mask = src.dataset_mask() > 0  # an internal or external (.msk) mask band
        except RasterError:
            raise
        except Exception as err:  # GDAL decode errors surface as several rasterio types
            raise RasterError(f"cannot read image {path}: {_reason(path, err)}") from err
    if len(bands) > 1:
        info.count, info.pages, info.alpha_band = sum(len(b) for b in bands), len(bands), None
    array = np.concatenate(bands) if len(bands) > 1 else bands[0]
    return np.ascontiguousarray(array.transpose(1, 2, 0)), info


def is_mask_band(band: np.ndarray) -> bool:
    """True when ``band`` (H, W) holds only 0 and its type's full value (255, 65535, ...; 1.0 for
    floats): a genuine alpha/validity mask rather than a data band tagged alpha."""
    full = np.iinfo(band.dtype).max if band.dtype.kind in "ui" else 1.0
    return bool(((band == 0) | (band == full)).all())


def _data_bands(array: np.ndarray, info: RasterInfo, settings: RasterSettings) -> Tuple[list, Optional[int]]:
    """(0-based bands feeding R, G, B, 0-based alpha band used as a mask or None) per the rule
    of the module docstring."""
    count = array.shape[2]
    alpha = info.alpha_band - 1 if info.alpha_band and info.alpha_band <= count else None
    mask_alpha = alpha if alpha is not None and is_mask_band(array[:, :, alpha]) else None
    if settings.bands:
        bad = [b for b in settings.bands if b > count]
        if bad:
            raise RasterError(f"image {info.describe()}: {settings.key}.BANDS {list(settings.bands)} names band(s) "
                              f"{bad} but the file has {count}")
        picked = [b - 1 for b in settings.bands] * (3 if len(settings.bands) == 1 else 1)  # one band: grey
        return picked, (mask_alpha if mask_alpha not in picked else None)
    if alpha is not None and mask_alpha is None:
        raise RasterError(
            f"image {info.describe()}: band {alpha + 1} is tagged alpha but is not a mask (it holds values other "
            f"than 0 and full scale, e.g. a NIR band written with an RGBA default); set {settings.key}.BANDS to "
            f"the 1-based bands for R, G, B (e.g. [1, 2, 3], or [{alpha + 1}, 1, 2] for a false-colour view)")
    data = [b for b in range(count) if b != mask_alpha]
    if len(data) == 1:
        return data * 3, mask_alpha
    if len(data) == 3:
        return data, mask_alpha
    raise RasterError(
        f"image {info.describe()}: {len(data)} data band(s){' (after its alpha mask)' if mask_alpha is not None else ''}: "
        f"cannot tell which bands are red, green and blue; set {settings.key}.BANDS "
        "to three 1-based band numbers (e.g. [4, 3, 2] for a Landsat-8 band stack) or one band for grey")


def select_bands(array: np.ndarray, info: RasterInfo, settings: RasterSettings) -> np.ndarray:
    """(H, W, 3) bands feeding R, G, B (module docstring for the rule)."""
    return array[:, :, _data_bands(array, info, settings)[0]]


def valid_pixels(array: np.ndarray, info: RasterInfo, settings: RasterSettings) -> Optional[np.ndarray]:
    """(H, W) bool, True where the pixel holds data, or None when every pixel does.

    No-data (module docstring): every selected band equal to the no-data value (``settings.nodata``,
    else ``info.nodata``; NaN matches NaN), a non-finite float value, the file's GDAL mask band
    (``info.mask``) or a genuine alpha mask at 0.
    """
    picked, alpha = _data_bands(array, info, settings)
    return _valid_mask(array[:, :, picked], info, settings, alpha_band=None if alpha is None else array[:, :, alpha])


def convert(array: np.ndarray, info: RasterInfo, settings: RasterSettings) -> RasterImage:
    """Stored values (H, W, C) → :class:`RasterImage` (uint8 RGB and its valid-pixel mask) as
    ``settings`` say (module docstring).

    Raises:
        RasterError: a choice the user must make (bands, non-8-bit data under ``auto``).
    """
    picked, alpha = _data_bands(array, info, settings)
    rgb = array[:, :, picked]
    valid = _valid_mask(rgb, info, settings, alpha_band=None if alpha is None else array[:, :, alpha])
    if settings.scaling == "auto":
        if rgb.dtype != np.uint8:
            finite = rgb[valid] if valid is not None else rgb
            lo, hi = (float(np.nanmin(finite)), float(np.nanmax(finite))) if finite.size else (0.0, 0.0)
            raise RasterError(
                f"image {info.describe()} holds {rgb.dtype} values {lo:g}..{hi:g}; the encoders expect 8-bit RGB. "
                f"Choose how values map to 0..255: set {settings.key}.SCALING to 'fixed' (with {settings.key}.RANGE, "
                f"e.g. [0, 10000] for reflectance x 10^4), 'percentile' (per image) or 'percentile_dataset'")
        out = np.ascontiguousarray(rgb)
        if valid is not None:
            out[~valid] = 0
        return RasterImage(out, valid, info)
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
    out = np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)
    if valid is not None:
        out[~valid] = 0
    return RasterImage(out, valid, info)


def to_rgb8(array: np.ndarray, info: RasterInfo, settings: RasterSettings) -> np.ndarray:
    """Stored values (H, W, C) → uint8 RGB (H, W, 3): :func:`convert` without the mask.

    Raises:
        RasterError: a choice the user must make (bands, non-8-bit data under ``auto``).
    """
    return convert(array, info, settings).rgb


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
    ident = [settings.bands, settings.percentiles, settings.nodata] + [(p, os.path.getsize(p), os.path.getmtime(p)) for p in picked]
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
        valid = valid_pixels(array, info, settings)
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


def read_image(path: str, settings: RasterSettings = RasterSettings()) -> RasterImage:
    """Read ``path`` into a :class:`RasterImage` (uint8 RGB and valid-pixel mask) per
    ``settings``: the one entry point the mappers, the predictor and the tools use."""
    array, info = read_raster(path)
    return convert(array, info, settings)


def read_rgb8(path: str, settings: RasterSettings = RasterSettings()) -> np.ndarray:
    """uint8 RGB (H, W, 3) of ``path`` per ``settings`` (:func:`read_image` without the mask)."""
    return read_image(path, settings).rgb


def _valid_mask(rgb: np.ndarray, info: RasterInfo, settings: Optional[RasterSettings] = None,
                alpha_band: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """(H, W) True where the pixel holds data (:func:`valid_pixels`); None when all do."""
    valid = None
    nodata = settings.nodata if settings is not None and settings.nodata is not None else info.nodata
    if nodata is not None:
        invalid = np.isnan(rgb).all(axis=2) if np.isnan(nodata) else (rgb == nodata).all(axis=2)
        valid = ~invalid
    if rgb.dtype.kind == "f":
        finite = np.isfinite(rgb).all(axis=2)
        valid = finite if valid is None else valid & finite
    for mask in (info.mask, None if alpha_band is None else alpha_band > 0):
        if mask is not None:
            valid = mask if valid is None else valid & mask
    return None if valid is None or valid.all() else valid


def _log_once(key: tuple, message: str, *args: Any) -> None:
    """Warn once per run, however many processes (ranks, data-loader workers, pre-flight) read images."""
    log_once(logger, f"ovrsis.data.raster:{key!r}", logging.WARNING, message, *args)
