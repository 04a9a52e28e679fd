"""``add_ovrsis_config``: every ovrsis key, each with a one-line comment.

Keys read like the papers' terms (cost volume, appearance/text guidance, class
aggregation, guided upsampling). Defaults are CAT-Seg ViT-B/16@384 as released.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

import torch
from detectron2.config import CfgNode as CN

OPENAI_CLIP_MEAN = [122.7709383, 116.7460125, 104.09373615]
OPENAI_CLIP_STD = [68.5005327, 66.6321579, 70.3231630]

# Every key below that names a file or folder the run reads: key -> (kind, what it holds, the key
# that must be true for the file to be read, or None). One check (ovrsis.engine.setup.
# check_config_paths -> ovrsis.errors.check_path) serves train, eval, the Predictor, the demo, the
# benchmarks and sweep validation; "file or tag" is a file when the value looks like a path (else
# an open_clip pretrained tag). tests/test_kinds.py enumerates the keys of
# add_ovrsis_config, so a new path key must be listed here; a project's keys: register_path_key. Dataset folders and class files of
# DATASETS.REGISTER entries are checked where they are read (ovrsis.data.folder_dataset).
PATH_KEYS = {
    "MODEL.WEIGHTS": ("file", "a model checkpoint (.pth)", None),
    "MODEL.CLIP.PRETRAINED": ("file or tag", "an open_clip state dict or OpenAI TorchScript .pt", None),
    "MODEL.DINO.WEIGHTS": ("file", "a facebookresearch/dino checkpoint", "MODEL.DINO.ENABLED"),
    "MODEL.RS_CLIP.WEIGHTS": ("file", "an open_clip state dict or OpenAI TorchScript .pt", "MODEL.RS_CLIP.ENABLED"),
    "MODEL.SAM.WEIGHTS": ("file", "a segment_anything / SAM 2 checkpoint", "MODEL.SAM.ENABLED"),
    "MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS": ("file", "a SimFeatUp checkpoint (.ckpt)", "MODEL.TRAINING_FREE.SIMFEATUP"),
    "MODEL.TRAINING_FREE.CLASS_FILE": ("file", "a class file: one class per line (.txt) or a JSON list", None),
    "DATASETS.ROOT": ("dir", "the folder holding the datasets", None),
}


_EXTENSIONS: list = []


def flatten_config(node: Mapping, prefix: str = "") -> Dict[str, Any]:
    """``{"MODEL.CLIP.ARCH": value, ...}``: every leaf of a (nested) config node or dict under its
    dotted key, in order; ``prefix`` is put before each key (e.g. ``"MODEL."`` for ``cfg.MODEL``)."""
    out: Dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def register_path_key(key: str, kind: str, what: str, used_when: Optional[str] = None) -> None:
    """Add a project's config key that names a file to :data:`PATH_KEYS`, so the one path check
    covers it in train, eval, the Predictor, the demo, the benchmarks and sweep validation.

    Args:
        key: full config key, e.g. ``"MODEL.MY_STREAM.WEIGHTS"``.
        kind: ``"file"``, ``"dir"`` or ``"file or tag"`` (a file when the value looks like a path).
        what: what the file holds, for the error message.
        used_when: a boolean key that must be true for the run to read the file, or None.

    Raises:
        ValueError: an unknown ``kind``, or ``key`` already registered with other values.
    """
    if kind not in ("file", "dir", "file or tag"):
        raise ValueError(f"register_path_key({key!r}): kind must be 'file', 'dir' or 'file or tag', got {kind!r}")
    entry = (kind, what, used_when)
    if PATH_KEYS.setdefault(key, entry) != entry:
        raise ValueError(f"register_path_key({key!r}): already registered as {PATH_KEYS[key]}")


def register_config(add_config: Callable[[CN], None]) -> Callable[[CN], None]:
    """Decorator for a project's ``add_*_config(cfg)``: every config whose ``IMPORTS`` names the
    project's module gets its keys before the config file is merged
    (:func:`ovrsis.imports.add_imported_config`; ``docs/extending.md``). Returns ``add_config`` unchanged."""
    if add_config not in _EXTENSIONS:
        _EXTENSIONS.append(add_config)
    return add_config


def add_ovrsis_config(cfg: CN) -> None:
    """Add ovrsis keys to a detectron2 default config (in place)."""
    cfg.SEED = 42  # detectron2 already has SEED (-1 = random); we default to reproducible
    cfg.MODEL.META_ARCHITECTURE = "CostAggregationSegmentor"
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # override on the command line
    cfg.MODEL.PIXEL_MEAN = list(OPENAI_CLIP_MEAN)  # images are normalised with CLIP statistics
    cfg.MODEL.PIXEL_STD = list(OPENAI_CLIP_STD)
    cfg.MODEL.WEIGHTS_STRICT = True  # MODEL.WEIGHTS must cover every model key; False = partial load (warning)
    cfg.MODEL.PRECISION = "fp32"  # fp32 | bf16 | fp16: autocast of every method, training and inference, CUDA and CPU (ovrsis/modeling/precision.py)
    cfg.MODEL.TF32 = False  # CUDA only: TF32 matmuls/convolutions in the fp32 parts (Ampere and newer)

    # --- CLIP encoder (open_clip) -------------------------------------------------------
    cfg.MODEL.CLIP = CN()
    cfg.MODEL.CLIP.ARCH = "ViT-B-16-quickgelu"  # open_clip model name (or a bundled ovrsis-* config)
    cfg.MODEL.CLIP.PRETRAINED = ""  # open_clip pretrained tag ("openai"), a local file (open_clip state dict or OpenAI TorchScript .pt), or "" = random
    cfg.MODEL.CLIP.ALLOW_DOWNLOAD = False  # a pretrained *tag* may download only when this is True
    cfg.MODEL.CLIP.IMAGE_SIZE = 384  # CLIP input side; images are squashed to it (aspect ignored)
    cfg.MODEL.CLIP.FINETUNE = "attention"  # none | attention (q/v weights) | full (all blocks) | image (image-tower blocks)
    cfg.MODEL.CLIP.GUIDANCE_LAYERS = [3, 7]  # resblocks whose raw residual stream guides the decoder
    cfg.MODEL.CLIP.DENSE_LAST_BLOCK = True  # last block: CLS input + out_proj(V) (no token mixing)
    cfg.MODEL.CLIP.CHECKPOINT_ACTIVATIONS = False  # training: recompute each block's activations in backward (same results, less memory)
    cfg.MODEL.CLIP.POS_EMBED_RESIZE = "size"  # bicubic pos-embed resize: size (to the grid) | official ((g + 0.1) / n0 factor)

    # --- text side ----------------------------------------------------------------------
    cfg.MODEL.TEXT = CN()
    cfg.MODEL.TEXT.TEMPLATES = ["A photo of a {} in the scene"]  # P prompt templates (P >= 1)
    cfg.MODEL.TEXT.TEMPLATE_SET = ""  # a registered set replacing TEMPLATES (TEMPLATE_SET_REGISTRY: catseg, openai_imagenet, ...); "" = TEMPLATES
    cfg.MODEL.TEXT.SYNONYMS = "first"  # "a, b" class names: first synonym only | mean of embeddings
    cfg.MODEL.TEXT.CACHE = True  # cache eval-time text embeddings per vocabulary

    # --- cost volume ----------------------------------------------------------------------
    cfg.MODEL.COST = CN()
    cfg.MODEL.COST.MAX_CLASSES = 256  # above this, keep the top-k classes per image (rest: -100)
    cfg.MODEL.COST.ROTATIONS = [0]  # quarter turns of the CLIP input (OVRS: [0, 1, 2, 3]); 0 first
    cfg.MODEL.COST.ROTATION_FUSION = "stack"  # stack: R·P cost channels (OVRS) | mean: average over rotations
    cfg.MODEL.COST.FUSION = "conv"  # cost embedding: conv (CAT-Seg 7x7 conv) | qgff (GSNet: CLIP + specialist cost) | RSKT-Seg's simple_separate (= qgff) / simple_concatenation / simple_mean

    # --- DINO specialist (GSNet): frozen DINO ViT, extra cost volume + decoder guidance -------
    cfg.MODEL.DINO = CN()
    cfg.MODEL.DINO.ENABLED = False  # build the DINO stream (fed the unrotated CLIP input)
    cfg.MODEL.DINO.WEIGHTS = ""  # facebookresearch/dino checkpoint (e.g. GSNet's RSIB.pth); "" = from MODEL.WEIGHTS
    cfg.MODEL.DINO.CHECKPOINT_KEY = "teacher"  # entry of a DINO training checkpoint holding the backbone
    cfg.MODEL.DINO.PATCH_SIZE = 8  # ViT-B/8
    cfg.MODEL.DINO.WIDTH = 768
    cfg.MODEL.DINO.DEPTH = 12
    cfg.MODEL.DINO.NUM_HEADS = 12
    cfg.MODEL.DINO.PRETRAIN_SIZE = 224  # image side the positional embedding was trained for (785 tokens)
    cfg.MODEL.DINO.POS_EMBED_RESIZE = "size"  # size: bicubic to the token grid | official: DINO's (g+0.1)/n0 factor
    cfg.MODEL.DINO.FROZEN = True  # official: frozen (no gradients, always in eval mode)
    cfg.MODEL.DINO.COST_LAYER = 11  # block (0-based, final-normed) projected 2x2 s2 into the text space; -1 = no cost
    cfg.MODEL.DINO.GUIDANCE_LAYERS = [3, 7]  # blocks guiding decoder stages 1, 2 (1x1 conv / ConvT k2 s2); [] = none
    cfg.MODEL.DINO.IMAGE_SIZE = 0  # DINO input side (CLIP-normalised images resized to it); 0 = the CLIP input size

    # --- remote-sensing CLIP guidance stream (RSKT-Seg's RemoteCLIP): frozen open_clip image tower ----
    cfg.MODEL.RS_CLIP = CN()
    cfg.MODEL.RS_CLIP.ENABLED = False  # build the stream (source "rs_clip" in MODEL.DECODER.GUIDANCE_SOURCES)
    cfg.MODEL.RS_CLIP.ARCH = "ViT-B-32-quickgelu"  # open_clip model name (RSKT-Seg builds RemoteCLIP as OpenAI ViT-B/32)
    cfg.MODEL.RS_CLIP.WEIGHTS = ""  # local open_clip state dict (RemoteCLIP-ViT-B-32.pt, GeoRSCLIP, SkyCLIP) or OpenAI TorchScript .pt; "" = from MODEL.WEIGHTS
    cfg.MODEL.RS_CLIP.IMAGE_SIZE = 768  # input side (RemoteCLIP ViT-B/32: 768 -> 24x24 tokens, the CLIP grid)
    cfg.MODEL.RS_CLIP.GUIDANCE_LAYERS = [3, 7]  # blocks (raw residual stream) guiding decoder stages 1, 2
    cfg.MODEL.RS_CLIP.TEXT_TOWER = False  # hold the never-run text tower (official build and parameter count)
    cfg.MODEL.RS_CLIP.ROUND_FP16 = False  # round WEIGHTS to fp16 on load as the official fp16 CLIP build does

    # --- SAM guidance stream (AerOSeg): frozen segment_anything image encoder -------------------
    cfg.MODEL.SAM = CN()
    cfg.MODEL.SAM.ENABLED = False  # build the stream (guidance source "sam"; neck = appearance/back-projection source)
    cfg.MODEL.SAM.ARCH = "vit_l"  # vit_b | vit_l | vit_h (segment_anything) | custom (MODEL.SAM.CUSTOM) | hiera_t/s/b+/l (SAM 2, optional sam2 package)
    cfg.MODEL.SAM.WEIGHTS = ""  # local SAM checkpoint (sam_vit_l_0b3195.pth; image_encoder.* loaded strictly); "" = from MODEL.WEIGHTS
    cfg.MODEL.SAM.INPUT_SIZE = 1024  # SAM input side (native 1024 -> 64x64 tokens); smaller interpolates the pos-embed
    cfg.MODEL.SAM.GUIDANCE_LAYERS = [7, 15]  # 0-based blocks guiding decoder stages 1, 2 (paper: 8th, 16th of ViT-L); SAM 2: FPN levels (0: stride 4, 1: stride 8)
    cfg.MODEL.SAM.FROZEN = True  # AerOSeg: frozen (no gradients, always eval); False = fine-tuned (Table 4)
    cfg.MODEL.SAM.PIXEL_MEAN = [123.675, 116.28, 103.53]  # SAM's own input normalisation (0-255 RGB)
    cfg.MODEL.SAM.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.MODEL.SAM.CUSTOM = CN()  # architecture when ARCH is "custom" (tests: a tiny SAM of the same family)
    cfg.MODEL.SAM.CUSTOM.WIDTH = 0  # embedding width
    cfg.MODEL.SAM.CUSTOM.DEPTH = 0  # number of blocks
    cfg.MODEL.SAM.CUSTOM.NUM_HEADS = 0  # attention heads
    cfg.MODEL.SAM.CUSTOM.GLOBAL_ATTN_BLOCKS = []  # 0-based blocks with global attention (others: windowed)
    cfg.MODEL.SAM.CUSTOM.WINDOW_SIZE = 14  # attention window of the other blocks
    cfg.MODEL.SAM.CUSTOM.PRETRAIN_SIZE = 1024  # input side the absolute pos-embed was trained for

    # --- perturbation stage (Pi-Seg SPMs): between the encoders and the cost; training only ----
    cfg.MODEL.PERTURBATION = CN()
    cfg.MODEL.PERTURBATION.NAME = "PerturbationStage"  # registry name (PERTURBATION_REGISTRY): Pi-Seg's SPMs below
    cfg.MODEL.PERTURBATION.TEXT = CN()
    cfg.MODEL.PERTURBATION.TEXT.ENABLED = False  # Text-SPM: T + |σ_t|⊙Z + μ_t, learnable μ_t, σ_t ∈ R^C
    cfg.MODEL.PERTURBATION.TEXT.INIT_STD = 0.02  # σ_t of Table VII(b): std of the N(0, σ_t) init of μ_t, σ_t
    cfg.MODEL.PERTURBATION.TEXT.NOISE = "gaussian"  # Z: gaussian | laplace | uniform | student_t | gumbel
    cfg.MODEL.PERTURBATION.TEXT.STUDENT_T_DF = 3.0  # degrees of freedom of student_t noise (> 2)
    cfg.MODEL.PERTURBATION.IMAGE = CN()
    cfg.MODEL.PERTURBATION.IMAGE.ENABLED = False  # Image-SPM: text-guided cross-attention predicts μ_v, σ_v per location
    cfg.MODEL.PERTURBATION.IMAGE.REDUCTION = 1  # r: attention width C // r (released configs 1; paper text 2)
    cfg.MODEL.PERTURBATION.IMAGE.NOISE = "gaussian"  # Z: gaussian | laplace | uniform | student_t | gumbel
    cfg.MODEL.PERTURBATION.IMAGE.STUDENT_T_DF = 3.0  # degrees of freedom of student_t noise (> 2)
    cfg.MODEL.PERTURBATION.DIAGNOSTICS_PERIOD = 0  # log corr with/without noise, Δ, GT gap every N iters (0 = off)

    # --- cost aggregation -----------------------------------------------------------------
    cfg.MODEL.AGGREGATOR = CN()
    cfg.MODEL.AGGREGATOR.NAME = "CATSegAggregator"  # registry name (ovrsis.modeling.AGGREGATOR_REGISTRY)
    cfg.MODEL.AGGREGATOR.HIDDEN_DIM = 128  # cost embedding channels
    cfg.MODEL.AGGREGATOR.NUM_LAYERS = 2  # each: spatial (2 Swin blocks) then class aggregation
    cfg.MODEL.AGGREGATOR.NUM_HEADS = 4
    cfg.MODEL.AGGREGATOR.WINDOW_SIZE = 12  # Swin window (shift = window // 2)
    cfg.MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_PROJ_DIM = 128  # CLIP dense map → spatial guidance
    cfg.MODEL.AGGREGATOR.TEXT_GUIDANCE_PROJ_DIM = 128  # text embedding → class guidance
    cfg.MODEL.AGGREGATOR.POOLING_SIZE_TRAIN = [2, 2]  # class aggregation avg-pool while training
    cfg.MODEL.AGGREGATOR.POOLING_SIZE_TEST = [1, 1]  # ... and at evaluation (official eval scripts)
    cfg.MODEL.AGGREGATOR.PAD_LEN = 256  # class attention padded to this many tokens (0 = off)
    cfg.MODEL.AGGREGATOR.CLASS_ATTENTION = "linear"  # linear (elu+1 kernel) | full (softmax)
    cfg.MODEL.AGGREGATOR.CHECKPOINT_ACTIVATIONS = False  # training: recompute each aggregation layer in backward (same results, less memory)
    cfg.MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_SOURCE = "clip"  # spatial-aggregation guidance: clip (dense map) | a stream's features (AerOSeg: sam)
    cfg.MODEL.AGGREGATOR.SPATIAL_REDUCTION = 2  # EfficientAggregator (RSKT-Seg): key/value k x k stride-k reduction r1

    # --- decoder (guided upsampling) ------------------------------------------------------
    cfg.MODEL.DECODER = CN()
    cfg.MODEL.DECODER.NAME = "GuidedUpsamplingDecoder"  # registry name (DECODER_REGISTRY)
    cfg.MODEL.DECODER.DIMS = [64, 32]  # channels after each 2x upsampling stage
    cfg.MODEL.DECODER.GUIDANCE_DIMS = [256, 128]  # upsampled CLIP taps feeding each stage
    cfg.MODEL.DECODER.GUIDANCE_PROJ_DIMS = [32, 16]  # their projected widths
    cfg.MODEL.DECODER.GUIDANCE_ATTENTION = False  # OVRS attention-aware upsampling of the guidance
    cfg.MODEL.DECODER.GUIDANCE_SOURCES = ["clip"]  # guidance concatenated per stage, in order (GSNet: clip, dino)
    cfg.MODEL.DECODER.CHECKPOINT_ACTIVATIONS = False  # training: recompute each upsampling stage in backward (same results, less memory)

    # --- loss -----------------------------------------------------------------------------
    cfg.MODEL.LOSS = CN()
    cfg.MODEL.LOSS.IGNORE_VALUE = -1  # -1 = the training datasets' IGNORE_VALUE (one per dataset); another value must equal it
    cfg.MODEL.LOSS.IGNORE_AS_NEGATIVE = True  # official: ignore pixels get all-zero BCE targets
    cfg.MODEL.LOSS.HEADS = []  # extra training-only loss heads (LOSS_HEAD_REGISTRY), e.g. ["SemanticBackProjection"]

    # --- semantic back-projection (AerOSeg Eq. 7, 13): training-only loss head ---------------------
    cfg.MODEL.BACK_PROJECTION = CN()
    cfg.MODEL.BACK_PROJECTION.TARGET = "sam"  # reconstructed features: sam (neck) | clip (dense map) | rgb (Table 5)
    cfg.MODEL.BACK_PROJECTION.HIDDEN_DIM = 256  # width of the 3-Linear GELU MLP
    cfg.MODEL.BACK_PROJECTION.NUM_CLASSES = 0  # training vocabulary size N_s it concatenates; 0 = DATASETS.TRAIN[0]'s
    cfg.MODEL.BACK_PROJECTION.WEIGHT = 1.0  # lambda in L = L_bce + lambda * L_sem (Eq. 14)

    # --- training-free segmentor (SegEarth-OV and its CLIP baselines; ovrsis/training_free) --
    cfg.MODEL.TRAINING_FREE = CN()
    cfg.MODEL.TRAINING_FREE.ATTENTION = "segearth"  # last-block attention: vanilla | maskclip | sclip | clearclip | segearth
    cfg.MODEL.TRAINING_FREE.RESIDUAL = False  # keep the last block's residual connection (SegEarth-OV: ignore_residual)
    cfg.MODEL.TRAINING_FREE.FFN = False  # keep the last block's FFN
    cfg.MODEL.TRAINING_FREE.SIMFEATUP = True  # upsample patch features with SimFeatUp (else bilinear logits)
    cfg.MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS = ""  # SimFeatUp checkpoint (Lightning upsampler.* layout); "" = random
    cfg.MODEL.TRAINING_FREE.BIAS_LAMBDA = 0.3  # global-bias removal λ: logits -= λ · (CLS · text) (0 = off; xBD: 0)
    cfg.MODEL.TRAINING_FREE.LOGIT_SCALE = 50.0  # softmax temperature on the cosine logits
    cfg.MODEL.TRAINING_FREE.PROB_THD = 0.0  # pixels whose top class probability is below this get BG_IDX
    cfg.MODEL.TRAINING_FREE.BG_IDX = 0  # class index given to below-threshold pixels
    cfg.MODEL.TRAINING_FREE.CLASS_FILE = ""  # class entries (comma = sub-prompts) replacing the dataset's names by id

    # --- inference ------------------------------------------------------------------------
    cfg.TEST.INFERENCE_MODE = "whole"  # whole | slide (CAT-Seg sliding window, P-B) | tiled (TEST.TILED)
    cfg.TEST.SLIDE = CN()
    cfg.TEST.SLIDE.WINDOW = 384  # window side on the canvas
    cfg.TEST.SLIDE.OVERLAP = 0.333  # stride = int(window * (1 - overlap))
    cfg.TEST.SLIDE.CANVAS = [640, 640]  # image squashed to this before unfolding
    cfg.TEST.SLIDE.GLOBAL_VIEW = True  # average tiles 50/50 with a whole-image view
    cfg.TEST.WHOLE = CN()
    cfg.TEST.WHOLE.STRETCH_PADDING = False  # True reproduces the official P-A padding distortion
    cfg.TEST.WHOLE.SIZE_DIVISIBILITY = 32  # official padding multiple (MASK_FORMER.SIZE_DIVISIBILITY)
    cfg.TEST.TILED = CN()  # tiled inference for large images (ovrsis.modeling.tiling)
    cfg.TEST.TILED.TILE = 384  # tile side in pixels of the (mapper-resized) image
    cfg.TEST.TILED.STRIDE = 256  # step between tiles; the last tile is aligned to the border
    cfg.TEST.TILED.BATCH = 8  # tiles per forward pass (memory only, results unchanged)
    cfg.TEST.TILED.CLASS_CHUNK = 0  # classes per forward pass, 0 = all (chunks change class attention)
    cfg.TEST.TILED.LONG_SIDE = 0  # resize so the long side is this before tiling (P-C: 448), 0 = off
    cfg.TEST.TILED.RESIZE = "opencv"  # LONG_SIDE resize: opencv (official mmcv/cv2 bilinear on the uint8 image) | float (F.interpolate)

    # --- input ------------------------------------------------------------------------------
    cfg.INPUT.MIN_SIZE_TRAIN = (384,)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 4096
    cfg.INPUT.MIN_SIZE_TEST = 640
    cfg.INPUT.MAX_SIZE_TEST = 2560
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (384, 384)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0  # RandomCrop_CategoryAreaConstraint
    cfg.INPUT.COLOR_AUG_SSD = True  # photometric jitter (brightness, contrast, saturation, hue)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.RASTER = CN()  # stored values → 8-bit RGB (ovrsis.data.raster); per dataset in DATASETS.REGISTER
    cfg.INPUT.RASTER.BANDS = []  # 1-based bands feeding R, G, B (Landsat-8: [4, 3, 2]); [] = 1 (grey) or 3 bands
    cfg.INPUT.RASTER.SCALING = "auto"  # auto (8-bit only) | fixed (RANGE) | percentile (per image) | percentile_dataset
    cfg.INPUT.RASTER.RANGE = [0.0, 255.0]  # fixed scaling: stored [low, high] → [0, 255]
    cfg.INPUT.RASTER.PERCENTILES = [2.0, 98.0]  # percentile stretches: [low, high] percent → [0, 255]
    cfg.INPUT.RASTER.NODATA = []  # [value]: pixels whose bands all hold it are no-data (masked end to end); [] = the file's declared value

    # --- data -------------------------------------------------------------------------------
    cfg.DATASETS.ROOT = ""  # dataset root; "" = $DETECTRON2_DATASETS or ./datasets
    cfg.DATASETS.REGISTER = CN(new_allowed=True)  # config-only datasets: NAME: {IMAGE_ROOT, ...}
    cfg.DATASETS.PREFLIGHT = CN()  # check every train/test dataset before training (ovrsis.data.preflight)
    cfg.DATASETS.PREFLIGHT.ENABLED = True  # read every image and mask once (cached when they pass)
    cfg.DATASETS.PREFLIGHT.SAMPLE_ABOVE = 20000  # datasets with more pairs are checked on a sample ...
    cfg.DATASETS.PREFLIGHT.SAMPLE = 2000  # ... of this many evenly spaced pairs
    cfg.DATASETS.SYNTHETIC = CN()
    cfg.DATASETS.SYNTHETIC.ROOT = ""  # cache folder of the built-in scenes ("" = ~/.cache/ovrsis)
    cfg.DATASETS.SYNTHETIC.IMAGE_SIZE = 128  # side of each generated scene
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN = 64
    cfg.DATASETS.SYNTHETIC.NUM_VAL = 16
    cfg.DATASETS.SYNTHETIC.SEED = 0  # seed of the built-in scenes
    cfg.DATALOADER.NUM_WORKERS = 2

    # --- solver -----------------------------------------------------------------------------
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR = 2e-4
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0  # norms and embeddings
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.CLIP_MULTIPLIER = 0.01  # learning-rate factor of the CLIP encoder
    cfg.SOLVER.SAM_MULTIPLIER = 0.1  # learning-rate factor of a trainable SAM encoder (MODEL.SAM.FROZEN False; AerOSeg Table 4: 2e-5)
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.WARMUP_FACTOR = 1.0
    cfg.SOLVER.MAX_ITER = 80000
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"  # one norm over every parameter
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    cfg.SOLVER.AMP.ENABLED = False  # legacy: read as MODEL.PRECISION fp16

    # --- distributed ------------------------------------------------------------------------
    cfg.DIST = CN()
    cfg.DIST.TIMEOUT_MINUTES = 30  # process-group timeout (NCCL/gloo)
    cfg.DIST.FIND_UNUSED_PARAMETERS = True  # the dense last CLIP block leaves its q/k weights unused

    cfg.TEST.EVAL_PERIOD = 5000

    # --- your own method ----------------------------------------------------------------------
    cfg.IMPORTS = []  # .py files, package folders or dotted modules imported before the config is merged (ovrsis/imports.py); saved as absolute paths

    # --- keys that moved: naming one is an error that names its replacement -----------------
    cfg.register_renamed_key("MODEL.TRAINING_FREE.PRECISION", "MODEL.PRECISION",
                             "one precision switch now serves every method (fp32 | bf16 | fp16)")
