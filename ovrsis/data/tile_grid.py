"""Tile origins along one axis: the grid that cuts datasets into tiles (``ovrsis.data.prepare``)
and that tiled inference scores (``ovrsis.modeling.tiling``, ``ovrsis.scene``)."""
from __future__ import annotations


def tile_starts(length: int, tile: int, stride: int, remainder: str = "shift") -> list[int]:
    """Tile origins along one axis, every ``stride``.

    ``remainder="shift"`` (inference, and most dataset cutters) adds a last tile aligned to
    the border, and gives an axis no longer than ``tile`` one tile spanning it;
    ``"drop"`` leaves the uncovered remainder (and a too-short axis) out.
    """
    if remainder not in ("shift", "drop"):
        raise ValueError(f"remainder must be 'shift' or 'drop', got {remainder!r}")
    if length <= tile:
        return [0] if remainder == "shift" or length == tile else []
    starts = list(range(0, length - tile + 1, stride))
    if remainder == "shift" and starts[-1] + tile < length:
        starts.append(length - tile)
    return starts
