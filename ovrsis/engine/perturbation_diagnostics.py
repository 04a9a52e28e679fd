"""Training hook logging Pi-Seg's perturbation diagnostics to the run's metrics (metrics.json,
TensorBoard) every ``MODEL.PERTURBATION.DIAGNOSTICS_PERIOD`` iterations, summed over processes.

Replaces the official CSV/JSONL files under ``OUTPUT_DIR/delta_corr_logs``; the statistics are
:func:`ovrsis.modeling.perturbation.diagnostics.shift_stats`, scalars named ``perturbation/<stat>``.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..modeling.perturbation.diagnostics import correlation_shift_sums, shift_stats


class PerturbationDiagnostics(HookBase):
    """Asks the model's perturbation stage to keep its last inputs/outputs on the due iterations,
    captures the batch's label maps, and writes the statistics to the event storage."""

    def __init__(self, model: torch.nn.Module, period: int, ignore_value: int) -> None:
        """``model``: the unwrapped segmentor (with a ``perturbation`` stage); ``period`` ≥ 1."""
        if period < 1:
            raise ValueError(f"MODEL.PERTURBATION.DIAGNOSTICS_PERIOD must be >= 1 to log, got {period}")
        if not hasattr(model, "perturbation"):
            raise ValueError("perturbation diagnostics need a model with a perturbation stage")
        self.model = model
        self.stage = model.perturbation
        self.period = period
        self.ignore_value = ignore_value
        self._targets: Optional[torch.Tensor] = None
        self._due = False
        model.register_forward_pre_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: Any) -> None:
        if self._due and module.training and args and isinstance(args[0], list):
            self._targets = torch.stack([x["sem_seg"] for x in args[0]])

    def before_step(self) -> None:
        self._due = (self.trainer.iter + 1) % self.period == 0
        self.stage.record = self._due
        self.stage.last = {}

    def after_step(self) -> None:
        if not self._due:
            return
        last, targets = self.stage.last, self._targets
        self.stage.record, self.stage.last, self._targets, self._due = False, {}, None, False
        local = torch.zeros(9, dtype=torch.float64)
        if last and targets is not None:
            b = targets.shape[0]  # the unrotated views come first
            local = correlation_shift_sums(last["clean"][:b], last["perturbed"][:b], last["text"],
                                           targets.to(last["clean"].device), self.ignore_value).cpu()
        if comm.get_world_size() > 1:
            device = torch.device("cuda", comm.get_local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
            local = local.to(device)
            dist.all_reduce(local)
            local = local.cpu()
        if local[4] > 0:
            self.trainer.storage.put_scalars(
                **{f"perturbation/{k}": v for k, v in shift_stats(local).items()}, smoothing_hint=False)


def insert_before_writer(hooks: List[HookBase], hook: HookBase) -> List[HookBase]:
    """Put ``hook`` before detectron2's PeriodicWriter (so its scalars are written the same
    iteration), or last when this process has no writer."""
    from detectron2.engine.hooks import PeriodicWriter
    index = next((i for i, h in enumerate(hooks) if isinstance(h, PeriodicWriter)), len(hooks))
    return hooks[:index] + [hook] + hooks[index:]
