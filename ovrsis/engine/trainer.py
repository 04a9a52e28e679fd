"""Training and evaluation loop on detectron2's DefaultTrainer, with the fixes ovrsis needs.

* ``--resume`` restores the optimizer state and the learning rate exactly (detectron2 0.6
  saves neither: its DefaultTrainer.state_dict omits the inner trainer's optimizer). The
  resolved config is saved in every checkpoint and compared on resume: solver keys changed
  since are listed and *applied* — the learning-rate schedule and each parameter group's lr and
  weight decay are rebuilt from the new values at the resumed iteration (:func:`config_changes`)
  — except ``SOLVER.OPTIMIZER`` and changes that regroup the parameters, which are refused.
  Nothing resumable: a warning, and training starts at iteration 0.
* DDP works for CPU models (no ``device_ids``) and can find unused parameters.
* ``MODEL.PRECISION`` on CUDA and CPU: the model autocasts itself (bf16 / fp16); fp16 steps add
  ``torch.amp.GradScaler`` and clip the *unscaled* gradients (:class:`PrecisionTrainer`);
  param groups as in the official code (CLIP lr × CLIP_MULTIPLIER, no weight decay on
  norms/embeddings) and full-model gradient-norm clipping.
* Evaluation sets each test dataset's vocabulary on the model before running it.
"""
from __future__ import annotations

import inspect
import itertools
import logging
import os
import time
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Type

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import OVRSISCheckpointer
from ..config import flatten_config
from ..errors import CheckpointError, ConfigError
from ..data import SemanticSegmentationMapper
from ..data.benchmarks import inference_from_config
from ..evaluation import OpenVocabSemSegEvaluator
from ..modeling.meta_arch import vocabulary_of
from ..modeling.precision import precision_from_config
from .perturbation_diagnostics import PerturbationDiagnostics, insert_before_writer

logger = logging.getLogger(__name__)

_NORM_TYPES = (
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm, torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d, torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)
_EMBEDDING_NAMES = ("positional_embedding", "class_embedding", "padding_tokens", "padding_guidance")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def build_param_groups(cfg: CfgNode, model: torch.nn.Module) -> List[Dict[str, Any]]:
    """Trainable parameters grouped by (lr, weight decay).

    CLIP parameters get ``BASE_LR × CLIP_MULTIPLIER`` (a trainable SAM encoder ``× SAM_MULTIPLIER``); norm layers ``WEIGHT_DECAY_NORM``;
    embeddings (nn.Embedding) ``WEIGHT_DECAY_EMBED`` — the official rules. Grouping equal
    hyper-parameters (instead of one group per tensor) changes nothing numerically.
    """
    groups: Dict[tuple, List[torch.nn.Parameter]] = OrderedDict()
    seen = set()
    for module_name, module in model.named_modules():
        for _, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = cfg.SOLVER.BASE_LR
            if module_name == "clip" or module_name.startswith("clip."):
                lr *= cfg.SOLVER.CLIP_MULTIPLIER
            elif module_name == "specialists.sam.encoder" or module_name.startswith("specialists.sam.encoder."):
                lr *= cfg.SOLVER.SAM_MULTIPLIER  # only trainable when MODEL.SAM.FROZEN is False
            wd = cfg.SOLVER.WEIGHT_DECAY
            if isinstance(module, _NORM_TYPES):
                wd = cfg.SOLVER.WEIGHT_DECAY_NORM
            elif isinstance(module, torch.nn.Embedding):
                wd = cfg.SOLVER.WEIGHT_DECAY_EMBED
            groups.setdefault((lr, wd), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


def with_full_model_clipping(optimizer_cls: Type[torch.optim.Optimizer], max_norm: float,
                             norm_type: float) -> Type[torch.optim.Optimizer]:
    """Optimizer class whose ``step`` first clips the gradient norm over *all* parameters."""

    class FullModelGradientClipping(optimizer_cls):
        def step(self, closure=None):
            params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure=closure)

    FullModelGradientClipping.__name__ = f"FullModelGradientClipping{optimizer_cls.__name__}"
    return FullModelGradientClipping


