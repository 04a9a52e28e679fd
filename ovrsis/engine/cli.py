"""Command lines with detectron2-style ``KEY VALUE`` config overrides, one rule for every entry point.

Overrides may stand anywhere after the script name, also before options:
``run_benchmark.py --suite s MODEL.DEVICE cpu --output out`` sets ``--output``; argparse's usual
``opts`` REMAINDER would swallow ``--output out`` as two more "overrides". A token is a config
key when it is upper-case and dotted (``MODEL.DEVICE``) or a top-level key of the ovrsis config
(``SEED``, ``OUTPUT_DIR``, ...); it and the next token form one pair. Everything else goes to argparse.
"""
from __future__ import annotations

import argparse
import re
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

_DOTTED_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


@lru_cache(maxsize=1)
def _top_level_keys() -> frozenset:
    from detectron2.config import get_cfg

    from ..config import add_ovrsis_config

    cfg = get_cfg()
    add_ovrsis_config(cfg)
    return frozenset(k for k in cfg.keys() if k.isupper())


def is_config_key(token: str) -> bool:
    """``MODEL.DEVICE``, ``SEED``: a config key; ``--output``, ``water``, ``P-B``: not."""
    return bool(_DOTTED_KEY.fullmatch(token)) or token in _top_level_keys()


def split_overrides(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``(arguments, overrides)``: every config key and the token after it are overrides, in order;
    the rest are the arguments, in order. A key without a value stays an (odd) override, which the
    config merge reports."""
    arguments: List[str] = []
    overrides: List[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        if is_config_key(tokens[i]):
            overrides += tokens[i:i + 2]
            i += 2
        else:
            arguments.append(tokens[i])
            i += 1
    return arguments, overrides


def parse_args_with_overrides(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                              dest: str = "opts") -> argparse.Namespace:
    """``parser.parse_args`` with the ``KEY VALUE`` overrides taken from anywhere in ``argv``
    (default ``sys.argv[1:]``) into ``args.<dest>`` (the ``opts`` of detectron2's
    ``default_argument_parser``, or of any parser with such a REMAINDER positional)."""
    import sys

    arguments, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    setattr(args, dest, list(getattr(args, dest, None) or []) + overrides)
    return args
