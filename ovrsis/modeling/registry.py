"""Registries for the parts a config chooses: a method is a set of names, never a fork."""
from detectron2.utils.registry import Registry

AGGREGATOR_REGISTRY = Registry("OVRSIS_AGGREGATOR")
AGGREGATOR_REGISTRY.__doc__ = "Cost aggregation stacks: cost volume + guidance → (B, T, C, h, w) embedding."

DECODER_REGISTRY = Registry("OVRSIS_DECODER")
DECODER_REGISTRY.__doc__ = "Decoders: aggregated embedding + guidance → per-class logits (B, T, H, W)."

LOSS_HEAD_REGISTRY = Registry("OVRSIS_LOSS_HEAD")
LOSS_HEAD_REGISTRY.__doc__ = ("Training-only loss heads (MODEL.LOSS.HEADS): intermediate model state → extra named "
                              "losses added to the BCE; never run at inference.")
