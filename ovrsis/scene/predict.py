"""The streaming loop: one scene from disk to its output files with memory independent of its size.

Three threads share the work. A **reader** (prefetch thread, its own rasterio handle) reads,
for each tile row of a panel (:mod:`ovrsis.scene.plan`), one window of ``tile`` rows x the
panel's columns, converts it (:class:`~ovrsis.scene.source.SceneReader`) and cuts it into tiles,
queued ``TEST.TILED.BATCH`` at a time. The **caller's thread** scores each batch with the
model's tile scorer and blends the tiles (:func:`ovrsis.modeling.tiling.blend_tile`, the
in-memory path's code) into a float32 band of ``T`` x (rows a batch can span) x panel width;
when a tile row is complete its final rows are divided, arg-maxed and handed on, and the band
moves down. A **writer** thread writes each chunk into the partial rasters, scores it against
the label raster if any, and records it in the resume state. Peak memory: the band (``T`` x
``(ceil(batch / tiles per panel row) · stride + tile)`` x panel width x 4 bytes), the queued
batches and chunks, the model, and GDAL's block cache (capped at ``GDAL_CACHEMAX``, 32 MB
unless the environment sets it) — not the scene.
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import queue
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from ..data.raster import RasterSettings
from ..export import write_json
from ..modeling.tiling import SceneScoring, TilingSettings, blend_tile, score_tiles
from ..visualization import class_colors
from .evaluate import SceneEvaluation, write_metrics
from .outputs import SceneRasters, ScenePaths, write_quicklook
from .plan import Panel, ScenePlan
from .polygons import write_polygons
from .source import SceneReader, scene_info, scene_settings
from .state import SceneState, file_identity, read_json, refuse, signature

logger = logging.getLogger(__name__)

QUEUE_BATCHES = 2  # tile batches read ahead of the model
QUEUE_CHUNKS = 2  # finished chunks waiting for the writer
GDAL_CACHE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class SceneOptions:
    """What to write besides the labels, and how (``tools/predict_scene.py`` flags).

    Attributes:
        probabilities: None, or ``uint8`` | ``float16`` | ``float32`` (:mod:`ovrsis.scene.outputs`).
        polygons: write ``STEM_polygons.geojson``; ``min_polygon_pixels`` drops smaller regions.
        quicklook: long side of ``STEM_quicklook.png`` in pixels, 0 = none.
        panel_width: output columns per panel (memory vs. re-scored seam tiles, :mod:`.plan`).
        compress: COG compression (``deflate``, ``zstd``, ``lzw``, ...).
        labels: a ground-truth raster on the scene's grid to score the prediction against.
        ignore_value: its ignore id; ``seen``/``unseen``: class names for s-/u-/h-mIoU.
    """

    probabilities: Optional[str] = None
    polygons: bool = False
    min_polygon_pixels: int = 0
    quicklook: int = 512
    panel_width: int = 2048
    compress: str = "deflate"
    labels: Optional[str] = None
    ignore_value: Optional[int] = 255
    seen: tuple = ()
    unseen: tuple = ()

    def identity(self) -> dict:
        """The options that change the output files (part of the resume signature)."""
        return {"probabilities": self.probabilities, "polygons": self.polygons,
                "min_polygon_pixels": self.min_polygon_pixels, "compress": self.compress}


@dataclass
class SceneResult:
    """One scene's outcome: the files written, its size, time and memory, and its scores."""

    scene: str
    outputs: list
    height: int
    width: int
    seconds: float
    skipped: bool = False
    confusion: Optional[np.ndarray] = None
    metrics: Optional[dict] = None
    peak_rss_mb: float = field(default_factory=lambda: peak_rss_mb())

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6

    def summary(self) -> str:
        """The final line: scene size, time, Mpx/s, peak memory."""
        if self.skipped:
            return f"{self.scene}: already finished ({self.width}x{self.height}), skipped"
        rate = self.megapixels / self.seconds if self.seconds > 0 else float("inf")
        line = (f"{self.scene}: {self.width}x{self.height} ({self.megapixels:.1f} Mpx) in {self.seconds:.1f} s, "
                f"{rate:.2f} Mpx/s, peak RSS {self.peak_rss_mb:.0f} MB")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            line += f", peak GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MB"
        if self.metrics is not None:
            line += f", mIoU {self.metrics['mIoU']:.2f}"
        return line


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (Linux ``ru_maxrss`` is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _limit_gdal_cache() -> None:
    if "GDAL_CACHEMAX" not in os.environ:
        from rasterio.env import set_gdal_config

        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_BYTES)


