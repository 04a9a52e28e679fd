"""Training-free open-vocabulary segmentation: SegEarth-OV (SimFeatUp, global-bias removal) and
the CLIP baselines it compares with (vanilla CLIP, MaskCLIP, SCLIP, ClearCLIP)."""
from .last_block import LAST_BLOCK_ATTENTION, run_last_block
from .postprocess import class_probabilities, expand_queries, threshold_to_background
from .segmentor import TrainingFreeSegmentor
from .simfeatup import SimFeatUp, load_simfeatup_checkpoint, simfeatup_checkpoint

__all__ = [
    "LAST_BLOCK_ATTENTION", "SimFeatUp", "TrainingFreeSegmentor", "class_probabilities", "expand_queries",
    "load_simfeatup_checkpoint", "run_last_block", "simfeatup_checkpoint", "threshold_to_background",
]
