"""Numerical precision of a model: one switch, ``MODEL.PRECISION`` (fp32 | bf16 | fp16).

Every meta-architecture reads it through :func:`precision_from_config` and runs its network
under :func:`autocast` (``torch.autocast`` with the model's own device type, so CUDA and CPU
alike); training, evaluation, ``Predictor``, the demo, scene prediction and the benchmarks all
build the model from the config and so get the precision without doing anything. Weights,
gradients and optimizer state stay fp32 (autocast casts per operation); fp16 training adds a
gradient scaler (:mod:`ovrsis.engine.trainer`).

What stays fp32 whatever the switch (the rule):

* losses: computed on fp32 logits with autocast off (:func:`full_precision`);
* model outputs: the scores a model returns (``sem_seg``, logits of ``predict_logits``) are
  fp32, and the sigmoid / softmax that turns logits into scores runs on fp32 logits;
* stitching: windows and tiles are accumulated in fp32 (``ovrsis.modeling.tiling``);
* a cosine that a large temperature multiplies before a softmax is computed in fp32 from
  the (autocast) features: SegEarth-OV's logits (scale 50; bf16 cosine: scores off by 0.035,
  fp32 cosine: 0.0023 on the tiny test model);
* inside the network, autocast's own per-device lists decide (on CUDA softmax, layer/group
  norm and the losses run in fp32; on CPU only the losses). The CAT-Seg family's cost volume
  (no temperature) is left to autocast: computing it in fp32 moved the tiny CAT-Seg model's
  bf16 whole-image scores from 0.0034 to 0.0031 off fp32 (OVRS: no gain), the rounding of the
  layers after it dominates (docs/performance.md, "Precision").

``fp32`` disables autocast inside the model, so a caller's own autocast region cannot change
a model configured for full precision.
"""
from __future__ import annotations

import logging
from typing import ContextManager, Dict, Optional

import torch

from ..errors import ConfigError

logger = logging.getLogger(__name__)

PRECISIONS: Dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str, key: str = "MODEL.PRECISION") -> str:
    """``name`` if it is one of :data:`PRECISIONS`; else a :class:`ConfigError` naming ``key``."""
    if name not in PRECISIONS:
        raise ConfigError(f"{key} must be one of {list(PRECISIONS)}, got {name!r}")
    return name


def precision_from_config(cfg) -> str:
    """``MODEL.PRECISION``, with the legacy ``SOLVER.AMP.ENABLED`` (detectron2's fp16 AMP)
    mapped to ``fp16`` (logged once per call). Raises :class:`ConfigError` for an unknown
    value or for AMP together with a different explicit precision."""
    name = check_precision(cfg.MODEL.PRECISION)
    if cfg.SOLVER.AMP.ENABLED:
        if name == "bf16":
            raise ConfigError("SOLVER.AMP.ENABLED (fp16) contradicts MODEL.PRECISION bf16: set only "
                              "MODEL.PRECISION (fp32 | bf16 | fp16)")
        if name == "fp32":
            logger.warning("SOLVER.AMP.ENABLED is read as MODEL.PRECISION fp16 (autocast + gradient scaler, CUDA "
                           "and CPU); set MODEL.PRECISION instead")
        name = "fp16"
    return name


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The region a model's network runs in: ``torch.autocast(device.type, dtype)`` for bf16 /
    fp16, autocast *disabled* for fp32."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return full_precision(device)
    return torch.autocast(device.type, dtype=dtype)


def full_precision(device: torch.device) -> ContextManager:
    """A region where autocast is off (fp32 losses and outputs inside an autocast region)."""
    return torch.autocast(device.type, enabled=False)


def set_tf32(enabled: bool) -> None:
    """CUDA TF32 for fp32 matmuls and cuDNN convolutions (``MODEL.TF32``; Ampere and newer).
    Process-wide; no effect on the CPU."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
