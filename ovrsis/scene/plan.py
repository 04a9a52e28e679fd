"""Where the streaming scene predictor cuts a scene: panels of tile columns and chunks of tile rows.

The tiles are those of the in-memory tiled protocol (:class:`~ovrsis.modeling.tiling.TileGrid`
at the stored resolution: ``TEST.TILED.TILE`` every ``TEST.STRIDE``, last tile aligned to the
border), scored in the same row-major order and ``TEST.TILED.BATCH`` at a time. To bound memory
by the tile batch and one overlap band of rows whatever the scene's width, the tile columns are
grouped into **panels** of about ``panel_width`` pixels: a panel *owns* the output columns from
its first tile's origin to the next panel's, and scores every tile that covers one of them (so
the tile column overlapping its left neighbour is scored twice, once per panel — the only extra
work). Each owned pixel therefore receives exactly the tiles, in exactly the order, that the
in-memory path gives it; a scene no wider than one panel is scored batch for batch as there.

Within a panel, tile rows are scored top to bottom; once tile row ``k`` is done, the output rows
``[rows[k], rows[k + 1])`` (to the bottom for the last row) can no longer change: that is a
**chunk** ``(panel, k)``, the unit that is written, recorded for resuming and split across ranks.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..modeling.tiling import TileGrid, TilingSettings


@dataclass(frozen=True)
class Panel:
    """One panel: ``tiles`` (indices into the grid's ``cols``) it scores, the output columns
    ``[out_start, out_stop)`` it owns and the input columns ``[read_start, read_stop)`` it reads."""

    index: int
    tiles: tuple[int, ...]
    out_start: int
    out_stop: int
    read_start: int
    read_stop: int


@dataclass(frozen=True)
class ScenePlan:
    """Panels and chunks of a scene of ``grid.height`` x ``grid.width`` pixels (module docstring)."""

    grid: TileGrid
    panels: tuple[Panel, ...]
    batch: int
    stride: int

    @classmethod
    def of(cls, height: int, width: int, settings: TilingSettings, panel_width: int) -> "ScenePlan":
        """The plan at the stored resolution (output = input pixels).

        Raises:
            ConfigError: ``panel_width`` smaller than one tile, or a ``long_side`` resize (it needs
            the whole scene in memory).
        """
        if settings.long_side:
            raise ConfigError("TEST.TILED.LONG_SIDE resizes the whole image before tiling; a streamed scene is "
                             "scored at its stored resolution: set TEST.TILED.LONG_SIDE 0")
        if panel_width < settings.tile:
            raise ConfigError(f"panel width {panel_width} is smaller than a tile ({settings.tile} pixels)")
        grid = TileGrid.of(height, width, (height, width), settings)
        cols = grid.cols
        per_panel = max(1, (panel_width - grid.tile_w) // settings.stride + 1)
        starts = list(range(0, len(cols), per_panel))
        panels = []
        for i, first in enumerate(starts):
            out_start = 0 if i == 0 else cols[first]
            out_stop = cols[starts[i + 1]] if i + 1 < len(starts) else width
            tiles = tuple(j for j, x in enumerate(cols) if x < out_stop and x + grid.tile_w > out_start)
            panels.append(Panel(i, tiles, out_start, out_stop, cols[tiles[0]], cols[tiles[-1]] + grid.tile_w))
        return cls(grid, tuple(panels), settings.batch, settings.stride)

    @property
    def num_rows(self) -> int:
        """Tile rows (= chunks per panel)."""
        return len(self.grid.rows)

    def chunk_rows(self, k: int) -> tuple[int, int]:
        """Output rows ``[start, stop)`` that become final once tile row ``k`` is scored."""
        rows = self.grid.rows
        return rows[k], rows[k + 1] if k + 1 < len(rows) else self.grid.height

    def first_row_for(self, k: int) -> int:
        """The first tile row contributing to chunk ``k`` (a resumed panel starts scoring there)."""
        start = self.chunk_rows(k)[0]
        return next(i for i, y in enumerate(self.grid.rows) if y + self.grid.tile_h > start)

    def chunks(self) -> list[tuple[int, int]]:
        """Every chunk ``(panel, row)`` in scoring order."""
        return [(p.index, k) for p in self.panels for k in range(self.num_rows)]

    def band_height(self, panel: Panel) -> int:
        """Rows of the accumulation band of ``panel``: every row a batch can touch before its
        first tile row is final (``batch`` tiles may span several tile rows of a narrow panel)."""
        spanned = -(-self.batch // len(panel.tiles))  # tile rows after the oldest unfinished one
        return min(self.grid.height, spanned * self.stride + self.grid.tile_h)
