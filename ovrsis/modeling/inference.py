"""Inference protocols: how a segmentor turns one image into (T, H, W) probabilities.

``TEST.INFERENCE_MODE`` names one in :data:`~ovrsis.modeling.registry.INFERENCE_PROTOCOL_REGISTRY`.
A registered entry has ``from_config(cfg)`` returning the protocol, a callable
``protocol(model, x, classes)`` → (T, H, W) probabilities at ``x["height"], x["width"]`` (default:
the image size), ``x["image"]`` being the (3, H_i, W_i) image the test mapper gives. It may define
``check()``, called when the model is built with that mode (settings that cannot work raise
ValueError there, not at the first image). Every registered protocol is built with the model
(:func:`build_protocols`), so ``model.inference_mode`` can be switched at run time (benchmarks).

The built-in ``whole``, ``slide`` and ``tiled`` are the segmentor's own methods
(:class:`~ovrsis.modeling.meta_arch.CostAggregationSegmentor`: ``_inference_whole`` etc., which read
``TEST.WHOLE``, ``TEST.SLIDE``, ``TEST.TILED``); a project registers a new one with its own keys::

    @INFERENCE_PROTOCOL_REGISTRY.register(name="flip")
    class FlipAverage:
        @classmethod
        def from_config(cls, cfg): return cls()
        def __call__(self, model, x, classes):
            image = x["image"]
            probs = model.predict_logits(model._normalize(image)[None], classes).sigmoid()
            ...
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from detectron2.config import CfgNode

from .registry import INFERENCE_PROTOCOL_REGISTRY

Protocol = Callable[[Any, Dict, Any], Any]


class SegmentorMethod:
    """A built-in protocol: the segmentor's method ``name`` (its settings are the model's own)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def from_config(self, cfg: CfgNode) -> "SegmentorMethod":
        return self

    def __call__(self, model: Any, x: Dict, classes: Any) -> Any:
        return getattr(model, self.name)(x, classes)


for _mode in ("whole", "slide", "tiled"):
    INFERENCE_PROTOCOL_REGISTRY.register(SegmentorMethod(f"_inference_{_mode}"), _mode)


def build_protocols(cfg: CfgNode) -> Dict[str, Protocol]:
    """Every registered protocol, built from ``cfg`` (the registry's order)."""
    return {name: entry.from_config(cfg) for name, entry in INFERENCE_PROTOCOL_REGISTRY}


def check_protocol(protocols: Dict[str, Protocol], mode: str) -> Protocol:
    """The protocol named ``mode`` after its ``check()``.

    Raises:
        ConfigError: no such protocol (close names listed).
        ValueError: its settings cannot work.
    """
    if mode not in protocols:
        INFERENCE_PROTOCOL_REGISTRY.get(mode)  # raises, naming TEST.INFERENCE_MODE and the close names
        raise ValueError(f"TEST.INFERENCE_MODE {mode!r} was registered after the model was built")
    protocol = protocols[mode]
    if hasattr(protocol, "check"):
        protocol.check()
    return protocol


def builtin_protocols() -> Dict[str, Protocol]:
    """The segmentor's own protocols (a model built without a config)."""
    return {mode: INFERENCE_PROTOCOL_REGISTRY.get(mode) for mode in ("whole", "slide", "tiled")}
