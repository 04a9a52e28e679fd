"""Model parts, each registered so a config can pick it."""
from .aggregation.catseg import CATSegAggregator
from .aggregation.efficient import EfficientAggregator
from .decoders.guided_upsampling import GuidedUpsamplingDecoder
from .encoders.clip import CLIPEncoder
from .encoders.dino import DINOEncoder
from .meta_arch import CostAggregationSegmentor
from .registry import AGGREGATOR_REGISTRY, DECODER_REGISTRY
from ..training_free import segmentor as _training_free  # noqa: F401  (registers TrainingFreeSegmentor)

__all__ = [
    "AGGREGATOR_REGISTRY", "DECODER_REGISTRY", "CATSegAggregator", "CLIPEncoder", "EfficientAggregator", "CostAggregationSegmentor",
    "DINOEncoder", "GuidedUpsamplingDecoder", 
]
