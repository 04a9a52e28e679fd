"""Config assembly shared by train_net.py, eval scripts and tools."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..config import add_ovrsis_config
from ..data import register_datasets_from_config


def setup_cfg(config_file: str = "", opts: Sequence[str] = (), args: Optional[object] = None) -> CfgNode:
    """get_cfg + ovrsis keys + file + overrides; registers config-declared datasets.

    With ``args`` (from the argument parser) also runs detectron2's ``default_setup``:
    logging, the resolved config and environment saved to OUTPUT_DIR, seeding.
    """
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if not cfg.MODEL.DEVICE.startswith("cuda") and cfg.SOLVER.AMP.ENABLED:
        logging.getLogger(__name__).warning("SOLVER.AMP.ENABLED is ignored on %s (CUDA only)", cfg.MODEL.DEVICE)
        cfg.SOLVER.AMP.ENABLED = False
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("MODEL.DEVICE is cuda but no GPU is visible; pass MODEL.DEVICE cpu")
    register_datasets_from_config(cfg)
    cfg.freeze()
    if args is not None:
        default_setup(cfg, args)
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ovrsis", abbrev_name="ovrsis")
    else:  # programmatic use (tests, tools): seed as default_setup would
        seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    return cfg
