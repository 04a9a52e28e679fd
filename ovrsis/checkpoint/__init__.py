"""Checkpoint I/O, including official checkpoints of the CAT-Seg family."""
from .checkpointer import OVRSISCheckpointer
from .official import CATSEG, GSNET, LAYOUTS, RSKTSEG, OfficialLayout, detect_layout, register_layout

__all__ = ["CATSEG", "GSNET", "LAYOUTS", "RSKTSEG", "OVRSISCheckpointer", "OfficialLayout", "detect_layout",
           "register_layout"]