class PrecisionTrainer(SimpleTrainer):
    """detectron2's ``SimpleTrainer`` step at a model precision (``MODEL.PRECISION``), on CUDA and CPU.

    The model runs its own autocast region (``ovrsis/modeling/precision.py``), so bf16 and
    fp32 steps are plain steps. fp16 steps scale the loss with ``torch.amp.GradScaler(device
    type)`` (the current ``torch.amp`` API), *unscale the gradients before the optimizer step* —
    so full-model clipping inside ``optimizer.step`` (:func:`with_full_model_clipping`) acts on
    the true gradients — and skip the step when a gradient is inf/NaN (the scaler then lowers
    its scale). The scaler's state is part of :meth:`state_dict` (resume).
    """

    def __init__(self, model: torch.nn.Module, data_loader, optimizer: torch.optim.Optimizer, precision: str,
                 device_type: str) -> None:
        super().__init__(model, data_loader, optimizer)
        self.precision = precision
        self.grad_scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None

    def run_step(self) -> None:
        if self.grad_scaler is None:
            return super().run_step()
        assert self.model.training, "[PrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            losses, loss_dict = loss_dict, {"total_loss": loss_dict}
        else:
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.unscale_(self.optimizer)  # clipping in optimizer.step sees unscaled gradients
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])


RESUME_REFUSED_KEYS = ("SOLVER.OPTIMIZER",)  # the restored optimizer state would belong to another optimizer


def config_changes(saved: str, cfg: CfgNode) -> Dict[str, tuple]:
    """``{key: (value in the checkpoint's config, value now)}`` for every key that differs between
    ``saved`` (a checkpoint's ``config``, YAML) and ``cfg``; keys only one side has are included."""
    import yaml

    old = flatten_config(yaml.safe_load(saved) or {})
    new = flatten_config(yaml.safe_load(cfg.dump()) or {})
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


