"""Prompt-template sets: ``MODEL.TEXT.TEMPLATE_SET`` names a registered set that replaces
``MODEL.TEXT.TEMPLATES`` (:data:`~ovrsis.modeling.registry.TEMPLATE_SET_REGISTRY`).

Built in: ``catseg`` (CAT-Seg's one template), ``openai_imagenet`` (CLIP's 80 ImageNet templates,
taken from ``open_clip.zero_shot_metadata``) and ``simple_imagenet`` (its 2-template subset). A project
registers its own: ``TEMPLATE_SET_REGISTRY.register(("a satellite image of a {}.", ...), "my_set")``.
"""
from __future__ import annotations

from typing import List

from detectron2.config import CfgNode
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from ..errors import ConfigError
from .registry import TEMPLATE_SET_REGISTRY

TEMPLATE_SET_REGISTRY.register(("A photo of a {} in the scene",), "catseg")
TEMPLATE_SET_REGISTRY.register(tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES), "openai_imagenet")
TEMPLATE_SET_REGISTRY.register(tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES), "simple_imagenet")


def prompt_templates(cfg: CfgNode) -> List[str]:
    """The P prompt templates of a config: the registered ``MODEL.TEXT.TEMPLATE_SET``, else
    ``MODEL.TEXT.TEMPLATES``.

    Raises:
        ConfigError: an unknown set, or a set that is empty or has a template without exactly one ``{}``.
    """
    name = cfg.MODEL.TEXT.TEMPLATE_SET
    if not name:
        return list(cfg.MODEL.TEXT.TEMPLATES)
    templates = [str(t) for t in TEMPLATE_SET_REGISTRY.get(name)]
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ConfigError(f"MODEL.TEXT.TEMPLATE_SET {name!r}: a set needs at least one template, each with one "
                          f"'{{}}' for the class name; got {templates[:3]}{' ...' if len(templates) > 3 else ''}")
    return templates
