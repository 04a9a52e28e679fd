"""Checkpoint I/O, including official checkpoints of the CAT-Seg family."""
from .checkpointer import OVRSISCheckpointer
from .official import CATSEG, GSNET, LAYOUTS, OfficialLayout, detect_layout

__all__ = ["CATSEG", "GSNET", "LAYOUTS", "OVRSISCheckpointer", "OfficialLayout", "detect_layout"]
