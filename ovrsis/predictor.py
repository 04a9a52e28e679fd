"""``Predictor``: segment one image with any vocabulary (detectron2's ``DefaultPredictor`` for ovrsis).

    from ovrsis import Predictor
    predictor = Predictor("configs/quickstart.yaml", "output/quickstart/model_final.pth", device="cpu")
    result = predictor.predict("scene.tif", ["water", "tree, forest", "building"])
    result.labels          # (H, W) int64 class ids in the vocabulary's order
    result.probabilities   # (T, H, W) float32 per-class scores, on the CPU

The image goes through the evaluation path exactly: the one raster reader
(:mod:`ovrsis.data.raster`: band selection and value scaling from ``INPUT.RASTER`` or a
:class:`~ovrsis.data.raster.RasterSettings` given per call), the test mapper's resize
(``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``; ``0`` keeps the stored resolution), then the model's
own inference protocol (``TEST.INFERENCE_MODE`` whole / slide / tiled, or ``inference_mode=``),
with the output resized to the image's stored size — so predictions equal what evaluation
scores. Works with any registered meta-architecture that offers ``set_vocabulary(names)`` and
returns ``[{"sem_seg": (T, H, W)}]`` at evaluation. The vocabulary is set only when it changes;
text embeddings are cached per vocabulary by the encoder (``MODEL.TEXT.CACHE``).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from . import modeling  # noqa: F401  (registers the meta-architectures)
from .checkpoint import OVRSISCheckpointer
from .data.mappers import SemanticSegmentationMapper
from .data.raster import RasterImage, RasterInfo, RasterSettings, convert, read_raster
from .data.vocabulary import VocabularySpec, load_class_names
from .engine.setup import check_config_paths, merge_overrides, setup_cfg
from .errors import ConfigError, close_names
from .imports import import_modules
from .modeling.precision import set_tf32
from .modeling.registry import INFERENCE_PROTOCOL_REGISTRY
from .modeling.tiling import TilingSettings, tile_progress

if TYPE_CHECKING:
    from .scene import SceneOptions, SceneResult

logger = logging.getLogger(__name__)



@dataclass
class Prediction:
    """One image's result.

    Attributes:
        probabilities: (T, H, W) float32 CPU tensor, the model's per-class scores at the stored size.
        labels: (H, W) int64 array, ``argmax`` over classes (as the evaluator scores it).
        class_names: the T vocabulary entries, in id order.
        image: (H, W, 3) uint8 RGB the model saw (before its resize), for drawing.
        info: the file's :class:`~ovrsis.data.raster.RasterInfo` (CRS, transform, profile) or
            ``None`` for an in-memory array.
        valid: (H, W) bool, False at the image's no-data pixels (declared value, mask band,
            alpha mask; :func:`~ovrsis.data.raster.valid_pixels`), or ``None`` when all hold data.
            ``labels`` and ``probabilities`` there are the model's guesses on zeros: writers
            mark them no-data (:mod:`ovrsis.export`).
    """

    probabilities: torch.Tensor
    labels: np.ndarray
    class_names: list
    image: np.ndarray
    info: Optional[RasterInfo] = None
    valid: Optional[np.ndarray] = None


class Predictor:
    """Build a model from a config, load weights, predict single images with any vocabulary."""

    def __init__(self, config: Union[str, CfgNode], weights: Optional[str] = None, device: Optional[str] = None,
                 inference_mode: Optional[str] = None, opts: Sequence[str] = ()) -> None:
        """
        Args:
            config: a YAML config path or a config node (cloned, never modified).
            weights: checkpoint to load (strictly, ``MODEL.WEIGHTS_STRICT``); default ``MODEL.WEIGHTS``.
                Without any, the model is randomly initialised and a warning says so.
            device: ``cpu`` / ``cuda`` / ``cuda:1``; default ``MODEL.DEVICE``.
            inference_mode: ``whole`` | ``slide`` | ``tiled`` overriding ``TEST.INFERENCE_MODE``.
            opts: further ``KEY VALUE`` config overrides.

        Raises:
            ConfigError: a missing config or weights file, an unknown key, a bad inference mode.
            CheckpointError: weights that do not fit the model.
        """
        overrides = list(opts)
        if weights is not None:
            overrides += ["MODEL.WEIGHTS", weights]
        if device is not None:
            overrides += ["MODEL.DEVICE", device]
        if inference_mode is not None:
            overrides += ["TEST.INFERENCE_MODE", inference_mode]
        if isinstance(config, CfgNode):
            cfg = config.clone()
            cfg.defrost()
            merge_overrides(cfg, overrides)
            cfg.IMPORTS = import_modules(cfg.IMPORTS)  # the config's own parts (ovrsis.imports)
            if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
                raise ConfigError("MODEL.DEVICE is cuda but no GPU is visible; pass device='cpu'")
            check_config_paths(cfg)
            cfg.freeze()
        else:
            cfg = setup_cfg(config, overrides)
        modes = INFERENCE_PROTOCOL_REGISTRY.names()  # after IMPORTS: a project's protocols too
        if cfg.TEST.INFERENCE_MODE not in modes:
            raise ConfigError(f"inference mode must be one of {modes}, got {cfg.TEST.INFERENCE_MODE!r}"
                              f"{close_names(cfg.TEST.INFERENCE_MODE, modes)}")
        self.cfg = cfg
        set_tf32(cfg.MODEL.TF32)  # MODEL.PRECISION acts inside the model; TF32 is a process flag
        self.model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            OVRSISCheckpointer.from_config(cfg, self.model, save_dir="").load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("Predictor: no weights (MODEL.WEIGHTS is empty): the model is randomly initialised")
        mapper = SemanticSegmentationMapper(cfg, is_train=False)
        self.resize = mapper.augmentations  # the test mapper's ResizeShortestEdge
        self.image_format = mapper.image_format
        self.raster = RasterSettings.from_config(cfg.INPUT.RASTER)
        self._vocabulary: Optional[tuple] = None

    @property
    def inference_mode(self) -> str:
        return self.cfg.TEST.INFERENCE_MODE

    def set_vocabulary(self, class_names: VocabularySpec) -> list:
        """Check the names (one rule: :func:`~ovrsis.data.vocabulary.load_class_names`; a list
        or a ``.txt``/``.json`` path) and hand them to the model if they changed. Returns them."""
        names = load_class_names(class_names, "class names")
        if tuple(names) != self._vocabulary:
            self.model.set_vocabulary(names)
            self._vocabulary = tuple(names)
        return names

    def read_image(self, path: str, raster: Optional[RasterSettings] = None) -> RasterImage:
        """The file through the one raster path: uint8 RGB, valid-pixel mask and info."""
        array, info = read_raster(path)
        return convert(array, info, raster or self.raster)

    def predict_scene(self, scene: str, class_names: VocabularySpec, output: str,
                      options: Optional["SceneOptions"] = None, raster: Optional[RasterSettings] = None,
                      raster_stats: Optional[tuple] = None, progress: bool = True, part: tuple = (0, 1)
                      ) -> "SceneResult":
        """Segment a whole scene of any size into files, streaming (:mod:`ovrsis.scene`).

        The scene is scored at its stored resolution with the ``TEST.TILED`` tiles, batches and
        blending, panel by panel, so memory does not grow with the scene; on a scene that fits in
        memory the labels equal :meth:`predict` with ``inference_mode="tiled"`` and
        ``INPUT.MIN_SIZE_TEST 0``. Writes ``STEM_labels.tif`` (COG) and, per ``options``,
        probabilities, polygons, a quick-look and scene metrics into ``output``; resumes a killed
        run and skips a finished one.

        Args:
            scene: any GDAL raster (GeoTIFF, COG, JPEG 2000, VRT, ...).
            class_names: the vocabulary (list, or a ``.txt``/``.json`` path).
            output: output folder.
            options: :class:`~ovrsis.scene.SceneOptions` (default: labels and quick-look only).
            raster: band selection and scaling, default ``INPUT.RASTER``.
            raster_stats: shared ``percentile_dataset`` statistics over several scenes.
            progress: tqdm bar with Mpx/s and ETA.
            part: ``(rank, world)`` when every process of a distributed job calls this for the same
                scene to share its panels (:func:`ovrsis.scene.run_scene`).

        Returns:
            :class:`~ovrsis.scene.SceneResult` (paths, size, seconds, peak memory, metrics).

        Raises:
            ConfigError: a model without scene scoring, ``TEST.TILED.LONG_SIDE`` set, or outputs of
                another config/vocabulary in ``output``.
            RasterError: an unreadable scene or label raster.
        """
        from .scene import SceneOptions, run_scene
        from .scene.state import file_identity

        names = self.set_vocabulary(class_names)
        scoring = getattr(self.model, "scene_scoring", None)
        if scoring is None:
            raise ConfigError(f"{type(self.model).__name__} offers no scene scoring (scene_scoring(), "
                              "ovrsis.modeling.tiling.SceneScoring); streamed scenes need a model that scores the "
                              "tiles of TEST.TILED")
        identity = {"config": self.cfg.dump(), "weights": file_identity(self.cfg.MODEL.WEIGHTS)}
        return run_scene(scoring(), names, scene, output, TilingSettings.from_config(self.cfg.TEST.TILED),
                         raster or self.raster, options or SceneOptions(), identity, raster_stats=raster_stats,
                         progress=progress, part=part)

    @torch.no_grad()
    def predict(self, image: Union[str, np.ndarray], class_names: VocabularySpec,
                raster: Optional[RasterSettings] = None, progress: Optional[Any] = None) -> Prediction:
        """Segment one image.

        Args:
            image: a file path (any raster format; bands and scaling per ``raster``) or an array
                (H, W, C): uint8 RGB as is, other dtypes / band counts through ``raster``.
            class_names: the vocabulary (list, or a ``.txt``/``.json`` path); entries may hold
                comma-separated sub-prompts.
            raster: band selection and scaling, default ``INPUT.RASTER`` of the config.
            progress: optional ``callback(done, total)`` called after each batch of tiles of the
                tiled protocols (e.g. a tqdm bar's updater).

        Returns:
            :class:`Prediction` at the image's stored size.

        Raises:
            RasterError: an unreadable image or one needing a band/scaling choice.
            ConfigError: a bad vocabulary.
        """
        names = self.set_vocabulary(class_names)
        if isinstance(image, np.ndarray):
            array = image if image.ndim == 3 else image[:, :, None]
            info = RasterInfo("<array>", array.shape[0], array.shape[1], array.shape[2], str(array.dtype))
            read = convert(array, info, raster or self.raster)
            rgb, valid, info = read.rgb, read.valid, None
        else:
            read = self.read_image(str(image), raster)
            rgb, valid, info = read.rgb, read.valid, read.info
        height, width = rgb.shape[:2]
        model_image = rgb[:, :, ::-1] if self.image_format == "BGR" else rgb
        aug_input = T.AugInput(np.ascontiguousarray(model_image))
        self.resize(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        with tile_progress(progress) if progress is not None else contextlib.nullcontext():
            output = self.model([{"image": tensor, "height": height, "width": width}])[0]["sem_seg"]
        probabilities = output.float().cpu()
        if probabilities.shape != (len(names), height, width):
            raise RuntimeError(f"{type(self.model).__name__} returned sem_seg {tuple(probabilities.shape)}, "
                               f"expected {(len(names), height, width)}")
        labels = probabilities.argmax(dim=0).numpy().astype(np.int64)
        return Prediction(probabilities, labels, names, rgb, info, valid)