@dataclass
class _Row:
    """A tile row read by the prefetcher: its chunk's valid-pixel mask (owned columns) or None."""

    panel: int
    row: int
    valid: Optional[np.ndarray]


@dataclass
class _Batch:
    panel: int
    boxes: list  # (row index, y, x) per tile
    tiles: torch.Tensor  # (B, 3, th, tw) uint8


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _start_tile(plan: ScenePlan, panel: Panel, first_chunk: int) -> int:
    """Index (in the panel's row-major tile sequence) where a run of ``panel`` starting at chunk
    ``first_chunk`` begins: at the batch boundary before the first tile row feeding that chunk,
    so every batch holds the tiles it holds in an uninterrupted run."""
    if first_chunk == 0:
        return 0
    first = plan.first_row_for(first_chunk) * len(panel.tiles)
    return first // plan.batch * plan.batch


def _read_ahead(plan: ScenePlan, reader: SceneReader, work: list, out: "queue.Queue", stop: threading.Event
                ) -> None:
    """Prefetch thread: ``_Row`` and ``_Batch`` items for every panel in ``work`` ((panel, start
    tile index)), then None."""
    grid = plan.grid
    try:
        for panel, start in work:
            n = len(panel.tiles)
            pending: list = []
            for k in range(start // n, plan.num_rows):
                y = grid.rows[k]
                image = reader.read(y, panel.read_start, grid.tile_h, panel.read_stop - panel.read_start)
                r0, r1 = plan.chunk_rows(k)
                valid = None if image.valid is None else np.ascontiguousarray(
                    image.valid[r0 - y:r1 - y, panel.out_start - panel.read_start:panel.out_stop - panel.read_start])
                out.put(_Row(panel.index, k, valid))
                band = torch.from_numpy(image.rgb).permute(2, 0, 1)  # (3, th, panel width) uint8
                for i, j in enumerate(panel.tiles):
                    if k * n + i < start:
                        continue
                    x = grid.cols[j] - panel.read_start
                    pending.append((k, y, grid.cols[j], band[:, :, x:x + grid.tile_w]))
                    if len(pending) == plan.batch:
                        out.put(_batch(panel, pending))
                        pending = []
                    if stop.is_set():
                        return
            if pending:
                out.put(_batch(panel, pending))
        out.put(None)
    except BaseException as err:  # noqa: BLE001 — handed to the consumer, which raises it
        out.put(_Failure(err))
    finally:
        reader.close()


def _batch(panel: Panel, pending: list) -> _Batch:
    return _Batch(panel.index, [(k, y, x) for k, y, x, _ in pending], torch.stack([t for *_, t in pending]))


class _Writer(threading.Thread):
    """Writes finished chunks (partial rasters, evaluation, resume state) in the background."""

    def __init__(self, rasters: SceneRasters, state: SceneState, evaluation: Optional[SceneEvaluation],
                 progress: Callable[[float], None]) -> None:
        super().__init__(daemon=True)
        self.rasters, self.state, self.evaluation, self.progress = rasters, state, evaluation, progress
        self.items: "queue.Queue" = queue.Queue(QUEUE_CHUNKS)
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        while True:
            item = self.items.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                panel, k, row, col, labels, probabilities = item
                self.rasters.write(row, col, labels, probabilities)
                if self.evaluation is not None:
                    self.evaluation.add(row, col, labels, self.rasters.label_nodata)
                self.state.mark(panel, k, None if self.evaluation is None else self.evaluation.confusion)
                self.progress(labels.size / 1e6)
            except BaseException as err:  # noqa: BLE001 — raised by the caller after join
                self.error = err

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.items.put(item)


def _panel_bands(plan: ScenePlan, items: Iterator, channels: int, score: Callable[[torch.Tensor], torch.Tensor],
                 first_chunk: dict[int, int], emit: Callable[..., None],
                 finish: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
    """Score and blend the prefetched items (``channels`` scores per pixel); ``emit(panel, k,
    probabilities (T, h, w), valid)`` for every chunk at or after ``first_chunk[panel]`` as soon as
    it is final, the blended scores turned into probabilities by ``finish`` when given."""
    grid = plan.grid
    # one allocation for every panel's band (views of it), so panels do not fragment the heap
    sums = torch.zeros(channels, max(plan.band_height(p) for p in plan.panels),
                       max(p.read_stop - p.read_start for p in plan.panels))
    hits = torch.zeros(1, *sums.shape[1:])
    panel = None
    total = counts = None
    origin = done = flushed = 0
    valid: dict[int, Optional[np.ndarray]] = {}
    for item in items:
        if isinstance(item, _Row):
            if panel is None or item.panel != panel.index:  # a new panel: a cleared band
                if panel is not None:
                    _release_freed_memory()
                panel = plan.panels[item.panel]
                height, width = plan.band_height(panel), panel.read_stop - panel.read_start
                total, counts = sums[:, :height, :width], hits[:, :height, :width]
                total.zero_()
                counts.zero_()
                origin, flushed = grid.rows[item.row], item.row
                done = {}
            valid[item.row] = item.valid
            continue
        probabilities = score(item.tiles)
        for (k, y, x), tile in zip(item.boxes, probabilities):
            blend_tile(total, counts, tile, grid.footprint(y, x), (origin, panel.read_start))
            done[k] = done.get(k, 0) + 1
        # a resumed panel starts inside a tile row: the tiles before its start count as done
        while flushed < plan.num_rows and done.get(flushed, 0) + _skipped(plan, panel, first_chunk, flushed) \
                == len(panel.tiles):
            r0, r1 = plan.chunk_rows(flushed)
            c0, c1 = panel.out_start - panel.read_start, panel.out_stop - panel.read_start
            if flushed >= first_chunk[panel.index]:
                blended = total[:, :r1 - r0, c0:c1] / counts[:, :r1 - r0, c0:c1]
                emit(panel.index, flushed, blended if finish is None else finish(blended), valid.pop(flushed))
            else:
                valid.pop(flushed)
            _shift(total, counts, r1 - r0)
            origin, flushed = r1, flushed + 1


def _release_freed_memory() -> None:
    """Give memory freed by the finished panel back to the system (glibc ``malloc_trim``; the
    reader and writer threads' malloc arenas otherwise keep their high-water marks); a no-op
    elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _skipped(plan: ScenePlan, panel: Panel, first_chunk: dict[int, int], k: int) -> int:
    start = _start_tile(plan, panel, first_chunk[panel.index])
    return min(max(start - k * len(panel.tiles), 0), len(panel.tiles))


def _shift(total: torch.Tensor, counts: torch.Tensor, rows: int) -> None:
    """Move the band up by ``rows`` (its first ``rows`` rows are written) and clear the freed rows."""
    height = total.shape[1]
    for buffer in (total, counts):
        for start in range(0, height - rows, rows):  # non-overlapping pieces, front to back
            stop = min(start + rows, height - rows)
            buffer[:, start:stop] = buffer[:, start + rows:stop + rows]
        buffer[:, max(height - rows, 0):] = 0


def run_scene(scoring: SceneScoring, class_names: Sequence[str], path: str, output: str, tiling: TilingSettings,
              raster: RasterSettings, options: SceneOptions, identity: dict, stem: Optional[str] = None,
              raster_stats: Optional[tuple] = None, progress: bool = True, part: tuple[int, int] = (0, 1)
              ) -> SceneResult:
    """Predict one scene into ``output`` (module docstring; files: :mod:`ovrsis.scene.outputs`).

    Args:
        scoring: how the model scores tiles (``model.scene_scoring()``): uint8 tiles (B, 3, h, w) →
            scores (B, C, h', w'), blended, then turned into probabilities (T, h, w) if needed.
        class_names: the vocabulary (T names).
        path: the scene (any GDAL raster).
        output: output folder (created).
        tiling: ``TEST.TILED`` geometry and batch; ``long_side`` must be 0.
        raster: ``INPUT.RASTER`` settings; percentile stretches get scene statistics
            (:func:`~ovrsis.scene.source.scene_settings`; ``raster_stats`` shared over scenes).
        options: outputs and evaluation.
        identity: what else makes the prediction (config, weights): part of the resume signature.
        stem: output file stem, default the scene's file stem.
        progress: show a tqdm bar (Mpx, Mpx/s, ETA).
        part: ``(rank, world)`` when ``world`` processes of a distributed job share this scene
            (every one calls this): process ``rank`` scores the panels ``p`` with
            ``p % world == rank`` into its own partial files, then process 0 assembles them,
            writes the outputs and returns them with the scene's metrics (the others return
            ``outputs == []``).

    Returns:
        :class:`SceneResult` (``skipped`` when the scene was already finished by the same run).

    Raises:
        ConfigError: outputs of another config/vocabulary/option in ``output``; bad options.
        RasterError: an unreadable scene or label raster, or values needing a raster choice.
    """
    _limit_gdal_cache()
    info = scene_info(path)
    settings = scene_settings(path, raster, raster_stats)
    plan = ScenePlan.of(info.height, info.width, tiling, options.panel_width)
    names = list(class_names)
    paths = ScenePaths(output, stem or os.path.splitext(os.path.basename(path))[0])
    sig = signature({"identity": identity, "classes": names, "raster": settings.as_dict(),
                     "scene": file_identity(path), "tiling": dataclasses.asdict(tiling),
                     "panel_width": options.panel_width, "probabilities": options.probabilities,
                     "compress": options.compress})
    os.makedirs(output, exist_ok=True)
    colors = class_colors(names)
    rank, world = part
    tag = f".rank{rank}of{world}" if world > 1 else ""
    rasters = SceneRasters(paths, info, names, colors, options.probabilities, options.compress, tag)
    evaluation = SceneEvaluation(options.labels, info, names, options.ignore_value) if options.labels else None
    record = read_json(paths.record)
    start = time.perf_counter()
    if record is not None:
        if record.get("signature") != sig:
            raise refuse(paths.record, "a finished prediction")
        if evaluation is not None and rank == 0:
            evaluation.add_raster(paths.labels)
    else:
        own = [p.index for p in plan.panels if p.index % world == rank]
        _stream(scoring, names, path, info, settings, plan, tiling, rasters, evaluation,
                SceneState(paths.state(tag), sig, len(plan.panels)), own, options, progress)
        if world > 1:
            rasters = _assemble(paths, info, names, colors, options, plan, evaluation, rank, world)
        if rank == 0:
            rasters.finalise()
            write_json(paths.record, {"signature": sig, "scene": path, "outputs": rasters.targets(),
                                      "height": info.height, "width": info.width,
                                      "seconds": round(time.perf_counter() - start, 2)})
            for r in range(world):  # a process without panels of its own never wrote one
                state = paths.state(f".rank{r}of{world}" if world > 1 else "")
                if os.path.exists(state):
                    os.remove(state)
    if rank != 0:  # a process sharing the scene: process 0 writes and reports it
        if evaluation is not None:
            evaluation.close()
        return SceneResult(path, [], info.height, info.width, time.perf_counter() - start, skipped=record is not None)
    # products derived from the finished labels: made when missing, whether the scene ran now or before
    if options.polygons and not os.path.exists(paths.polygons):
        write_polygons(paths.labels, paths.polygons, info, names, options.min_polygon_pixels)
    if options.quicklook and not os.path.exists(paths.quicklook):
        write_quicklook(paths, path, settings, names, colors, options.quicklook)
    outputs = rasters.targets() + [p for flag, p in ((options.polygons, paths.polygons),
                                                     (options.quicklook, paths.quicklook)) if flag]
    result = SceneResult(path, outputs, info.height, info.width, time.perf_counter() - start,
                         skipped=record is not None)
    if evaluation is not None:
        evaluation.close()
        result.confusion = evaluation.confusion
        result.metrics = write_metrics(paths.metrics, evaluation.confusion, names, os.path.basename(path),
                                       options.seen, options.unseen, options.ignore_value)
        outputs.append(paths.metrics)
    return result


def _assemble(paths: ScenePaths, info, names: list, colors: np.ndarray, options: SceneOptions, plan: ScenePlan,
              evaluation: Optional[SceneEvaluation], rank: int, world: int) -> SceneRasters:
    """After every process sharing the scene has scored its panels: process 0 copies their
    partial files into the scene's and adds up their confusion matrices; returns the scene's
    rasters (unfinalised)."""
    from detectron2.utils import comm

    confusions = comm.all_gather(None if evaluation is None else evaluation.confusion)  # also a barrier
    whole = SceneRasters(paths, info, names, colors, options.probabilities, options.compress)
    if rank == 0:
        parts = [SceneRasters(paths, info, names, colors, options.probabilities, options.compress,
                              f".rank{r}of{world}") for r in range(world)]
        columns = [[(p.out_start, p.out_stop) for p in plan.panels if p.index % world == r] for r in range(world)]
        whole.merge(parts, columns)
        if evaluation is not None:
            evaluation.confusion = np.sum(confusions, axis=0)
    return whole


def _stream(scoring: SceneScoring, names: list, path: str, info, settings: RasterSettings, plan: ScenePlan,
            tiling: TilingSettings, rasters: SceneRasters, evaluation: Optional[SceneEvaluation], state: SceneState,
            panels: list, options: SceneOptions, progress: bool) -> None:
    """Score the unwritten chunks of the ``panels`` (indices) of a scene into its partial rasters
    (module docstring)."""
    from tqdm import tqdm

    if not (state.started and rasters.partials_exist()):
        state.next_row = [0] * len(plan.panels)
        state.confusion = None
        rasters.create()
    if evaluation is not None and state.confusion is not None:
        evaluation.confusion += np.asarray(state.confusion, np.int64)
    first_chunk = {p.index: state.next_row[p.index] for p in plan.panels}
    work = [(p, _start_tile(plan, p, first_chunk[p.index])) for p in plan.panels
            if p.index in panels and first_chunk[p.index] < plan.num_rows]
    todo = sum((plan.grid.height - plan.chunk_rows(first_chunk[p.index])[0]) * (p.out_stop - p.out_start)
               for p, _ in work)
    bar = tqdm(total=todo / 1e6, desc=os.path.basename(path), unit="Mpx", disable=None if progress else True,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} Mpx [{elapsed}<{remaining}, {rate_fmt}]")
    writer = _Writer(rasters, state, evaluation, bar.update)
    writer.start()
    items: "queue.Queue" = queue.Queue(QUEUE_BATCHES)
    stop = threading.Event()
    reader = threading.Thread(target=_read_ahead, args=(plan, SceneReader(path, info, settings), work, items, stop),
                              daemon=True)
    reader.start()

    def drain() -> Iterator:
        while True:
            item = items.get()
            if item is None:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def emit(panel: int, k: int, probabilities: torch.Tensor, valid: Optional[np.ndarray]) -> None:
        # max(dim).indices: the first maximum, as argmax, ~6x faster over the leading dim on CPU
        labels = probabilities.max(dim=0).indices.numpy().astype(rasters.label_dtype)
        probs = probabilities.numpy() if options.probabilities else None
        if valid is not None:
            labels[~valid] = rasters.label_nodata
            if probs is not None:
                probs[:, ~valid] = np.nan
        writer.put((panel, k, plan.chunk_rows(k)[0], plan.panels[panel].out_start, labels, probs))

    try:
        with torch.no_grad():
            if scoring.finish is None:  # probabilities per class (in TEST.TILED.CLASS_CHUNK chunks)
                channels, score = len(names), lambda tiles: score_tiles(tiles, scoring.score, names, tiling)
            else:
                channels, score = scoring.channels, lambda tiles: scoring.score(tiles, names)
            _panel_bands(plan, drain(), channels, score, first_chunk, emit, scoring.finish)
    finally:
        stop.set()
        while reader.is_alive():  # unblock a prefetcher waiting on a full queue
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass
        writer.items.put(None)
        writer.join()
        bar.close()
    if writer.error is not None:
        raise writer.error