class Trainer(DefaultTrainer):
    """DefaultTrainer with ovrsis' model, data, optimizer, evaluator and checkpoint fixes."""

    def __init__(self, cfg: CfgNode) -> None:  # mirrors DefaultTrainer.__init__ with CPU-safe DDP
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, find_unused_parameters=cfg.DIST.FIND_UNUSED_PARAMETERS)
        self._trainer = PrecisionTrainer(model, data_loader, optimizer, precision_from_config(cfg),
                                         torch.device(cfg.MODEL.DEVICE).type)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = OVRSISCheckpointer.from_config(cfg, model, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ state (resume fix)
    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state.update(self._trainer.state_dict())  # optimizer
        state["config"] = self.cfg.dump()  # compared on --resume
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore iteration, hooks and optimizer; first compare the checkpoint's config with this
        run's: refused solver changes raise, the others are listed (and applied by
        :meth:`resume_or_load`)."""
        changes = config_changes(state["config"], self.cfg) if "config" in state else None
        solver = {k: v for k, v in (changes or {}).items() if k.startswith("SOLVER.")}
        described = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in solver.items())
        refused = [k for k in solver if k in RESUME_REFUSED_KEYS]
        if refused:
            raise CheckpointError(
                f"--resume: {', '.join(refused)} changed since the checkpoint ({described}); the saved optimizer "
                "state cannot continue under another optimizer. Resume with the saved value, or start a new run "
                "(another OUTPUT_DIR, MODEL.WEIGHTS = the checkpoint)")
        super().load_state_dict(state)
        if "optimizer" in state:
            try:
                self._trainer.load_state_dict(state)  # optimizer (and the fp16 gradient scaler)
            except ValueError as err:  # torch: parameter groups that do not match
                raise CheckpointError(
                    f"--resume: the checkpoint's optimizer state does not fit this run's parameter groups ({err}); "
                    f"solver keys changed since the checkpoint: {described or 'none'}. A change that regroups the "
                    "parameters (SOLVER.*_MULTIPLIER, WEIGHT_DECAY_*, MODEL.CLIP.FINETUNE) cannot be resumed: "
                    "resume with the saved values, or start a new run from the checkpoint's weights") from err
        else:
            logger.warning("Checkpoint has no optimizer state: the optimizer restarts from scratch")
        if changes is None:
            logger.warning("--resume: the checkpoint holds no config to compare with (saved by an older version); "
                           "the solver keys of this run apply")
        elif solver:
            logger.warning("--resume: solver keys changed since the checkpoint: %s. Applied from the resumed "
                           "iteration: the learning-rate schedule and every parameter group's lr and weight decay "
                           "are rebuilt from the new values", described)
        if changes and len(changes) > len(solver):
            others = [k for k in changes if not k.startswith("SOLVER.")]
            logger.info("--resume: other config keys changed since the checkpoint: %s", ", ".join(others))

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from ``OUTPUT_DIR`` (``resume``) or load ``MODEL.WEIGHTS``. After a resume the
        schedule is rebuilt from this run's solver keys at the resumed iteration (so a changed
        BASE_LR, MAX_ITER, schedule or weight decay all apply, consistently); when nothing was
        resumed, training starts at iteration 0."""
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if not (resume and self.checkpointer.resumed_from):
            self.iter = self.start_iter = 0
            return
        self.start_iter = self.iter + 1  # the checkpoint holds the iteration that had finished
        groups = build_param_groups(self.cfg, unwrap(self.model))
        if len(groups) != len(self.optimizer.param_groups):
            raise CheckpointError(f"--resume: this run has {len(groups)} parameter groups, the checkpoint's optimizer "
                                  f"{len(self.optimizer.param_groups)}: a change regrouped the parameters "
                                  "(SOLVER.*_MULTIPLIER, WEIGHT_DECAY_*); resume with the saved values")
        for group, new in zip(self.optimizer.param_groups, groups):
            group["initial_lr"], group["weight_decay"] = new["lr"], new["weight_decay"]
        self.scheduler = self.build_lr_scheduler(self.cfg, self.optimizer)  # base lrs: the new initial_lr
        self.scheduler.last_epoch = self.start_iter
        # the lr of the resumed iteration (also for an optimizer-less checkpoint)
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_lr()):
            group["lr"] = lr

    def build_hooks(self) -> List[Any]:
        """detectron2's hooks, plus the perturbation diagnostics when
        ``MODEL.PERTURBATION.DIAGNOSTICS_PERIOD`` > 0 (before the writer)."""
        hooks = super().build_hooks()
        period = self.cfg.MODEL.PERTURBATION.DIAGNOSTICS_PERIOD
        if period > 0:
            hooks = insert_before_writer(hooks, PerturbationDiagnostics(
                unwrap(self.model), period, unwrap(self.model).ignore_value))
        return hooks

    # ------------------------------------------------------------------ builders
    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        model = build_model(cfg)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("Model %s: %s parameters, %s trainable", cfg.MODEL.META_ARCHITECTURE, f"{total:,}", f"{trainable:,}")
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        groups = build_param_groups(cfg, model)
        if not groups:
            raise ConfigError(
                f"{cfg.MODEL.META_ARCHITECTURE} has no trainable parameter"
                + (" (a training-free model: evaluate it with --eval-only)"
                   if not getattr(model, "requires_weights", True) else " (check MODEL.CLIP.FINETUNE)"))
        name = cfg.SOLVER.OPTIMIZER.upper()
        if name == "ADAMW":
            optim_cls, kwargs = torch.optim.AdamW, {}
        elif name == "SGD":
            optim_cls, kwargs = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM}
        else:
            raise ValueError(f"SOLVER.OPTIMIZER must be ADAMW or SGD, got {cfg.SOLVER.OPTIMIZER!r}")
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if clip.ENABLED:
            if clip.CLIP_TYPE != "full_model":
                raise ValueError("SOLVER.CLIP_GRADIENTS.CLIP_TYPE: only 'full_model' is supported")
            optim_cls = with_full_model_clipping(optim_cls, clip.CLIP_VALUE, clip.NORM_TYPE)
        return optim_cls(groups, lr=cfg.SOLVER.BASE_LR, **kwargs)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg, mapper=SemanticSegmentationMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=SemanticSegmentationMapper(cfg, False, dataset_name))

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return OpenVocabSemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder,
                                        inference=inference_from_config(cfg))

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None) -> "OrderedDict[str, Dict]":
        """Evaluate every ``DATASETS.TEST`` dataset with its own vocabulary."""
        results: "OrderedDict[str, Dict]" = OrderedDict()
        for idx, name in enumerate(cfg.DATASETS.TEST):
            unwrap(model).set_vocabulary(vocabulary_of(name))
            loader = cls.build_test_loader(cfg, name)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
            if isinstance(evaluator, (list, tuple)):
                evaluator = DatasetEvaluators(evaluator)
            results[name] = inference_on_dataset(model, loader, evaluator)
        return results[next(iter(results))] if len(results) == 1 else results


def create_ddp_model(model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
    """DDP wrapper that also works for CPU models (detectron2 0.6 passes device_ids always)."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    # buffers are not re-broadcast every forward (detectron2's choice); newer torch names the switch
    # forward_sync_buffers and warns (FutureWarning, once per rank) about broadcast_buffers
    no_sync = ({"forward_sync_buffers": False}
               if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(model, device_ids=device_ids, **no_sync, **kwargs)
