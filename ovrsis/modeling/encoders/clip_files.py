"""CLIP weight files: one reader for every config key that names one, and the activation check.

Keys that take a CLIP file (:data:`CLIP_FILE_KEYS`): ``MODEL.CLIP.PRETRAINED`` (the main CLIP,
:class:`~ovrsis.modeling.encoders.clip.CLIPEncoder`) and ``MODEL.RS_CLIP.WEIGHTS`` (the guidance
CLIP, :class:`~ovrsis.modeling.encoders.guidance_clip.GuidanceCLIPEncoder`). Formats read:

* open_clip state dicts (RemoteCLIP, GeoRSCLIP), or one wrapped under ``state_dict``/``model``
  with ``module.`` prefixes (open_clip training checkpoints such as SkyCLIP's ``epoch_20.pt``),
  read with ``weights_only=True``;
* OpenAI's TorchScript archives (``ViT-B-16.pt``, ``ViT-L-14.pt``, ...: the files the official
  repositories download), read with ``torch.jit.load``. Their state dict already uses open_clip's
  key names (open_clip's ``build_model_from_openai_state_dict`` loads it as is after dropping the
  three scalar entries :data:`OPENAI_ARCHIVE_META`), stored in fp16; the loaders cast to the
  model's dtype and load strictly (every missing, unexpected or mis-shaped key listed).

Activation: OpenAI CLIP was trained with QuickGELU, most open_clip checkpoints with GELU, and
open_clip's architecture name decides which one the model runs (``ViT-B-32`` vs
``ViT-B-32-quickgelu``) — a wrong choice runs without error and changes every output.
:func:`check_activation` refuses a disagreement it can prove (an OpenAI archive, or an open_clip
tag whose pretrained config records ``quick_gelu``) and warns loudly about one inferred from a
known file name (:data:`FILE_FAMILIES`).
"""
from __future__ import annotations

import logging
import math
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

from ...errors import ConfigError, check_path
from ...once import log_once

logger = logging.getLogger(__name__)

CLIP_FILE_KEYS = ("MODEL.CLIP.PRETRAINED", "MODEL.RS_CLIP.WEIGHTS")
OPENAI_ARCHIVE_META = ("input_resolution", "context_length", "vocab_size")

# (family, file-name pattern (lower case), activation its published loading code builds, source)
FILE_FAMILIES = (
    ("RemoteCLIP", r"remoteclip", "gelu",
     "likyoo/SegEarth-OV segearth_segmentor.py builds RemoteCLIP-ViT-B-32.pt / -L-14.pt with open_clip's "
     "ViT-B/32 / ViT-L-14 (GELU); RSKT-Seg's official code loads RemoteCLIP-ViT-B-32.pt into OpenAI's "
     "QuickGELU ViT-B/32 instead (configs/rsktseg reproduce that on purpose)"),
    ("GeoRSCLIP", r"rs5m|georsclip", "gelu",
     "likyoo/SegEarth-OV segearth_segmentor.py builds RS5M_ViT-B-32.pt / -L-14 / -H-14 with open_clip's "
     "ViT-B/32 / ViT-L-14 / ViT-H-14 (GELU)"),
    ("SkyCLIP", r"skyclip", "gelu",
     "likyoo/SegEarth-OV segearth_segmentor.py builds SkyCLIP_ViT_B32_*/epoch_20.pt and SkyCLIP_ViT_L14_* "
     "with open_clip's ViT-B/32 / ViT-L-14 (GELU)"),
)


@dataclass(frozen=True)
class CLIPFile:
    """Tensors of a CLIP file in open_clip's key layout; ``openai_archive``: read from an OpenAI
    TorchScript archive (meta entries dropped, tensors as stored: fp16)."""

    state: Dict[str, torch.Tensor]
    openai_archive: bool


