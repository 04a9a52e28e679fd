"""The training-free segmentor: SegEarth-OV and the CLIP baselines it compares with.

Registered as the meta-architecture ``TrainingFreeSegmentor``. It shares the project's CLIP
encoder (``ovrsis.modeling.encoders.clip``: image trunk, text tower and text cache), the window
geometry of ``ovrsis.modeling.tiling`` and the evaluator; it adds what training-free
segmentation needs: a last-block variant (:mod:`.last_block`), SimFeatUp (:mod:`.simfeatup`),
global-bias removal and the SegEarth-OV post-processing (:mod:`.postprocess`).

Pipeline per image (SegEarth-OV, protocol P-C; likyoo/SegEarth-OV ``segearth_segmentor.py``):
long side → ``TEST.TILED.LONG_SIDE`` (448); windows ``TILE`` (224) every ``STRIDE`` (112), each
CLIP-normalised and zero-padded (centred) to a multiple of the patch size; per window the
modified last block gives patch features and a CLS token (after ln_post/proj); SimFeatUp
upsamples the features to pixels (or the logits are bilinearly resized); logits = normalised
features · text − λ · (normalised CLS · text); padding cut off; windows averaged; bilinear to
the original size; softmax of 50 × logits over all sub-prompt queries; per class the max over
its sub-prompts; pixels whose top probability is below ``PROB_THD`` go to ``BG_IDX``.
Several images per call and several windows per CLIP batch (the official code takes one).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ..data.vocabulary import check_class_names, load_class_names
from ..errors import ConfigError
from ..modeling.encoders.clip import CLIPEncoder
from ..modeling.meta_arch import vocabulary_of
from ..modeling.precision import autocast, check_precision, full_precision, precision_from_config
from ..modeling.text_templates import prompt_templates
from ..modeling.tiling import SceneScoring, TilingSettings, window_average
from ..runtime import adapt_threads
from .last_block import LAST_BLOCK_ATTENTION, run_last_block
from .postprocess import class_probabilities, expand_queries, threshold_to_background
from .simfeatup import SimFeatUp, load_simfeatup_checkpoint, upsampling_steps

logger = logging.getLogger(__name__)


def centred_padding(height: int, width: int, multiple: int) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding to the next multiple, split as SegEarth-OV's
    ``compute_padsize`` does (the smaller half left/top)."""
    def split(size: int) -> Tuple[int, int]:
        extra = (-size) % multiple
        return extra // 2, extra - extra // 2
    left, right = split(width)
    top, bottom = split(height)
    return left, right, top, bottom


