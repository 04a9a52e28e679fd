"""Inference protocols as data: the config keys that decide how an image becomes scores.

Why: the same checkpoint scores differently under whole-image (P-A), sliding-window (P-B)
or SegEarth-OV-window (P-C) inference (datasets.md §1.3), so every score must name the
protocol that produced it. A protocol is a named, versioned set of config values; the
benchmark runner applies it to the config, and :func:`inference_from_config` names the
protocol a given config actually runs (``custom`` when it matches none), so what is
printed beside a score is read from the config that produced it, never assumed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detectron2.config import CfgNode

_RESIZE_KEYS = ("INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST")
# Keys that change the numbers, per TEST.INFERENCE_MODE (tile batch size does not).
MODE_KEYS: dict[str, tuple[str, ...]] = {
    "whole": _RESIZE_KEYS + ("TEST.WHOLE.STRETCH_PADDING", "TEST.WHOLE.SIZE_DIVISIBILITY"),
    "slide": _RESIZE_KEYS + ("TEST.SLIDE.WINDOW", "TEST.SLIDE.OVERLAP", "TEST.SLIDE.CANVAS",
                             "TEST.SLIDE.GLOBAL_VIEW"),
    "tiled": _RESIZE_KEYS + ("TEST.TILED.TILE", "TEST.TILED.STRIDE", "TEST.TILED.LONG_SIDE",
                             "TEST.TILED.RESIZE", "TEST.TILED.CLASS_CHUNK"),
}


@dataclass(frozen=True)
class InferenceProtocol:
    """A named, versioned inference set-up. Bump ``version`` whenever a value changes."""

    name: str
    version: int
    summary: str
    mode: str
    settings: tuple[tuple[str, Any], ...]  # (config key, value) for every key of MODE_KEYS[mode]

    def __post_init__(self) -> None:
        keys = tuple(key for key, _ in self.settings)
        if self.mode not in MODE_KEYS or sorted(keys) != sorted(MODE_KEYS[self.mode]):
            raise ValueError(f"protocol {self.name}: mode {self.mode!r} needs exactly the keys "
                             f"{MODE_KEYS.get(self.mode)}, got {keys}")

    @property
    def label(self) -> str:
        """Short form printed beside scores, e.g. ``P-B v1``."""
        return f"{self.name} v{self.version}"

    def config_overrides(self) -> list:
        """``KEY VALUE`` list for ``CfgNode.merge_from_list``."""
        return ["TEST.INFERENCE_MODE", self.mode] + [item for pair in self.settings for item in pair]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "summary": self.summary, "mode": self.mode,
                "settings": {key: _plain(value) for key, value in self.settings}}

    def describe(self) -> str:
        values = ", ".join(f"{key.split('.')[-1]}={_plain(value)}" for key, value in self.settings)
        return f"{self.label} [{self.mode}: {values}]"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _protocol(name: str, version: int, summary: str, mode: str, **settings: Any) -> InferenceProtocol:
    keys = {key.split(".")[-1]: key for key in MODE_KEYS[mode]}
    return InferenceProtocol(name, version, summary, mode,
                             tuple((keys[k], v) for k, v in sorted(settings.items())))


_SHORT_SIDE_640 = {"MIN_SIZE_TEST": 640, "MAX_SIZE_TEST": 2560}

PROTOCOLS: dict[str, InferenceProtocol] = {p.name: p for p in (
    _protocol(
        "P-A", 1,
        "CAT-Seg whole image as RSKT's V1 eval.sh runs it: shortest side 640, padded, squashed to the "
        "CLIP size, and the padded map stretched back onto the image (official misalignment). "
        "Padding multiple 32 = MODEL.MASK_FORMER.SIZE_DIVISIBILITY of the reference configs; "
        "datasets.md §1.3 says 384 (UNCERTAIN).",
        "whole", STRETCH_PADDING=True, SIZE_DIVISIBILITY=32, **_SHORT_SIDE_640),
    _protocol(
        "P-A-aligned", 1,
        "P-A without the padding/stretch misalignment (corrected variant, not the published protocol).",
        "whole", STRETCH_PADDING=False, SIZE_DIVISIBILITY=32, **_SHORT_SIDE_640),
    _protocol(
        "P-B", 1,
        "CAT-Seg sliding window (OVRS, GSNet, Pi-Seg V2): shortest side 640, squashed to a 640x640 "
        "canvas, 384 windows with stride 256 plus one global view, averaged.",
        "slide", WINDOW=384, OVERLAP=0.333, CANVAS=(640, 640), GLOBAL_VIEW=True, **_SHORT_SIDE_640),
    _protocol(
        "P-C", 2,
        "SegEarth-OV window geometry: long side 448 (the uint8 image resized by OpenCV bilinear, as "
        "the official mmcv pipeline), 224 windows with stride 112, averaged. The training-free "
        "post-processing (softmax x50, sub-prompt max, prob_thd/bg_idx) is not part of the CAT-Seg "
        "segmentor, which averages sigmoid scores. v1 resized in float.",
        "tiled", TILE=224, STRIDE=112, LONG_SIDE=448, RESIZE="opencv", CLASS_CHUNK=0, MIN_SIZE_TEST=0,
        MAX_SIZE_TEST=0),
    _protocol(
        "P-C-896", 2,
        "P-C with long side 896 (SegEarth-OV's building/road/water variant). v1 resized in float.",
        "tiled", TILE=224, STRIDE=112, LONG_SIDE=896, RESIZE="opencv", CLASS_CHUNK=0, MIN_SIZE_TEST=0,
        MAX_SIZE_TEST=0),
    _protocol(
        "P-T", 1,
        "Tiled inference for large images (UAVid, UDD5, VDD): shortest side 640 as in P-A/P-B, then "
        "384 tiles with stride 256 at that scale (aspect kept, no canvas squash), batched, stitched on "
        "the CPU at the original resolution.",
        "tiled", TILE=384, STRIDE=256, LONG_SIDE=0, RESIZE="opencv", CLASS_CHUNK=0, **_SHORT_SIDE_640),
)}


def get_protocol(name: str) -> InferenceProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown inference protocol {name!r}; known: {sorted(PROTOCOLS)}") from None


def inference_from_config(cfg: CfgNode) -> InferenceProtocol:
    """The protocol ``cfg`` runs: a named one when every value matches, else ``custom``."""
    mode = cfg.TEST.INFERENCE_MODE
    if mode not in MODE_KEYS:
        raise ValueError(f"TEST.INFERENCE_MODE {mode!r} is not one of {sorted(MODE_KEYS)}")
    settings = tuple(sorted((key, _config_value(cfg, key)) for key in MODE_KEYS[mode]))
    for protocol in PROTOCOLS.values():
        if protocol.mode == mode and sorted(_normalised(protocol.settings)) == sorted(_normalised(settings)):
            return protocol
    return InferenceProtocol("custom", 0, "inference settings taken from the config", mode, settings)


def _config_value(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _normalised(settings: tuple[tuple[str, Any], ...]) -> list[tuple[str, Any]]:
    return [(key, tuple(value) if isinstance(value, (list, tuple)) else value) for key, value in settings]
