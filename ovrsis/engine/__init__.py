"""Training/evaluation engine: trainer (resume, param groups, clipping), launcher, set-up."""
from .launch import launch
from .setup import setup_cfg
from .trainer import Trainer, build_param_groups, create_ddp_model, unwrap

__all__ = ["Trainer", "build_param_groups", "create_ddp_model", "launch", "setup_cfg", "unwrap"]
