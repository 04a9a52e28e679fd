"""The one meta-architecture of the CAT-Seg family: encoders → cost → aggregation → decoder.

A method is a config choosing the registered parts. Also owns the inference protocols:
whole image (CLIP input squashed to its size; optional official padding distortion) and the
official sliding window (P-B).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from ..data.mappers import loss_ignore_value
from ..data.vocabulary import check_class_names
from ..runtime import adapt_threads
from . import loss_heads as _loss_heads  # noqa: F401  (registers the loss heads)
from .cost.rotation import check_rotations, fuse_rotation_costs, fused_channels, rotate_batch, unrotate
from .cost.volume import cosine_cost, scatter_selected, select_top_classes
from .decoders.guided_upsampling import TapPyramid
from .encoders.clip import CLIPEncoder
from .encoders.specialist import build_specialists, check_guidance_sources, resample_to_grid
from .inference import Protocol, build_protocols, builtin_protocols, check_protocol
from .losses import per_class_bce
from .perturbation import PerturbationStage, build_perturbation
from .precision import autocast, check_precision, full_precision, precision_from_config
from .registry import AGGREGATOR_REGISTRY, DECODER_REGISTRY, LOSS_HEAD_REGISTRY
from .text_templates import prompt_templates
from .tiling import SceneScoring, TilingSettings, tiled_probabilities

logger = logging.getLogger(__name__)


def vocabulary_of(dataset_name: str) -> List[str]:
    """The class names a model scores on a registered dataset: its ``prompt_classes`` where it
    declares them (GSNet's sets evaluate one class fewer than they register), else ``stuff_classes``."""
    meta = MetadataCatalog.get(dataset_name)
    return list(meta.get("prompt_classes", None) or meta.get("stuff_classes", None) or [])


@META_ARCH_REGISTRY.register()
class CostAggregationSegmentor(nn.Module):
    """Open-vocabulary segmentor scoring any vocabulary given at run time.

    Training uses ``train_classes``; evaluation uses ``test_classes`` (set per dataset by
    :meth:`set_vocabulary`). Outputs ``sem_seg`` per image: (T, H, W) sigmoid scores.
    """

    @configurable
    def __init__(self, *, clip: CLIPEncoder, tap_pyramid: Optional[TapPyramid], aggregator: nn.Module, decoder: nn.Module,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], train_classes: Sequence[str],
                 test_classes: Sequence[str], max_classes: int = 256, rotations: Sequence[int] = (0,),
                 rotation_fusion: str = "stack", ignore_value: int = 255,
                 ignore_as_negative: bool = True, inference_mode: str = "whole",
                 slide_window: int = 384, slide_overlap: float = 0.333, slide_canvas: Sequence[int] = (640, 640),
                 slide_global_view: bool = True, stretch_padding: bool = False, size_divisibility: int = 32,
                 tiling: TilingSettings = TilingSettings(), specialists: Optional[nn.ModuleDict] = None,
                 guidance_sources: Sequence[str] = ("clip",), protocols: Optional[Dict[str, Protocol]] = None,
                 perturbation: Optional[PerturbationStage] = None, appearance_source: str = "clip",
                 loss_heads: Optional[nn.ModuleDict] = None, precision: str = "fp32") -> None:
        super().__init__()
        # every registered inference protocol (ovrsis.modeling.inference): inference_mode may be switched later
        self.protocols = dict(protocols) if protocols is not None else builtin_protocols()
        check_protocol(self.protocols, inference_mode)
        if inference_mode == "slide":
            stride = int(slide_window * (1 - slide_overlap))
            if stride <= 0 or any(s < slide_window or (s - slide_window) % stride for s in slide_canvas):
                raise ValueError(
                    f"TEST.SLIDE: windows of {slide_window} at stride {stride} (overlap {slide_overlap}) do not "
                    f"tile the canvas {tuple(slide_canvas)} exactly; uncovered pixels would be NaN. Choose "
                    "CANVAS = WINDOW + k * stride (official: 640 = 384 + 256)")
        self.clip = clip
        self.tap_pyramid = tap_pyramid
        self.aggregator = aggregator
        self.decoder = decoder
        # frozen specialist encoders (GSNet's DINO): extra cost volumes and decoder guidance
        self.specialists = specialists if specialists is not None else nn.ModuleDict()
        self.guidance_sources = check_guidance_sources(guidance_sources, self.specialists, decoder)
        if ("clip" in self.guidance_sources) != (tap_pyramid is not None):
            raise ValueError("CLIP tap projections (tap_pyramid) are needed exactly when 'clip' is a decoder guidance source")
        with_features = ["clip"] + [n for n, s in self.specialists.items() if getattr(s, "feature_dim", 0)]
        if appearance_source not in with_features:
            raise ValueError(f"MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_SOURCE {appearance_source!r} is not a built "
                             f"feature source; available: {with_features}")
        self.appearance_source = appearance_source
        # training-only loss heads (MODEL.LOSS.HEADS, e.g. AerOSeg's semantic back-projection)
        self.loss_heads = loss_heads if loss_heads is not None else nn.ModuleDict()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.train_classes = list(train_classes)
        self.test_classes = list(test_classes)
        self.max_classes = max_classes
        self._top_k_logged: set = set()  # vocabularies whose top-k selection was logged
        self.rotations = check_rotations(rotations, rotation_fusion)
        self.rotation_fusion = rotation_fusion
        self.ignore_value = ignore_value
        self.ignore_as_negative = ignore_as_negative
        self.inference_mode = inference_mode
        self.slide_window = slide_window
        self.slide_overlap = slide_overlap
        self.slide_canvas = tuple(slide_canvas)
        self.slide_global_view = slide_global_view
        self.stretch_padding = stretch_padding
        self.size_divisibility = size_divisibility
        self.tiling = tiling
        # training-only perturbation of the cost's inputs (Pi-Seg SPMs); identity at evaluation
        self.perturbation = perturbation if perturbation is not None else PerturbationStage()
        self.precision = check_precision(precision)  # MODEL.PRECISION (ovrsis/modeling/precision.py)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        m = cfg.MODEL
        clip = CLIPEncoder(
            m.CLIP.ARCH, pretrained=m.CLIP.PRETRAINED, image_size=m.CLIP.IMAGE_SIZE, finetune=m.CLIP.FINETUNE,
            guidance_layers=m.CLIP.GUIDANCE_LAYERS, dense_last_block=m.CLIP.DENSE_LAST_BLOCK,
            checkpoint_activations=m.CLIP.CHECKPOINT_ACTIVATIONS,
            templates=prompt_templates(cfg), synonyms=m.TEXT.SYNONYMS, cache_text=m.TEXT.CACHE,
            allow_download=m.CLIP.ALLOW_DOWNLOAD, pos_embed_resize=m.CLIP.POS_EMBED_RESIZE)
        resolution = (clip.grid_size, clip.grid_size)
        if len(m.CLIP.GUIDANCE_LAYERS) != len(m.DECODER.GUIDANCE_DIMS):
            raise ValueError("MODEL.CLIP.GUIDANCE_LAYERS and MODEL.DECODER.GUIDANCE_DIMS must have equal length")
        cost_channels = fused_channels(len(m.COST.ROTATIONS), len(clip.templates), m.COST.ROTATION_FUSION)
        specialists = build_specialists(cfg, clip_image_size=clip.image_size, clip_grid=clip.grid_size,
                                        text_dim=clip.embed_dim)
        specialist_channels = [len(clip.templates) for s in specialists.values() if s.has_cost]
        feature_dims = {"clip": clip.embed_dim,
                        **{n: s.feature_dim for n, s in specialists.items() if getattr(s, "feature_dim", 0)}}
        appearance = m.AGGREGATOR.APPEARANCE_GUIDANCE_SOURCE
        if appearance not in feature_dims:
            raise ValueError(f"MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_SOURCE {appearance!r}: no such feature source; "
                             f"available: {sorted(feature_dims)} (enable its stream, e.g. MODEL.SAM.ENABLED)")
        # the appearance-guidance width is passed only when it is not CLIP's (aggregators default to clip_dim)
        appearance_dim = {} if appearance == "clip" else {"appearance_dim": feature_dims[appearance]}
        aggregator = AGGREGATOR_REGISTRY.get(m.AGGREGATOR.NAME).from_config(
            cfg, cost_channels=[cost_channels, *specialist_channels] if specialist_channels else cost_channels,
            clip_dim=clip.embed_dim, resolution=resolution, **appearance_dim)
        decoder = DECODER_REGISTRY.get(m.DECODER.NAME).from_config(cfg, in_dim=m.AGGREGATOR.HIDDEN_DIM)
        train_classes = vocabulary_of(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else []
        test_classes = vocabulary_of(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else []
        loss_heads = nn.ModuleDict({
            name: LOSS_HEAD_REGISTRY.get(name).from_config(cfg, in_dim=m.AGGREGATOR.HIDDEN_DIM,
                                                           feature_dims=feature_dims, train_classes=train_classes)
            for name in m.LOSS.HEADS})
        return {
            "clip": clip,
            "tap_pyramid": (TapPyramid(clip.width, m.DECODER.GUIDANCE_DIMS, scales=(2, 4))
                            if "clip" in m.DECODER.GUIDANCE_SOURCES else None),
            "aggregator": aggregator,
            "decoder": decoder,
            "pixel_mean": m.PIXEL_MEAN,
            "pixel_std": m.PIXEL_STD,
            "train_classes": train_classes,
            "test_classes": test_classes,
            "max_classes": m.COST.MAX_CLASSES,
            "rotations": m.COST.ROTATIONS,
            "rotation_fusion": m.COST.ROTATION_FUSION,
            "ignore_value": loss_ignore_value(cfg),
            "ignore_as_negative": m.LOSS.IGNORE_AS_NEGATIVE,
            "inference_mode": cfg.TEST.INFERENCE_MODE,
            "slide_window": cfg.TEST.SLIDE.WINDOW,
            "slide_overlap": cfg.TEST.SLIDE.OVERLAP,
            "slide_canvas": cfg.TEST.SLIDE.CANVAS,
            "slide_global_view": cfg.TEST.SLIDE.GLOBAL_VIEW,
            "stretch_padding": cfg.TEST.WHOLE.STRETCH_PADDING,
            "size_divisibility": cfg.TEST.WHOLE.SIZE_DIVISIBILITY,
            "tiling": TilingSettings.from_config(cfg.TEST.TILED),
            "specialists": specialists,
            "guidance_sources": m.DECODER.GUIDANCE_SOURCES,
            "protocols": build_protocols(cfg),
            "perturbation": build_perturbation(cfg, clip.embed_dim),
            "appearance_source": appearance,
            "loss_heads": loss_heads,
            "precision": precision_from_config(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def set_vocabulary(self, class_names: Sequence[str], train: bool = False) -> None:
        """Choose the classes to segment (evaluation by default, training with ``train=True``)."""
        if len(class_names) == 0:
            raise ValueError("empty vocabulary: no class names to segment")
        names = check_class_names(class_names, "vocabulary")  # one spelling per class (ovrsis.data.vocabulary)
        if train:
            self.train_classes = names
        else:
            self.test_classes = names

    # ------------------------------------------------------------------ core
    def cost_volume(self, clip_images: torch.Tensor, text: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Cost (B, P', T, g, g) of CLIP-normalised images (B, 3, S, S) against text (T, P, C),
        plus the unrotated pass's dense map (B, C, g, g) and guidance taps."""
        b = clip_images.shape[0]
        dense_all, taps_all = self.clip.encode_image(rotate_batch(clip_images, self.rotations))
        dense, taps = dense_all[:b], [t[:b] for t in taps_all]  # guidance: the unrotated pass
        dense_all = self.perturbation.perturb_image(dense_all, text)  # the cost's image side only
        if len(self.rotations) == 1:
            return cosine_cost(dense_all, text), dense, taps
        views = unrotate(F.normalize(dense_all, dim=1), self.rotations, b)  # (B, R, C, g, g)
        return fuse_rotation_costs(cosine_cost(views, text), self.rotation_fusion), dense, taps

    def predict_logits(self, images: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """CLIP-normalised images (B, 3, H, W) → fp32 logits (B, T, 4g, 4g). CLIP sees them resized to
        its input size (S, S), each specialist stream at its own size, both from these images. The
        network runs at ``precision`` (MODEL.PRECISION), on the CPU with the intra-op threads the other
        processes leave free (:func:`ovrsis.runtime.adapt_threads`)."""
        adapt_threads(self.device)
        with autocast(self.precision, self.device):
            return self._predict(images, class_names)[0].float()

    def _predict(self, images: torch.Tensor, class_names: Sequence[str]) -> Tuple[torch.Tensor, Dict[str, object]]:
        """:meth:`predict_logits` (without the precision region: callers open it) plus the state
        the loss heads read: ``embedding`` (B, T', C, g, g) over the T' ≤ T selected classes,
        ``features`` (dense maps by source), ``images`` (the CLIP input)."""
        clip_images = self._to_clip_input(images)
        text = self.perturbation.perturb_text(self.clip.encode_text(class_names))  # (T, P, C), normalised
        cost, dense, taps = self.cost_volume(clip_images, text)
        cost, text_sel, idx = select_top_classes(cost, text, self.max_classes)
        if idx is not None and tuple(class_names) not in self._top_k_logged:
            self._top_k_logged.add(tuple(class_names))
            logger.info("%d classes exceed MODEL.COST.MAX_CLASSES=%d: each image keeps its top %d classes by "
                        "cost (the official rule); the others get logit -100", len(class_names), self.max_classes,
                        self.max_classes)
        guidance = {"clip": self.tap_pyramid(taps)} if self.tap_pyramid is not None else {}
        features = {"clip": dense}
        extra_costs = []
        for name, stream in self.specialists.items():  # unrotated images; costs over the selected classes
            out = stream(images, text_sel)
            if out.cost is not None:
                extra_costs.append(out.cost)
            if out.guidance:
                guidance[name] = out.guidance
            if out.features is not None:
                features[name] = out.features
        appearance = resample_to_grid(features[self.appearance_source], dense.shape[-2:])
        embedding = self.aggregator(cost, appearance, text_sel, extra_costs)
        logits = self.decoder(embedding, [guidance[s] for s in self.guidance_sources])
        state = {"embedding": embedding, "features": features, "images": clip_images}
        return scatter_selected(logits, idx, len(class_names)), state

    def _to_clip_input(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.clip.image_size, self.clip.image_size)
        if tuple(images.shape[-2:]) == size:
            return images
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: List[Dict]) -> object:
        if self.training:
            return self._forward_train(batched_inputs)
        classes = self.test_classes
        if not classes:
            raise ValueError("empty vocabulary: call set_vocabulary() or register the test dataset's classes")
        infer = self.protocols[self.inference_mode]  # TEST.INFERENCE_MODE (INFERENCE_PROTOCOL_REGISTRY)
        return [{"sem_seg": infer(self, x, classes)} for x in batched_inputs]

    def _forward_train(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        if not self.train_classes:
            raise ValueError("empty vocabulary: the training dataset registers no classes")
        images = ImageList.from_tensors([self._normalize(x["image"]) for x in batched_inputs], 0).tensor
        targets = torch.stack([x["sem_seg"].to(self.device) for x in batched_inputs])
        adapt_threads(self.device)
        with autocast(self.precision, self.device):
            logits, state = self._predict(images, self.train_classes)
            with full_precision(self.device):  # the loss in fp32 (precision.py's rule)
                logits = F.interpolate(logits.float(), size=targets.shape[-2:], mode="bilinear", align_corners=False)
                losses = {"loss_sem_seg": per_class_bce(logits, targets, self.ignore_value, self.ignore_as_negative)}
            for head in self.loss_heads.values():  # training-only heads (MODEL.LOSS.HEADS); their losses: autocast's fp32 list
                losses.update(head(state))
        return {name: loss.float() for name, loss in losses.items()}

    # ------------------------------------------------------------------ inference protocols
    def _output_size(self, x: Dict, default: Tuple[int, int]) -> Tuple[int, int]:
        return int(x.get("height", default[0])), int(x.get("width", default[1]))

    @torch.no_grad()
    def _inference_whole(self, x: Dict, classes: Sequence[str]) -> torch.Tensor:
        """Whole image squashed to the CLIP size. With ``stretch_padding`` the official P-A path
        (cat_seg_model.py + detectron2's ``sem_seg_postprocess``): the image is padded to a
        multiple of ``size_divisibility``, and the (4g, 4g) output map is cropped to the
        *unpadded image's* size in pixels (a no-op for images larger than the map) before the
        resize — the padded map is stretched onto the image, misaligned unless the size is such
        a multiple."""
        image = self._normalize(x["image"]).unsqueeze(0)
        h, w = image.shape[-2:]
        if self.stretch_padding:
            image = ImageList.from_tensors([image[0]], self.size_divisibility).tensor
        probs = self.predict_logits(image, classes).sigmoid()
        if self.stretch_padding:
            probs = probs[..., :h, :w]
        return F.interpolate(probs, size=self._output_size(x, (h, w)), mode="bilinear", align_corners=False)[0]

    @torch.no_grad()
    def score_tiles(self, tiles: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """The tile scorer of the tiled protocols (:data:`ovrsis.modeling.tiling.TileScorer`): raw
        tiles (B, 3, h, w) in the image's 0..255 range → sigmoid probabilities (B, T, 4g, 4g)."""
        return self.predict_logits(self._normalize(tiles), class_names).sigmoid()

    def scene_scoring(self) -> SceneScoring:
        """Streamed scenes (:func:`ovrsis.scene.run_scene`) blend :meth:`score_tiles`' probabilities."""
        return SceneScoring(self.score_tiles)

    @torch.no_grad()
    def _inference_tiled(self, x: Dict, classes: Sequence[str]) -> torch.Tensor:
        """Overlapping tiles at the mapper's scale, batched, stitched on the CPU (ovrsis.modeling.tiling)."""
        return tiled_probabilities(x["image"], self.score_tiles, classes, self._output_size(x, x["image"].shape[-2:]),
                                   self.tiling)

    @torch.no_grad()
    def _inference_slide(self, x: Dict, classes: Sequence[str]) -> torch.Tensor:
        """Official P-B: squash to the canvas, unfold windows (+ one global view), one batch,
        sigmoid, fold-average, average with the global view, resize to the original size."""
        kernel = self.slide_window
        stride = int(kernel * (1 - self.slide_overlap))
        canvas = self.slide_canvas
        raw = x["image"].to(self.device, torch.float32).unsqueeze(0)  # resized before normalising, as official
        h, w = raw.shape[-2:]
        resized = F.interpolate(raw, size=canvas, mode="bilinear", align_corners=False)
        tiles = F.unfold(resized, kernel_size=kernel, stride=stride)  # (1, 3·k·k, L)
        tiles = tiles[0].T.reshape(-1, 3, kernel, kernel)
        num_tiles = tiles.shape[0]
        if self.slide_global_view:
            whole = F.interpolate(raw, size=(kernel, kernel), mode="bilinear", align_corners=False)
            tiles = torch.cat([tiles, whole], dim=0)
        clip_in = self._normalize(tiles)
        probs = F.interpolate(self.predict_logits(clip_in, classes), size=(kernel, kernel),
                              mode="bilinear", align_corners=False).sigmoid()
        t = probs.shape[1]
        tile_probs = probs[:num_tiles].reshape(num_tiles, -1).T.unsqueeze(0)  # (1, T·k·k, L)
        summed = F.fold(tile_probs, canvas, kernel_size=kernel, stride=stride)
        counts = F.fold(torch.ones_like(tile_probs[:, : kernel * kernel]), canvas, kernel_size=kernel, stride=stride)
        out = summed / counts
        if self.slide_global_view:
            out = (out + F.interpolate(probs[num_tiles:], size=canvas, mode="bilinear", align_corners=False)) / 2
        out = out.view(1, t, *canvas)
        return F.interpolate(out, size=self._output_size(x, (h, w)), mode="bilinear", align_corners=False)[0]
