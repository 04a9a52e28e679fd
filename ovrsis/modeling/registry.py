"""Registries for the parts a config chooses: a method is a set of names, never a fork.

Each registry's docstring is the interface a new part implements (shapes in, shapes out);
``docs/extending.md`` walks through adding one from a module outside the package (``IMPORTS``).
Symbols: B images, T classes, P prompt templates, C the CLIP embedding width, (h, w) = (g, g) the
CLIP token grid, ``hidden`` = ``MODEL.AGGREGATOR.HIDDEN_DIM``.
"""
from __future__ import annotations

from typing import Any, Optional

from detectron2.utils.registry import Registry

from ..errors import ConfigError, close_names


class PartRegistry(Registry):
    """detectron2's ``Registry`` that registers under a given ``name`` too (``register(name="conv")``)
    and answers an unknown name with a :class:`~ovrsis.errors.ConfigError` naming the config
    ``key`` that chose it, the close names and every registered one."""

    def __init__(self, name: str, key: str, doc: str) -> None:
        super().__init__(name)
        self.key = key
        self.__doc__ = doc

    def register(self, obj: Any = None, name: Optional[str] = None) -> Any:  # type: ignore[override]
        """``@REGISTRY.register()``, ``@REGISTRY.register(name="x")`` or ``REGISTRY.register(obj, "x")``."""
        if obj is None:
            def decorator(part: Any) -> Any:
                self._do_register(name or part.__name__, part)
                return part
            return decorator
        self._do_register(name or obj.__name__, obj)
        return obj

    def get(self, name: str) -> Any:
        """The part registered as ``name``.

        Raises:
            ConfigError: no such part (e.g. a misspelt name, or a project module not in ``IMPORTS``).
        """
        if name not in self._obj_map:
            names = sorted(self._obj_map)
            raise ConfigError(f"{self.key}: no {self._name} part named {name!r}{close_names(str(name), names)}; "
                              f"registered: {names}. A part of your own registers when its module is imported: "
                              "list it in IMPORTS (docs/extending.md)")
        return self._obj_map[name]

    def names(self) -> list:
        """Registered names, in registration order."""
        return list(self._obj_map)


AGGREGATOR_REGISTRY = PartRegistry("aggregator", "MODEL.AGGREGATOR.NAME", """Cost aggregation stacks.

``cls.from_config(cfg, *, cost_channels, clip_dim, resolution, appearance_dim=None)`` → module with
``forward(cost (B, P', T, h, w), appearance (B, A, h, w), text (B, T, P, C), extra_costs [(B, P_i, T, h, w)])``
→ embedding (B, T, hidden, h, w). ``cost_channels``: P' of the CLIP cost, then P_i of each specialist cost.""")

DECODER_REGISTRY = PartRegistry("decoder", "MODEL.DECODER.NAME", """Decoders.

``cls.from_config(cfg, *, in_dim)`` → module with ``forward(embedding (B, T, in_dim, h, w),
guidance [per source: [per stage i: (B, D_i, 2^(i+1)·h, 2^(i+1)·w)]])`` → logits (B, T, H', W'),
and ``num_sources`` (how many guidance sources it takes).""")

LOSS_HEAD_REGISTRY = PartRegistry("loss head", "MODEL.LOSS.HEADS", """Training-only loss heads (never run at inference).

``cls.from_config(cfg, *, in_dim, feature_dims, train_classes)`` → module with ``forward(state)`` →
{name: scalar loss} added to the BCE. ``state``: ``embedding`` (B, T', in_dim, h, w), ``features``
{source: (B, D, h_s, w_s)}, ``images`` (B, 3, S, S) CLIP input.""")

COST_FUSION_REGISTRY = PartRegistry("cost fusion", "MODEL.COST.FUSION", """Cost embeddings: the aggregator's first layer.

``cls(cost_channels, hidden_dim)`` (or ``cls.from_config(cfg, *, cost_channels, hidden_dim)`` when it
defines one, for keys of its own) → module with ``forward(costs [(B, C_i, T, h, w)])`` → (B, T, hidden, h, w),
each class map embedded on its own; ``costs[0]`` is the CLIP cost, then the specialist costs.""")

STREAM_REGISTRY = PartRegistry("guidance stream", "a stream's ENABLED key", """Specialist (guidance) streams, by source name.

``build(cfg, *, clip_image_size, clip_grid, text_dim)`` → a stream module, or None when the config does not
enable it. The module (e.g. :class:`~ovrsis.modeling.encoders.specialist.SpecialistStream`) has
``forward(images (B, 3, H, W) CLIP-normalised, text (B, T, P, C))`` →
:class:`~ovrsis.modeling.encoders.specialist.StreamOutput` (cost (B, P, T, g, g) or None; guidance: one map
per decoder stage i (B, D_i, 2^(i+1)·g, 2^(i+1)·g); features (B, F, h_s, w_s) or None) and the attributes
``has_cost``, ``has_guidance``, ``feature_dim``. A guidance stream is listed in MODEL.DECODER.GUIDANCE_SOURCES
under its registered name; streams are built in registration order.""")

PERTURBATION_REGISTRY = PartRegistry("perturbation stage", "MODEL.PERTURBATION.NAME", """Perturbation stages between the encoders and the cost.

``cls.from_config(cfg, dim)`` → a :class:`~ovrsis.modeling.perturbation.PerturbationStage` (subclass) with
``perturb_text(text (T, P, C))`` → (T, P, C) and ``perturb_image(dense (B', C, g, g), text (T, P, C))`` →
(B', C, g, g); both the identity in evaluation mode.""")

TEMPLATE_SET_REGISTRY = PartRegistry("text-template set", "MODEL.TEXT.TEMPLATE_SET", """Prompt-template sets.

A registered value is a sequence of P ≥ 1 templates with one ``{}`` each (the class name); it replaces
MODEL.TEXT.TEMPLATES and fixes the P of the text embeddings (T, P, C).""")

INFERENCE_PROTOCOL_REGISTRY = PartRegistry("inference protocol", "TEST.INFERENCE_MODE", """Inference protocols.

``cls.from_config(cfg)`` → object with ``check()`` (raises ValueError for settings that cannot work) and
``__call__(model, x, classes)`` → (T, H, W) per-class probabilities at ``x["height"], x["width"]``
(default: the image size). ``x["image"]``: (3, H_i, W_i) uint8/float tensor as the mapper gives it;
``model._normalize(image)`` (→ float, PIXEL_MEAN/STD) and ``model.predict_logits(images (B, 3, h, w) normalised,
classes)`` → (B, T, h', w') logits are what a protocol calls (or the built-in ``model._inference_whole(x, classes)``).""")
