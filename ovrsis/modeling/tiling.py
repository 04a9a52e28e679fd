"""Tiled inference for images too large to score at once (UAVid, UDD5, VDD, FloodNet).

Why: whole-image and sliding-window inference squash the image into one CLIP-sized view
(or a fixed 640x640 canvas), and the final full-resolution score map lives on the device.
Here the image is cut into overlapping tiles that keep their aspect, scored a batch of
tiles (and optionally a chunk of classes) at a time, and each tile's scores are resized
straight to its footprint in the *output* frame and accumulated on the CPU, so device
memory depends on the tile batch, not on the image.

Exactness: when one tile covers the image, the tile is the image and its scores are
resized directly to the output size, exactly as whole-image inference does, so both give
identical results.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.tile_grid import tile_starts

# (tiles B x 3 x h x w as given, class names) -> probabilities B x T x h' x w' (any h', w')
TileScorer = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class SceneScoring:
    """How a model scores the tiles of a streamed scene (``model.scene_scoring()``,
    :func:`ovrsis.scene.run_scene`). Tiles are blended linearly (:func:`blend_tile`), so what is
    blended may be any per-pixel scores:

    * ``score``: tiles (B, 3, h, w) 0–255 and the class names → scores (B, C, h', w');
    * ``channels``: C, or ``None`` when the scores are one probability per class (then
      ``TEST.TILED.CLASS_CHUNK`` may score the classes in chunks);
    * ``finish``: blended scores (C, h, w) → probabilities (T, h, w), or ``None`` when the scores
      are the probabilities already.

    The CAT-Seg family blends probabilities (``score_tiles``); SegEarth-OV blends its query
    logits and turns them into class probabilities afterwards, as mmseg's slide inference does.
    """

    score: TileScorer
    channels: int | None = None
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None


# (tiles done, tiles in the image) after each scorer batch; set by tile_progress()
_progress: ContextVar[Callable[[int, int], None] | None] = ContextVar("ovrsis_tile_progress", default=None)


@contextlib.contextmanager
def tile_progress(callback: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, :func:`tiled_probabilities` and :func:`window_average` call
    ``callback(done, total)`` after each batch of tiles (the predictor's progress bar), whichever
    meta-architecture calls them."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


LONG_SIDE_RESIZE = ("opencv", "float")  # TEST.TILED.RESIZE (resize_long_side)


@dataclass(frozen=True)
class TilingSettings:
    """Tile geometry and batching (config ``TEST.TILED``)."""

    tile: int = 384  # tile side in input pixels
    stride: int = 256  # step between tile origins
    batch: int = 8  # tiles per scorer call
    class_chunk: int = 0  # classes per scorer call, 0 = all
    long_side: int = 0  # resize the long side to this first (SegEarth-OV P-C: 448), 0 = off
    resize: str = "opencv"  # how long_side resizes: opencv (official: cv2 bilinear on the uint8 image) | float

    def __post_init__(self) -> None:
        if self.tile < 1 or not 1 <= self.stride <= self.tile or self.batch < 1 or self.class_chunk < 0 \
                or self.long_side < 0 or self.resize not in LONG_SIDE_RESIZE:
            raise ValueError(f"invalid tiling settings {self}: need tile >= 1, 1 <= stride <= tile, batch >= 1, "
                             f"class_chunk >= 0, long_side >= 0, resize one of {LONG_SIDE_RESIZE}")

    @classmethod
    def from_config(cls, tiled) -> "TilingSettings":
        return cls(tiled.TILE, tiled.STRIDE, tiled.BATCH, tiled.CLASS_CHUNK, tiled.LONG_SIDE, tiled.RESIZE)


def _footprint(start: int, size: int, length: int, out_length: int) -> tuple[int, int]:
    """Input span [start, start + size) mapped to output pixels (at least one, inside the output
    even when the output is smaller than the tile grid, e.g. a 1x1 image scored at a larger scale)."""
    begin = min(round(start * out_length / length), out_length - 1)
    end = max(round((start + size) * out_length / length), begin + 1)
    return begin, min(end, out_length)


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one (already long-side-resized) image and where each lands in the output frame.

    ``rows``/``cols`` are the tile origins along each axis (:func:`tile_starts`, last tile aligned
    to the border); tiles are ``tile_h`` x ``tile_w`` input pixels (the tile side, or the image side
    when shorter); :meth:`footprint` maps a tile to its output-pixel rectangle. Both the in-memory
    :func:`tiled_probabilities` and the streaming scene predictor (:mod:`ovrsis.scene`) walk this
    grid, so they score the same tiles.
    """

    height: int
    width: int
    out_height: int
    out_width: int
    tile_h: int
    tile_w: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def of(cls, height: int, width: int, output_size: tuple[int, int], settings: TilingSettings) -> "TileGrid":
        """The grid of an image of ``height`` x ``width`` input pixels scored into ``output_size`` (H, W)."""
        return cls(height, width, int(output_size[0]), int(output_size[1]), min(settings.tile, height),
                   min(settings.tile, width), tuple(tile_starts(height, settings.tile, settings.stride)),
                   tuple(tile_starts(width, settings.tile, settings.stride)))

    @property
    def boxes(self) -> list[tuple[int, int]]:
        """Tile origins ``(y, x)`` in row-major order (the scoring order)."""
        return [(y, x) for y in self.rows for x in self.cols]

    def footprint(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Output rectangle ``(y0, y1, x0, x1)`` (end-exclusive) of the tile at input origin ``(y, x)``."""
        y0, y1 = _footprint(y, self.tile_h, self.height, self.out_height)
        x0, x1 = _footprint(x, self.tile_w, self.width, self.out_width)
        return y0, y1, x0, x1


def score_tiles(tiles: torch.Tensor, score: TileScorer, class_names: Sequence[str],
                settings: TilingSettings) -> torch.Tensor:
    """Probabilities (B, T, h', w') of tiles (B, C, h, w): ``score`` per chunk of
    ``settings.class_chunk`` classes (all at once when 0), chunks concatenated in class order."""
    chunk = settings.class_chunk or len(class_names)
    return torch.cat([score(tiles, list(class_names[i:i + chunk])) for i in range(0, len(class_names), chunk)],
                     dim=1)


def blend_tile(total: torch.Tensor, counts: torch.Tensor, tile_probs: torch.Tensor,
               footprint: tuple[int, int, int, int], origin: tuple[int, int] = (0, 0)) -> None:
    """Add one tile's probabilities (T, h', w'), bilinearly resized to its output ``footprint``
    ``(y0, y1, x0, x1)``, into the float32 CPU sums ``total`` (T, H, W) and ``counts`` (1, H, W)
    whose pixel (0, 0) is output pixel ``origin`` (row, column): the whole output in memory, or one
    band of it when streaming."""
    y0, y1, x0, x1 = footprint
    resized = F.interpolate(tile_probs[None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    oy, ox = origin
    total[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox] += resized[0].float().cpu()
    counts[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox] += 1


def resize_long_side(image: torch.Tensor, long_side: int, method: str = "opencv") -> torch.Tensor:
    """(C, H, W) image bilinearly resized so its long side is ``long_side``, aspect kept; 0 or an
    image already that size is returned unchanged. Sizes round as mmcv's ``rescale_size`` does
    (``int(side · scale + 0.5)``).

    ``method="opencv"`` is SegEarth-OV's test pipeline (``Resize(scale=(448, 448), keep_ratio=True)``
    → mmcv ``imrescale`` → ``cv2.resize(..., INTER_LINEAR)``): a uint8 image (what the data
    mappers give) is resized on uint8 with OpenCV's fixed-point arithmetic and stays uint8, exactly
    as the official code; a float image is resized by the same kernel in float32. ``"float"``:
    ``F.interpolate`` bilinear on the image as float32 (differs from the official uint8 resize by
    up to about one grey level). Raises ValueError for another ``method``.
    """
    if method not in LONG_SIDE_RESIZE:
        raise ValueError(f"TEST.TILED.RESIZE must be one of {LONG_SIDE_RESIZE}, got {method!r}")
    if not long_side or max(image.shape[-2:]) == long_side:
        return image
    scale = long_side / max(image.shape[-2:])
    height, width = (max(1, int(s * scale + 0.5)) for s in image.shape[-2:])
    if method == "float":
        return F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    import cv2

    pixels = image.detach().cpu()
    pixels = (pixels if pixels.dtype == torch.uint8 else pixels.float()).permute(1, 2, 0).contiguous().numpy()
    resized = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    resized = resized.reshape(height, width, -1)  # cv2 drops a single channel axis
    return torch.from_numpy(resized).permute(2, 0, 1).to(image.device)


@torch.no_grad()
def window_average(image: torch.Tensor, score: TileScorer, class_names: Sequence[str],
                   settings: TilingSettings) -> torch.Tensor:
    """Scores (K, h, w) of the long-side-resized image: windows of ``settings.tile`` every
    ``settings.stride`` (last one aligned to the border, as :func:`tile_starts`), ``settings.batch``
    windows per ``score`` call, each window's (N, K, th, tw) scores summed into its footprint and
    divided by the window count — mmseg's ``slide_inference`` (SegEarth-OV P-C). Unlike
    :func:`tiled_probabilities` the average is taken at the window scale and left unresized.
    Accumulated on the image's device in float32.
    """
    image = resize_long_side(image, settings.long_side, settings.resize)
    height, width = image.shape[-2:]
    th, tw = min(settings.tile, height), min(settings.tile, width)
    boxes = [(y, x) for y in tile_starts(height, settings.tile, settings.stride)
             for x in tile_starts(width, settings.tile, settings.stride)]
    total = counts = None
    for first in range(0, len(boxes), settings.batch):
        batch = boxes[first:first + settings.batch]
        tiles = torch.stack([image[:, y:y + th, x:x + tw] for y, x in batch])
        scores = score(tiles, class_names)
        if tuple(scores.shape[-2:]) != (th, tw):
            raise ValueError(f"window scorer returned {tuple(scores.shape[-2:])} for windows of {(th, tw)}")
        if total is None:
            total = scores.new_zeros(scores.shape[1], height, width, dtype=torch.float32)
            counts = scores.new_zeros(1, height, width, dtype=torch.float32)
        for (y, x), window in zip(batch, scores):
            total[:, y:y + th, x:x + tw] += window.float()
            counts[:, y:y + th, x:x + tw] += 1
        _report(first + len(batch), len(boxes))
    return total.div_(counts)  # in place: one (T, H, W) buffer, not two


@torch.no_grad()
def tiled_probabilities(
    image: torch.Tensor,
    score: TileScorer,
    class_names: Sequence[str],
    output_size: tuple[int, int],
    settings: TilingSettings,
) -> torch.Tensor:
    """Scores (T, H_out, W_out) on the CPU for a C x H x W image, averaged where tiles overlap.

    ``score`` receives tiles cropped from ``image`` (same dtype and device as ``image``;
    keep it on the CPU for bounded device memory) and must return probabilities. Class
    chunks are scored independently; for models whose classes interact (CAT-Seg's class
    aggregation) chunking therefore changes the result, and it is off by default.
    """
    image = resize_long_side(image, settings.long_side, settings.resize)
    grid = TileGrid.of(image.shape[-2], image.shape[-1], output_size, settings)
    boxes = grid.boxes
    total = torch.zeros(len(class_names), grid.out_height, grid.out_width)
    counts = torch.zeros(1, grid.out_height, grid.out_width)
    for first in range(0, len(boxes), settings.batch):
        batch = boxes[first:first + settings.batch]
        tiles = torch.stack([image[:, y:y + grid.tile_h, x:x + grid.tile_w] for y, x in batch])
        probs = score_tiles(tiles, score, class_names, settings)
        for (y, x), tile_probs in zip(batch, probs):
            blend_tile(total, counts, tile_probs, grid.footprint(y, x))
        _report(first + len(batch), len(boxes))
    return total.div_(counts)  # in place: one (T, H, W) buffer, not two


def _report(done: int, total: int) -> None:
    callback = _progress.get()
    if callback is not None:
        callback(done, total)