def is_torchscript_archive(path: str) -> bool:
    """True for a TorchScript archive (a zip holding ``constants.pkl``, which ``torch.save`` files lack)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def read_clip_file(path: str, key: str) -> CLIPFile:
    """The tensors of the CLIP file ``path`` named by config key ``key``, in open_clip's layout.

    Raises:
        ConfigError: no such file.
        ValueError: the file is neither a TorchScript archive nor a state dict readable with
            ``weights_only=True`` (message names ``key`` and the file).
    """
    path = check_path(path, key, "file", "a CLIP checkpoint: an open_clip state dict or an OpenAI TorchScript archive")
    if is_torchscript_archive(path):
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but these files are TorchScript
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load.*")
            scripted = torch.jit.load(path, map_location="cpu")
        state = {k: v for k, v in scripted.state_dict().items() if k not in OPENAI_ARCHIVE_META}
        return CLIPFile(state, openai_archive=True)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with non-tensor objects
        raise ValueError(f"{key}: {path} is not a CLIP state dict readable with weights_only=True "
                         f"({type(e).__name__}: {e}); give an open_clip state dict (e.g. RemoteCLIP-ViT-B-32.pt) "
                         "or an OpenAI TorchScript archive (e.g. ViT-B-16.pt)") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{key}: {path} is not a CLIP state dict (got {type(loaded).__name__})")
    state = {(name[len("module."):] if name.startswith("module.") else name): value
             for name, value in loaded.items() if torch.is_tensor(value)}
    return CLIPFile(state, openai_archive=False)


def describe_vit(state: Mapping[str, torch.Tensor], prefix: str = "visual.") -> str:
    """'width W, N blocks, patch P, G×G positions' of a CLIP ViT state dict's image tower."""
    conv = state.get(prefix + "conv1.weight")
    if conv is None:
        return "no ViT image tower (no visual.conv1.weight)"
    blocks = {k.split(".")[3] for k in state if k.startswith(prefix + "transformer.resblocks.")}
    pos = state.get(prefix + "positional_embedding")
    grid = f", {math.isqrt(pos.shape[0] - 1)}² positions" if pos is not None else ""
    return f"width {conv.shape[0]}, {len(blocks)} blocks, patch {conv.shape[-1]}{grid}"


def model_activation(model: nn.Module) -> str:
    """``"quickgelu"`` if the built open_clip model's blocks use QuickGELU, else ``"gelu"``."""
    from open_clip.transformer import QuickGELU

    return "quickgelu" if any(isinstance(m, QuickGELU) for m in model.modules()) else "gelu"


def expected_activation(pretrained: str, arch: str, *, is_tag: bool = False,
                        openai_archive: bool = False) -> Optional[tuple[str, str, bool]]:
    """(activation, reason, certain) the weights ``pretrained`` (an open_clip tag when ``is_tag``,
    else a file path) were built with, or None when nothing is known. ``certain``: an OpenAI
    archive or an open_clip tag (its pretrained config records ``quick_gelu``); otherwise inferred
    from the file name (:data:`FILE_FAMILIES`)."""
    import open_clip

    if openai_archive:
        return "quickgelu", "an OpenAI TorchScript archive (OpenAI CLIP was trained with QuickGELU)", True
    if is_tag:
        cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        if not cfg:
            return None
        activation = "quickgelu" if cfg.get("quick_gelu", False) else "gelu"
        return activation, f"the open_clip tag {pretrained!r} (its pretrained config: {activation})", True
    name = Path(pretrained).as_posix().lower()
    for family, pattern, activation, source in FILE_FAMILIES:
        if re.search(pattern, name):
            return activation, f"a {family} file ({source})", False
    return None


def _suggest(arch: str, activation: str) -> str:
    import open_clip

    base = arch[: -len("-quickgelu")] if arch.endswith("-quickgelu") else arch
    candidate = base + "-quickgelu" if activation == "quickgelu" else base
    return f" (e.g. {candidate!r})" if candidate in open_clip.list_models() else ""


def check_activation(model: nn.Module, arch: str, arch_key: str, pretrained: str, weights_key: str, *,
                     is_tag: bool = False, openai_archive: bool = False) -> None:
    """Compare the activation of the built ``model`` (open_clip ``arch``, config key ``arch_key``)
    with the one its weights ``pretrained`` (config key ``weights_key``) were built with.

    Raises:
        ConfigError: a certain disagreement (OpenAI archive, open_clip tag).
    A disagreement inferred from the file name is logged as a warning naming both keys, once per run.
    """
    expected = expected_activation(pretrained, arch, is_tag=is_tag, openai_archive=openai_archive)
    if expected is None:
        return
    activation, reason, certain = expected
    built = model_activation(model)
    if built == activation:
        return
    message = (f"{weights_key} {pretrained!r} is {reason}, but {arch_key} {arch!r} builds {built} blocks: "
               f"every output changes. Set {arch_key} to the {activation} architecture{_suggest(arch, activation)}")
    if certain:
        raise ConfigError(message)
    log_once(logger, f"activation:{weights_key}:{pretrained}:{arch}", logging.WARNING,
             "ACTIVATION MISMATCH: %s, unless this reproduces an official build on purpose.", message)