@META_ARCH_REGISTRY.register()
class TrainingFreeSegmentor(nn.Module):
    """Zero-shot CLIP segmentor without training (SegEarth-OV, vanilla CLIP, MaskCLIP, SCLIP,
    ClearCLIP). Evaluation only; ``sem_seg`` per image is (K, H, W) class probabilities (max
    over sub-prompts) with below-threshold pixels one-hot at ``bg_idx``, so argmax is the
    official prediction."""

    requires_weights = False  # CLIP (and SimFeatUp) load their own files; no MODEL.WEIGHTS needed

    @configurable
    def __init__(self, *, clip: CLIPEncoder, upsampler: Optional[SimFeatUp], pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], test_classes: Sequence[str], attention: str = "segearth",
                 residual: bool = False, ffn: bool = False, bias_lambda: float = 0.3, logit_scale: float = 50.0,
                 prob_thd: float = 0.0, bg_idx: int = 0, class_prompts: Sequence[str] = (),
                 tiling: TilingSettings = TilingSettings(224, 112, 8, 0, 448), precision: str = "fp32") -> None:
        super().__init__()
        if attention not in LAST_BLOCK_ATTENTION:
            raise ValueError(f"MODEL.TRAINING_FREE.ATTENTION must be one of {sorted(LAST_BLOCK_ATTENTION)}, "
                             f"got {attention!r}")
        if tiling.class_chunk:
            raise ValueError("TEST.TILED.CLASS_CHUNK must be 0 for the training-free segmentor: its softmax runs "
                             "over every query at once")
        self.clip = clip
        self.upsampler = upsampler
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.attention = attention
        self.residual = residual
        self.ffn = ffn
        self.bias_lambda = float(bias_lambda)
        self.logit_scale = float(logit_scale)
        self.prob_thd = float(prob_thd)
        self.bg_idx = int(bg_idx)
        self.class_prompts = list(class_prompts)
        self.tiling = tiling
        self.precision = check_precision(precision)  # MODEL.PRECISION (ovrsis/modeling/precision.py)
        self.test_classes: List[str] = []
        if test_classes:
            self.set_vocabulary(test_classes)
        for param in self.parameters():  # nothing is trained here (SimFeatUp: tools/train_simfeatup.py)
            param.requires_grad_(False)
        self.eval()

    @classmethod
    def from_config(cls, cfg) -> Dict:
        m, t = cfg.MODEL, cfg.MODEL.TRAINING_FREE
        if cfg.TEST.INFERENCE_MODE != "tiled":
            raise ConfigError("TrainingFreeSegmentor runs SegEarth-OV's sliding window: set TEST.INFERENCE_MODE tiled "
                             f"(TEST.TILED: TILE 224, STRIDE 112, LONG_SIDE 448 = protocol P-C), got "
                             f"{cfg.TEST.INFERENCE_MODE!r}")
        clip = CLIPEncoder(
            m.CLIP.ARCH, pretrained=m.CLIP.PRETRAINED, image_size=m.CLIP.IMAGE_SIZE, finetune="none",
            guidance_layers=(), dense_last_block=False, templates=prompt_templates(cfg), synonyms="first",
            cache_text=m.TEXT.CACHE, allow_download=m.CLIP.ALLOW_DOWNLOAD, pos_embed_resize=m.CLIP.POS_EMBED_RESIZE)
        upsampler = None
        if t.SIMFEATUP:
            upsampler = SimFeatUp(clip.embed_dim, steps=upsampling_steps(clip.patch_size))
            if t.SIMFEATUP_WEIGHTS:
                load_simfeatup_checkpoint(upsampler, t.SIMFEATUP_WEIGHTS)
            else:
                logger.warning("MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS is empty: SimFeatUp has random weights")
        class_prompts = load_class_names(t.CLASS_FILE, "MODEL.TRAINING_FREE.CLASS_FILE") if t.CLASS_FILE else []
        return {
            "clip": clip, "upsampler": upsampler, "pixel_mean": m.PIXEL_MEAN, "pixel_std": m.PIXEL_STD,
            "test_classes": vocabulary_of(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else class_prompts,
            "attention": t.ATTENTION, "residual": t.RESIDUAL, "ffn": t.FFN, "bias_lambda": t.BIAS_LAMBDA,
            "logit_scale": t.LOGIT_SCALE, "prob_thd": t.PROB_THD, "bg_idx": t.BG_IDX,
            "class_prompts": class_prompts, "tiling": TilingSettings.from_config(cfg.TEST.TILED),
            "precision": precision_from_config(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def train(self, mode: bool = True) -> "TrainingFreeSegmentor":
        """Always in evaluation mode: nothing here is trained (SimFeatUp trains on its own,
        ``tools/train_simfeatup.py``)."""
        return super().train(False)

    # ------------------------------------------------------------------ vocabulary
    def set_vocabulary(self, class_names: Sequence[str], train: bool = False) -> None:
        """Classes to segment, in label-id order. With ``MODEL.TRAINING_FREE.CLASS_FILE`` the
        file's entries (sub-prompts) replace the names id by id, so their counts must agree."""
        if train:
            raise ValueError("TrainingFreeSegmentor is not trained: it has no training vocabulary")
        names = check_class_names(class_names, "vocabulary") if len(class_names) else []
        if self.class_prompts:
            if len(names) != len(self.class_prompts):
                raise ValueError(
                    f"MODEL.TRAINING_FREE.CLASS_FILE holds {len(self.class_prompts)} classes but the dataset has "
                    f"{len(names)} ({names}): the file's lines must follow the dataset's label ids")
            names = list(self.class_prompts)
        queries, owner = expand_queries(names)
        if not 0 <= self.bg_idx < len(names):
            raise ValueError(f"MODEL.TRAINING_FREE.BG_IDX {self.bg_idx} is not a class index of {names}")
        self.test_classes = names
        self.queries = queries
        self.query_class = owner

    def text_features(self) -> torch.Tensor:
        """(Q, C) query embeddings: per query, the normalised template embeddings averaged and
        renormalised (SegEarth-OV / OpenAI zero-shot recipe). Cached by the encoder."""
        return F.normalize(self.clip.encode_text(self.queries).mean(dim=1), dim=-1)

    # ------------------------------------------------------------------ one batch of windows
    def window_logits(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised windows (N, 3, H, W), sides multiples of the patch size, and text (Q, C)
        → logits (N, Q, H, W): cosine of (upsampled) patch features and text, minus
        λ · cosine of the window's CLS token and text."""
        x, (gh, gw) = self.clip.last_block_input(images)
        block = self.clip.visual.transformer.resblocks[-1]
        tokens = self.clip.project_tokens(run_last_block(block, x, self.attention, self.residual, self.ffn))
        n, c = tokens.shape[0], tokens.shape[-1]
        features = tokens[:, 1:].transpose(1, 2).reshape(n, c, gh, gw)
        if self.upsampler is not None:
            features = self.upsampler(features, images)
        with full_precision(images.device):  # cosine in fp32: 50x logit scale (docs/performance.md, "Precision")
            text = text.float()
            logits = torch.einsum("nchw,qc->nqhw", F.normalize(features.float(), dim=1), text)
            if self.bias_lambda:
                cls_logits = F.normalize(tokens[:, 0].float(), dim=-1) @ text.T
                logits = logits - self.bias_lambda * cls_logits[:, :, None, None]
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def score_windows(self, tiles: torch.Tensor, queries: Sequence[str]) -> torch.Tensor:
        """Raw windows (N, 3, h, w) (0–255 RGB) → logits (N, Q, h, w): normalise, pad centred to a
        multiple of the patch size, score, cut the padding off."""
        images = (tiles.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std
        h, w = images.shape[-2:]
        left, right, top, bottom = centred_padding(h, w, self.clip.patch_size)
        if left or right or top or bottom:
            images = F.pad(images, (left, right, top, bottom))
        adapt_threads(self.device)
        with autocast(self.precision, self.device):
            logits = self.window_logits(images, self.text_features())
        return logits[:, :, top:top + h, left:left + w].float()

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def query_logits(self, image: torch.Tensor, output_size: Tuple[int, int]) -> torch.Tensor:
        """One raw image (3, H, W) → window-averaged query logits (Q, *output_size)."""
        averaged = window_average(image, self.score_windows, self.queries, self.tiling)
        return F.interpolate(averaged[None], size=output_size, mode="bilinear", align_corners=False)[0]

    @torch.no_grad()
    def predict(self, image: torch.Tensor, output_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """One raw image (3, H, W) → (K, H', W') scores (see the class docstring)."""
        if not self.test_classes:
            raise ValueError("empty vocabulary: call set_vocabulary() or register the test dataset's classes")
        return self.class_scores(self.query_logits(image, tuple(output_size or image.shape[-2:])))

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Window-averaged query logits (Q, H, W) → class scores (K, H, W): softmax over the queries
        at ``logit_scale``, each class its best query, then the background threshold (SegEarth-OV's
        ``postprocess_result``)."""
        probs = class_probabilities(logits, self.query_class, len(self.test_classes), self.logit_scale)
        return threshold_to_background(probs, self.prob_thd, self.bg_idx)

    def scene_scoring(self) -> SceneScoring:
        """Streamed scenes (:func:`ovrsis.scene.run_scene`) blend the windows' query logits as
        mmseg's slide inference averages them, then :meth:`class_scores`: with
        ``TEST.TILED.LONG_SIDE 0`` the scene's labels equal :meth:`predict`'s at the stored
        resolution. Raises ValueError without a vocabulary."""
        if not self.test_classes:
            raise ValueError("empty vocabulary: call set_vocabulary() before scoring a scene")
        return SceneScoring(lambda tiles, class_names: self.score_windows(tiles, self.queries),
                            channels=len(self.queries), finish=self.class_scores)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """detectron2 inputs (``image`` (3, H, W) RGB 0–255, optional ``height``/``width``) →
        ``[{"sem_seg": (K, height, width)}]``."""
        outputs = []
        for x in batched_inputs:
            size = (int(x.get("height", x["image"].shape[-2])), int(x.get("width", x["image"].shape[-1])))
            outputs.append({"sem_seg": self.predict(x["image"], size)})
        return outputs
