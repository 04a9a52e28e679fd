"""ovrsis: open-vocabulary remote-sensing image segmentation on Detectron2."""
from . import compat  # noqa: F401  (must run before detectron2 is imported)

__version__ = "0.1.0"
