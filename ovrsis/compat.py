"""Detectron2 0.6 / numpy 2 / Pillow 10+ shims. Import this before any detectron2 module.

Why: the PyPI sdist of detectron2 0.6 ships without its compiled extension, and the
release predates Pillow 10 (``Image.LINEAR`` removed). Official detectron2 builds pass
through untouched. Nothing else belongs here.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import types
import warnings

from PIL import Image

if not hasattr(Image, "LINEAR"):  # removed in Pillow 10; detectron2 uses it as a default arg
    Image.LINEAR = Image.BILINEAR


def _install_c_placeholder() -> None:
    """Provide ``detectron2._C`` when the compiled extension is absent.

    ``default_setup`` → ``collect_env_info`` asks it for compiler/CUDA versions; the
    deformable-conv wrappers import it at module level. Any other attribute raises
    ``AttributeError`` so that feature probes (e.g. torchvision's ``__file__`` check) fail
    cleanly instead of finding a fake op.
    """
    if "detectron2._C" in sys.modules:
        return
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return  # detectron2 not installed: the caller's import will say so
    for location in spec.submodule_search_locations:
        try:
            import os

            if any(n.startswith("_C.") for n in os.listdir(location)):
                return  # a real compiled extension exists (official build)
        except OSError:
            continue
    module = types.ModuleType("detectron2._C")
    module.get_compiler_version = lambda: "none (ovrsis placeholder: no compiled ops)"
    module.get_cuda_version = lambda: "none"
    module.has_cuda = lambda: False

    def __getattr__(name: str):
        raise AttributeError(f"detectron2._C placeholder has no compiled op {name!r}")

    module.__getattr__ = __getattr__
    sys.modules["detectron2._C"] = module


class _DropMessages(logging.Filter):
    """Drop log records whose message holds one of ``texts``."""

    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def _filter_log_noise() -> None:
    """Notices printed on every command that ask nothing of the user: detectron2's "Config ... has
    no VERSION" (every ovrsis config is of the current version) and torch's "No CUDA runtime is
    found" (printed when CUDA_HOME exists on a machine without a GPU; CPU runs need no CUDA)."""
    logging.getLogger("detectron2.config.compat").addFilter(_DropMessages("has no VERSION"))
    logging.getLogger("torch.utils.cpp_extension").addFilter(_DropMessages("No CUDA runtime is found"))


def _filter_warnings() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"fvcore(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"detectron2(\..*)?")
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
    warnings.filterwarnings("ignore", message=r"Importing from timm\.models\.layers.*")


_install_c_placeholder()
_filter_warnings()
_filter_log_noise()
