"""Checkpoint loading: trusted files, official layouts converted on load, a clear key report."""
from __future__ import annotations

import logging
from typing import Any, Dict

import torch
from detectron2.checkpoint import DetectionCheckpointer

from .official import detect_layout

logger = logging.getLogger(__name__)


class OVRSISCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that also reads official CAT-Seg-family checkpoints.

    Checkpoint files are loaded with ``weights_only=False`` (torch ≥ 2.6 refuses numpy
    objects otherwise): only load files you trust, as with any pickle.
    """

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            return super()._load_file(filename)
        with self.path_manager.open(filename, "rb") as f:
            loaded = torch.load(f, map_location="cpu", weights_only=False)
        if isinstance(loaded, dict) and "model" not in loaded and all(torch.is_tensor(v) for v in loaded.values()):
            loaded = {"model": loaded}  # a bare state dict
        if not isinstance(loaded, dict) or "model" not in loaded:
            raise ValueError(f"{filename}: not a checkpoint (expected a state dict or a dict with 'model')")
        layout = detect_layout(loaded["model"])
        if layout is not None:
            converted, unmatched = layout.convert(loaded["model"])
            logger.info("%s: %s checkpoint detected, %d keys converted", filename, layout.name, len(converted))
            if unmatched:
                logger.warning("%s: %d keys have no conversion rule and are ignored: %s", filename,
                               len(unmatched), ", ".join(unmatched[:20]) + (" ..." if len(unmatched) > 20 else ""))
            loaded = {"model": converted}
        loaded.setdefault("matching_heuristics", False)
        return loaded

    def _load_model(self, checkpoint: Dict[str, Any]):
        """Load; a shape mismatch is a checkpoint/config mismatch and an error, missing or
        unexpected keys are reported in one place."""
        incompatible = super()._load_model(checkpoint)
        if incompatible.incorrect_shapes:
            shown = "; ".join(f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in incompatible.incorrect_shapes[:5])
            raise ValueError(
                f"checkpoint/config mismatch: {len(incompatible.incorrect_shapes)} tensors differ in shape ({shown}). "
                "Does the config (MODEL.CLIP.ARCH, MODEL.AGGREGATOR.*, MODEL.TEXT.TEMPLATES) match the checkpoint?")
        model_keys = set(self.model.state_dict().keys())
        missing = [k for k in incompatible.missing_keys if k in model_keys]
        if missing or incompatible.unexpected_keys:
            logger.warning("Checkpoint key report: %d missing, %d unexpected (see the lists above)",
                           len(missing), len(incompatible.unexpected_keys))
        else:
            logger.info("Checkpoint key report: every model key loaded, no unexpected key")
        return incompatible
