"""The perturbation stage between the encoders and the cost volume (Pi-Seg's SPMs).

The segmentor calls :meth:`PerturbationStage.perturb_text` on the text embeddings and
:meth:`PerturbationStage.perturb_image` on the dense CLIP features that form the cost volume.
Both are the identity in evaluation mode and when their module is not configured, so a model
without ``MODEL.PERTURBATION.*`` (CAT-Seg, OVRS, GSNet) and every model at evaluation computes
exactly what it would without the stage. Guidance (appearance map, decoder taps) is taken
before the image perturbation and stays clean; the perturbed text feeds the cost volume and
the class (text) guidance, as in the official code (P.2 of the spec).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from detectron2.config import CfgNode
from torch import nn

from ..registry import PERTURBATION_REGISTRY
from .image_spm import ImageSPM
from .noise import NOISE_FAMILIES, check_noise, sample_noise_like
from .text_spm import TextSPM

__all__ = ["PerturbationStage", "TextSPM", "ImageSPM", "NOISE_FAMILIES", "check_noise", "sample_noise_like",
           "build_perturbation"]


@PERTURBATION_REGISTRY.register()
class PerturbationStage(nn.Module):
    """Optional Text-SPM and Image-SPM, active only while training.

    With ``record=True`` the last training call keeps detached copies of the clean and the
    perturbed dense features and of the text they were scored against (``last``), for the
    training diagnostics hook (:mod:`ovrsis.engine.perturbation_diagnostics`).
    """

    def __init__(self, text: Optional[TextSPM] = None, image: Optional[ImageSPM] = None) -> None:
        super().__init__()
        self.text = text
        self.image = image
        self.record = False
        self.last: Dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg: CfgNode, dim: int) -> "PerturbationStage":
        """The Text-SPM and Image-SPM ``MODEL.PERTURBATION.TEXT/IMAGE`` enable (Pi-Seg).

        Raises ValueError for an unknown noise family, Student-t df ≤ 2, a reduction outside
        [1, dim] or a negative ``TEXT.INIT_STD``.
        """
        p = cfg.MODEL.PERTURBATION
        text = TextSPM(dim, init_std=p.TEXT.INIT_STD, noise=p.TEXT.NOISE, student_t_df=p.TEXT.STUDENT_T_DF) \
            if p.TEXT.ENABLED else None
        image = ImageSPM(dim, reduction=p.IMAGE.REDUCTION, noise=p.IMAGE.NOISE, student_t_df=p.IMAGE.STUDENT_T_DF) \
            if p.IMAGE.ENABLED else None
        return cls(text, image)

    @property
    def active(self) -> bool:
        """Whether a call now changes anything (training mode and at least one module)."""
        return self.training and (self.text is not None or self.image is not None)

    def perturb_text(self, text: torch.Tensor) -> torch.Tensor:
        """Text embeddings (T, P, C), L2-normalised → T̂ = T + ε_t (Text-SPM) in training, else T."""
        if not self.training or self.text is None:
            return text
        return self.text(text)

    def perturb_image(self, dense: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Dense CLIP features (B, C, h, w) (the cost's image side, before normalisation) and the
        (perturbed) text (T, P, C) → x + ε_v (Image-SPM) in training, else ``dense`` itself.

        Image-SPM sees detached inputs: queries the features, keys/values the prompt-mean text,
        one token per class (official ``text[0].mean(dim=1).detach()``).
        """
        if not self.training or self.image is None:
            if self.record and self.training:
                self.last = {"clean": dense.detach(), "perturbed": dense.detach(), "text": text.detach()}
            return dense
        out = dense + self.image(dense.detach(), text.mean(dim=1).detach())
        if self.record:
            self.last = {"clean": dense.detach(), "perturbed": out.detach(), "text": text.detach()}
        return out


def build_perturbation(cfg: CfgNode, dim: int) -> PerturbationStage:
    """The stage ``MODEL.PERTURBATION.NAME`` names (:data:`~ovrsis.modeling.registry.PERTURBATION_REGISTRY`),
    for embeddings of width ``dim`` (CLIP's)."""
    return PERTURBATION_REGISTRY.get(cfg.MODEL.PERTURBATION.NAME).from_config(cfg, dim)
