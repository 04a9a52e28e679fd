"""Resuming a scene: which chunks are finished, and whether existing outputs belong to this run.

Beside the partial outputs, ``STEM.scene-state.json`` records, per panel, the first chunk (tile
row) not yet written, and the run's **signature**: a hash of everything that changes the
pixels (the config, the weights file, the vocabulary, the raster settings with their statistics,
the scene file and the output options). A finished scene leaves ``STEM.scene.json`` with the
same signature. Rerunning a finished scene skips it; a killed run resumes at the first unwritten
chunk of each panel; a run whose signature differs from what is on disk refuses to mix its
pixels with the old ones (:class:`~ovrsis.errors.ConfigError`).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError
from ..export import write_json


def signature(parts: dict[str, Any]) -> str:
    """A short stable hash of ``parts`` (JSON-serialisable values; others by ``str``)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_identity(path: str) -> list:
    """``[name, size, mtime]`` of a file (what the signature records of the scene and weights)."""
    return [os.path.basename(path), os.path.getsize(path), int(os.path.getmtime(path))] if path else []


def read_json(path: str) -> Optional[dict]:
    """The JSON object in ``path``, or None when the file does not exist or is unreadable (a write
    interrupted before its atomic rename never leaves a half file)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def refuse(existing: str, what: str) -> ConfigError:
    """The error for outputs of another run found at ``existing``."""
    return ConfigError(f"{existing} holds {what} of another config, weights, vocabulary, raster setting or output "
                       "option; refusing to mix them: choose another --output folder or delete those files")


class SceneState:
    """Per-panel progress of one scene, stored atomically in ``path`` after every written chunk."""

    def __init__(self, path: str, sig: str, panels: int) -> None:
        self.path, self.signature = path, sig
        self.next_row = [0] * panels
        self.confusion: Optional[list] = None  # scene evaluation of the written chunks
        stored = read_json(path)
        if stored is not None:
            if stored.get("signature") != sig:
                raise refuse(path, "a partial prediction")
            self.next_row = [int(v) for v in stored["next_row"]]
            self.confusion = stored.get("confusion")

    @property
    def started(self) -> bool:
        return any(self.next_row)

    def mark(self, panel: int, row: int, confusion: Optional[np.ndarray] = None) -> None:
        """Chunk ``(panel, row)`` is on disk (chunks are written in order within a panel), and
        ``confusion`` is the scene evaluation's matrix so far (None without evaluation)."""
        self.next_row[panel] = row + 1
        self.confusion = None if confusion is None else confusion.tolist()
        write_json(self.path, {"signature": self.signature, "next_row": self.next_row, "confusion": self.confusion})
