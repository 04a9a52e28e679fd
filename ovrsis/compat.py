"""Detectron2 0.6 / numpy 2 / Pillow 10+ shims. Import this before any detectron2 module.

Why: the PyPI sdist of detectron2 0.6 ships without its compiled extension, and the
release predates Pillow 10 (``Image.LINEAR`` removed). Official detectron2 builds pass
through untouched. Nothing else belongs here.
"""
from __future__ import annotations

import importlib.util
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


def _filter_warnings() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"fvcore(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"detectron2(\..*)?")
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
    warnings.filterwarnings("ignore", message=r"Importing from timm\.models\.layers.*")


_install_c_placeholder()
_filter_warnings()
