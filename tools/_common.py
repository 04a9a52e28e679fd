"""Shared pieces of ``tools/model_stats.py`` and ``tools/benchmark.py``: arguments, config, model."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import ovrsis  # noqa: F401  (compat shims before detectron2)
import ovrsis.modeling  # noqa: F401  (registers the meta-architecture and its parts)
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from ovrsis.checkpoint import OVRSISCheckpointer
from ovrsis.engine import setup_cfg

DEFAULT_CONFIG = "(none: built-in defaults, CAT-Seg ViT-B/16@384)"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--config-file, --input-size, --num-classes, --json and trailing KEY VALUE overrides."""
    parser.add_argument("--config-file", default="", metavar="FILE", help="ovrsis config (default: built-in defaults)")
    parser.add_argument("--input-size", type=parse_size, default=None, metavar="S|HxW",
                        help="input image size (default: MODEL.CLIP.IMAGE_SIZE, square)")
    parser.add_argument("--num-classes", type=int, default=15, metavar="T", help="vocabulary size (dummy names)")
    parser.add_argument("--json", default="", metavar="FILE", help="also write the numbers to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, detectron2 style, e.g. MODEL.DEVICE cpu")


def parse_size(text: str) -> Tuple[int, int]:
    """'384' → (384, 384); '512x640' → (512, 640) as (H, W)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected S or HxW with positive integers, got {text!r}")
    return int(parts[0]), int(parts[-1])


def load_cfg(config_file: str, opts: Sequence[str], load_weights: bool = False) -> CfgNode:
    """The project's config assembly; without ``load_weights`` every weight source is dropped
    (MODEL.CLIP.PRETRAINED and MODEL.WEIGHTS), so the model is randomly initialised offline."""
    no_weights = [] if load_weights else ["MODEL.CLIP.PRETRAINED", "", "MODEL.WEIGHTS", ""]
    return setup_cfg(config_file, list(opts) + no_weights)


def build(cfg: CfgNode) -> nn.Module:
    """The configured model in eval mode, with MODEL.WEIGHTS loaded when set."""
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        OVRSISCheckpointer.from_config(cfg, model, save_dir="").load(cfg.MODEL.WEIGHTS)
    return model.eval()


def dummy_vocabulary(num_classes: int) -> List[str]:
    """``num_classes`` distinct placeholder class names."""
    if num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1, got {num_classes}")
    return [f"class {i}" for i in range(num_classes)]


def input_size(cfg: CfgNode, size: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """The requested (H, W), defaulting to the CLIP input size."""
    return size or (cfg.MODEL.CLIP.IMAGE_SIZE, cfg.MODEL.CLIP.IMAGE_SIZE)


def write_json(path: str, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
