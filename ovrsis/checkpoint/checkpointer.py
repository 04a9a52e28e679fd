"""Checkpoints: atomic saves, strict loads with one key report, official layouts converted on load.

* **Strict by default.** A checkpoint whose keys do not cover the model's own modules (or
  that holds keys the model lacks) is a :class:`~ovrsis.errors.CheckpointError` naming the
  config keys that decide those modules' shapes. ``MODEL.WEIGHTS_STRICT False`` allows a
  partial load (fine-tuning one method from another's checkpoint); the report is then a
  warning. Modules that loaded their own pretrained file and stay frozen (they set
  ``pretrained_from_file = True``, e.g. DINO from ``MODEL.DINO.WEIGHTS``) are not "missing".
* **Atomic saves.** A checkpoint is written to a temporary file in the same folder, flushed
  and fsync'ed, then renamed over the target; ``last_checkpoint`` likewise. A process killed
  mid-save leaves the previous files intact.
* **Unreadable files** (empty, truncated, not a checkpoint) are errors naming the file and
  its size; ``--resume`` skips an unreadable last checkpoint with a warning and resumes from
  the newest readable one; when nothing can be resumed it says so and the run starts at
  iteration 0 (:attr:`OVRSISCheckpointer.resumed_from` is None).

Checkpoint files are unpickled with ``weights_only=False`` (torch ≥ 2.6 refuses numpy objects
otherwise): only load files you trust, as with any pickle.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
import zipfile
from typing import Any, Dict, List, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys, _strip_prefix_if_present
from torch import nn

from ..errors import CheckpointError
from .official import detect_layout

logger = logging.getLogger(__name__)

# top-level module of a key → the config keys that decide its parameters (named in errors)
CONFIG_KEYS_OF_MODULE = {
    "clip": "MODEL.CLIP.ARCH, MODEL.CLIP.IMAGE_SIZE, MODEL.TEXT.TEMPLATES",
    "tap_pyramid": "MODEL.CLIP.GUIDANCE_LAYERS, MODEL.DECODER.GUIDANCE_DIMS",
    "aggregator": "MODEL.AGGREGATOR.* (NAME, NUM_LAYERS, HIDDEN_DIM, ...), MODEL.COST.ROTATIONS, MODEL.COST.FUSION",
    "decoder": "MODEL.DECODER.* (DIMS, GUIDANCE_PROJ_DIMS, GUIDANCE_ATTENTION, GUIDANCE_SOURCES)",
    "specialists": "the stream keys (MODEL.DINO.*, ...) and their WEIGHTS files",
}
_UNREADABLE = (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError)
_SHOWN = 12


def _size(path: str) -> str:
    try:
        return f"{os.path.getsize(path):,} bytes"
    except OSError:
        return "size unknown"


def read_checkpoint(path: str) -> Any:
    """``torch.load`` a trusted file on the CPU; raise :class:`CheckpointError` naming the file and
    its size when it is empty, truncated or not a torch file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was probably cut off while being "
                              "saved; use an earlier checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except _UNREADABLE as err:
        raise CheckpointError(f"checkpoint {path} ({_size(path)}) cannot be read: {type(err).__name__}: {err}. "
                              "The file is truncated or corrupt (e.g. a save was interrupted) or is not a "
                              "PyTorch checkpoint") from err


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write_text(text: str, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pretrained_prefixes(model: nn.Module) -> List[str]:
    """Key prefixes of submodules that loaded their own pretrained file and are frozen."""
    return [f"{name}." for name, m in model.named_modules()
            if name and getattr(m, "pretrained_from_file", False)]


def _checkpoint_number(path: str) -> int:
    match = re.search(r"(\d+)\.pth$", os.path.basename(path))
    if os.path.basename(path) == "model_final.pth":
        return 1 << 62
    return int(match.group(1)) if match else -1


class OVRSISCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with strict key checks, atomic saves, readable-file fallback on
    resume, and official CAT-Seg-family layouts converted on load.

    Args:
        model, save_dir, checkpointables: as detectron2's ``DetectionCheckpointer``.
        strict: missing/unexpected model keys are an error (``MODEL.WEIGHTS_STRICT``).
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, strict: bool = True, save_to_disk: Optional[bool] = None,
                 **checkpointables: Any) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.resumed_from: Optional[str] = None

    @classmethod
    def from_config(cls, cfg, model: nn.Module, save_dir: Optional[str] = None, **checkpointables: Any
                    ) -> "OVRSISCheckpointer":
        """Checkpointer saving to ``save_dir`` (default ``cfg.OUTPUT_DIR``), strict per ``MODEL.WEIGHTS_STRICT``."""
        return cls(model, cfg.OUTPUT_DIR if save_dir is None else save_dir, strict=cfg.MODEL.WEIGHTS_STRICT,
                   **checkpointables)

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        _atomic_write_text(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))

    # ------------------------------------------------------------------ resuming
    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """As detectron2's, but an unreadable last checkpoint is skipped (warning) for the
        newest readable ``model_*.pth`` in ``save_dir``, and :attr:`resumed_from` says which file
        was resumed (None: nothing was, the run starts at iteration 0 from ``path``, with a
        warning naming why when ``resume`` was asked for)."""
        self.resumed_from: Optional[str] = None
        if resume and self.has_checkpoint():
            for candidate in self._resume_candidates():
                try:
                    checkpoint = self._load_file(candidate)
                except CheckpointError as err:
                    logger.warning("--resume: skipping %s", err)
                    continue
                self.resumed_from = candidate
                return self._load_checkpoint(candidate, checkpoint, None)
            logger.warning("--resume: no readable checkpoint in %s: nothing was resumed; the run starts from "
                           "MODEL.WEIGHTS (%s) at iteration 0", self.save_dir, path or "none")
        elif resume:
            where = (f"{self.save_dir} does not exist" if not os.path.isdir(self.save_dir or ".")
                     else f"{self.save_dir} holds no checkpoint (no last_checkpoint file)")
            logger.warning("--resume: nothing to resume: %s (OUTPUT_DIR); the run starts from MODEL.WEIGHTS (%s) "
                           "at iteration 0", where, path or "none")
        return self.load(path, checkpointables=[])

    def _resume_candidates(self) -> List[str]:
        last = self.get_checkpoint_file()
        others = sorted((p for p in self.get_all_checkpoint_files() if p != last), key=_checkpoint_number,
                        reverse=True)
        return ([last] if last and os.path.isfile(last) else []) + others

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if not path:
            self.logger.info("No checkpoint given: the model keeps its initialisation")
            return {}
        if not os.path.isfile(path):
            local = self.path_manager.get_local_path(path)
            if not os.path.isfile(local):
                raise CheckpointError(f"checkpoint {path}: no such file")
            path = local
        return self._load_checkpoint(path, self._load_file(path), checkpointables)

    def _load_checkpoint(self, path: str, checkpoint: Dict[str, Any], checkpointables: Optional[List[str]]
                         ) -> Dict[str, Any]:
        self.logger.info("Loading checkpoint %s", path)
        self._current_file = path
        self._load_model(checkpoint)
        for key in self.checkpointables if checkpointables is None else checkpointables:
            if key in checkpoint:
                self.checkpointables[key].load_state_dict(checkpoint.pop(key))
        return checkpoint

    # ------------------------------------------------------------------ reading
    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            return super()._load_file(filename)
        loaded = read_checkpoint(filename)
        if isinstance(loaded, dict) and "model" not in loaded and loaded and all(
                torch.is_tensor(v) for v in loaded.values()):
            loaded = {"model": loaded}  # a bare state dict
        if not isinstance(loaded, dict) or not isinstance(loaded.get("model"), dict):
            raise CheckpointError(f"checkpoint {filename}: not a model checkpoint (expected a state dict or a dict "
                                  "with a 'model' state dict)")
        layout = detect_layout(loaded["model"])
        if layout is not None:
            converted, unmatched = layout.convert(loaded["model"])
            logger.info("%s: %s checkpoint detected, %d keys converted", filename, layout.name, len(converted))
            loaded["model"] = converted
            loaded["__unmatched__"] = unmatched  # reported as unexpected keys
        loaded.setdefault("matching_heuristics", False)
        return loaded

    def _load_model(self, checkpoint: Dict[str, Any]) -> _IncompatibleKeys:
        """Check shapes and keys first, report once, raise unless the load is complete or
        ``strict`` is off; only then copy the tensors in."""
        source = getattr(self, "_current_file", "checkpoint")
        state = checkpoint.pop("model")
        self._convert_ndarray_to_tensor(state)
        _strip_prefix_if_present(state, "module.")
        unmatched = list(checkpoint.pop("__unmatched__", []))
        own = self.model.state_dict()
        shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in state
                  if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
        if shapes:
            shown = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in shapes[:5])
            raise CheckpointError(
                f"checkpoint/config mismatch: {source} does not fit the config: {len(shapes)} tensors differ in shape ({shown}). "
                f"Check {self._config_keys(k for k, _, _ in shapes)}")
        exempt = tuple(pretrained_prefixes(self.model))
        missing = [k for k in own if k not in state and not k.startswith(exempt)]
        unexpected = [k for k in state if k not in own] + unmatched
        if missing or unexpected:
            lines = [f"Checkpoint key report for {source}: {len(missing)} model keys missing from the checkpoint, "
                     f"{len(unexpected)} checkpoint keys unknown to the model"]
            if missing:
                lines.append("  missing: " + ", ".join(missing[:_SHOWN]) + (" ..." if len(missing) > _SHOWN else ""))
            if unexpected:
                lines.append("  unexpected: " + ", ".join(unexpected[:_SHOWN])
                             + (" ..." if len(unexpected) > _SHOWN else ""))
            lines.append(f"  config keys to check: {self._config_keys(missing + unexpected)}")
            if self.strict:
                raise CheckpointError("\n".join(lines) + "\ncheckpoint/config mismatch: the checkpoint does not fit the config. To load it "
                                      "partially on purpose (e.g. fine-tuning from another method), set "
                                      "MODEL.WEIGHTS_STRICT False")
            logger.warning("\n".join(lines) + "\n  MODEL.WEIGHTS_STRICT is False: the missing tensors keep their "
                           "initialisation")
        else:
            logger.info("Checkpoint key report for %s: every model key loaded (%d)%s, no unknown key", source,
                        len(own) - sum(k.startswith(exempt) for k in own if exempt),
                        f" (frozen pretrained {', '.join(p[:-1] for p in exempt)} from their own files)"
                        if exempt and any(k.startswith(exempt) for k in own if k not in state) else "")
        self.model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        return _IncompatibleKeys(missing_keys=missing, unexpected_keys=unexpected, incorrect_shapes=[])

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        """Reported by :meth:`_load_model` already, in one place."""

    @staticmethod
    def _config_keys(keys) -> str:
        modules = []
        for key in keys:
            top = key.split(".", 1)[0]
            if top not in modules:
                modules.append(top)
        return "; ".join(f"{m}.* ← {CONFIG_KEYS_OF_MODULE.get(m, 'MODEL.*')}" for m in modules)
