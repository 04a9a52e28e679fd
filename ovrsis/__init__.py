"""ovrsis: open-vocabulary remote-sensing image segmentation on Detectron2."""
from .runtime import apply_cpu_defaults

apply_cpu_defaults()  # OpenMP reads its environment when torch loads: before any torch import
from . import compat  # noqa: E402,F401  (must run before detectron2 is imported)

__version__ = "0.1.0"

__all__ = ["Predictor"]


def __getattr__(name: str):
    """``ovrsis.Predictor`` imported on first use, so ``import ovrsis`` stays light."""
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'ovrsis' has no attribute {name!r}")
