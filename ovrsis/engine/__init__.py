"""Training/evaluation engine: trainer (resume, param groups, clipping), launcher, set-up."""
from .launch import launch, report_user_errors
from .setup import run_preflight, setup_cfg
from .trainer import Trainer, build_param_groups, create_ddp_model, unwrap

__all__ = ["Trainer", "build_param_groups", "create_ddp_model", "launch", "report_user_errors", "run_preflight", "setup_cfg", "unwrap"]
