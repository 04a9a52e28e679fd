"""CLIP through open_clip, in the form the CAT-Seg family uses it.

open_clip builds the towers and loads weights (a pretrained tag or a local file); this
module then (1) splits every fused ``in_proj_weight`` into q/k/v parameters so that the
official "attention" fine-tuning (q and v weights only) is a plain ``requires_grad`` choice,
(2) runs its own batch-first forward with fused attention kernels, guidance taps and the
dense last block, and (3) encodes vocabularies × templates in one batch with a cache keyed
by vocabulary *and* weights, so a cached embedding is never stale.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...data.vocabulary import split_subprompts
from ...errors import ConfigError, check_path
from ..checkpointing import checkpointed
from .clip_files import check_activation, describe_vit, is_torchscript_archive, read_clip_file
from .dino import POS_EMBED_RESIZE, resize_pos_embed
from .frozen import load_state_strictly

logger = logging.getLogger(__name__)

FINETUNE_MODES = ("none", "attention", "full", "image")
_CONFIG_DIR = Path(__file__).with_name("clip_configs")


def _register_bundled_configs() -> None:
    import open_clip

    if _CONFIG_DIR.is_dir() and "ovrsis-tiny-vit" not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


class SplitQKVAttention(nn.Module):
    """Multi-head attention with separate q/k/v weights and a fused bias (official layout)."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> "SplitQKVAttention":
        """Copy a ``nn.MultiheadAttention`` (fused in_proj) into the split layout."""
        new = cls(mha.embed_dim, mha.num_heads)
        q, k, v = mha.in_proj_weight.detach().chunk(3, dim=0)
        with torch.no_grad():
            new.q_proj_weight.copy_(q)
            new.k_proj_weight.copy_(k)
            new.v_proj_weight.copy_(v)
            new.in_proj_bias.copy_(mha.in_proj_bias.detach())
            new.out_proj.load_state_dict(mha.out_proj.state_dict())
        return new

    def heads(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head q, k, v of x (N, L, D), each (N, heads, L, D / heads), biases included
        (unscaled; the training-free last blocks combine them in their own ways)."""
        n, length, d = x.shape
        bq, bk, bv = self.in_proj_bias.chunk(3)
        shape = (n, length, self.num_heads, d // self.num_heads)
        q = F.linear(x, self.q_proj_weight, bq).view(shape).transpose(1, 2)
        k = F.linear(x, self.k_proj_weight, bk).view(shape).transpose(1, 2)
        v = F.linear(x, self.v_proj_weight, bv).view(shape).transpose(1, 2)
        return q, k, v

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (N, L, D) → (N, L, D)."""
        n, length, d = x.shape
        q, k, v = self.heads(x)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, d))

    def value_path(self, x: torch.Tensor) -> torch.Tensor:
        """out_proj(V(x)): the token-wise path of the dense last block."""
        _, _, bv = self.in_proj_bias.chunk(3)
        return self.out_proj(F.linear(x, self.v_proj_weight, bv))


QUICK_GELU_ALPHA = 1.702


@contextlib.contextmanager
def _without_random_init_notice() -> Iterator[None]:
    """Silence open_clip's "No pretrained weights loaded ... initialized randomly" for a build with
    ``pretrained=None``: the weights come next (``PRETRAINED``, then ``MODEL.WEIGHTS``), and the
    notice printed right before a checkpoint loads misled users."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "initialized randomly" not in record.getMessage()

    root, drop = logging.getLogger(), _Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def run_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A CLIP block's MLP (c_fc → activation → c_proj) on x (..., width) → (..., width).

    With OpenAI's QuickGELU, h·σ(1.702h), the factor is folded into the two matrix products:
    c_proj(QuickGELU(c_fc x)) = (1/1.702)·W_proj·SiLU(1.702·(W_fc x + b_fc)) + b_proj, with the
    scalings passed as the GEMMs' alpha/beta (free), so the activation is one fused SiLU kernel
    forward and backward instead of three element-wise passes over the (..., 4·width) hidden
    activations. Exact algebra; the results agree with open_clip's module to float rounding,
    and the parameters are untouched. Other activations (GELU) run the module unchanged.
    """
    from open_clip.transformer import QuickGELU

    fc, proj = mlp.c_fc, mlp.c_proj
    if not isinstance(mlp.gelu, QuickGELU) or fc.bias is None or proj.bias is None:
        return mlp(x)
    flat = x.reshape(-1, x.shape[-1])
    hidden = F.silu(torch.addmm(fc.bias, flat, fc.weight.t(), beta=QUICK_GELU_ALPHA, alpha=QUICK_GELU_ALPHA))
    out = torch.addmm(proj.bias, hidden, proj.weight.t(), alpha=1.0 / QUICK_GELU_ALPHA)
    return out.view(*x.shape[:-1], out.shape[-1])


def _run_block(block: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    x = x + block.ls_1(block.attn(block.ln_1(x), attn_mask))
    return x + block.ls_2(run_mlp(block.mlp, block.ln_2(x)))


def _run_dense_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CAT-Seg's last block: no token mixing; each token = CLS input + out_proj(V(LN1(x)))."""
    v = x[:, :1] + block.ls_1(block.attn.value_path(block.ln_1(x)))
    return v + block.ls_2(run_mlp(block.mlp, block.ln_2(v)))


def _cached_pretrained(arch: str, tag: str) -> Optional[str]:
    """Path of an open_clip pretrained tag's file in the local Hugging Face cache, if any."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"MODEL.CLIP.PRETRAINED: open_clip has no tag {tag!r} for {arch} (known: {known})")
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = os.path.split(hub)
    for name in [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return found
    return None


def _split_attention(transformer: nn.Module) -> None:
    for block in transformer.resblocks:
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = SplitQKVAttention.from_multihead(block.attn)


def expand_prompts(
    class_names: Sequence[str], templates: Sequence[str], synonyms: str
) -> Tuple[List[str], torch.Tensor]:
    """All prompt strings and, per string, the flat (class, template) slot it averages into.

    ``synonyms="first"`` prompts only the first of "a, b, c" (official fine-tuned path);
    ``"mean"`` prompts every synonym and averages their normalised embeddings.
    """
    if synonyms not in ("first", "mean"):
        raise ValueError(f"MODEL.TEXT.SYNONYMS must be 'first' or 'mean', got {synonyms!r}")
    texts, slots = [], []
    for t, name in enumerate(class_names):
        parts = split_subprompts(name)
        parts = parts[:1] if synonyms == "first" else parts
        for p, template in enumerate(templates):
            for part in parts:
                texts.append(template.format(part))
                slots.append(t * len(templates) + p)
    return texts, torch.tensor(slots, dtype=torch.long)


class CLIPEncoder(nn.Module):
    """Both CLIP towers with the CAT-Seg dense image path and a vocabulary-keyed text cache."""

    def __init__(
        self,
        arch: str,
        pretrained: str = "",
        image_size: int = 384,
        finetune: str = "attention",
        guidance_layers: Sequence[int] = (3, 7),
        dense_last_block: bool = True,
        templates: Sequence[str] = ("A photo of a {} in the scene",),
        synonyms: str = "first",
        cache_text: bool = True,
        allow_download: bool = False,
        checkpoint_activations: bool = False,
        pos_embed_resize: str = "size",
    ) -> None:
        super().__init__()
        import open_clip

        if finetune not in FINETUNE_MODES:
            raise ValueError(f"MODEL.CLIP.FINETUNE must be one of {FINETUNE_MODES}, got {finetune!r}")
        if pos_embed_resize not in POS_EMBED_RESIZE:
            raise ValueError(f"MODEL.CLIP.POS_EMBED_RESIZE must be one of {POS_EMBED_RESIZE}, got {pos_embed_resize!r}")
        if not templates:
            raise ValueError("MODEL.TEXT.TEMPLATES is empty: at least one prompt template is needed")
        for template in templates:
            if "{}" not in template:
                raise ValueError(f"prompt template {template!r} has no '{{}}' placeholder")
        _register_bundled_configs()
        with _without_random_init_notice():  # PRETRAINED, MODEL.WEIGHTS or the trainer say what is loaded
            model = open_clip.create_model(arch, pretrained=None)
        if pretrained:
            self._load_pretrained(model, arch, pretrained, allow_download)
        self.tokenizer = open_clip.get_tokenizer(arch)

        visual = model.visual
        _split_attention(visual.transformer)
        _split_attention(model.transformer)
        self.visual = visual
        self.transformer = model.transformer  # text tower, named as in CLIP checkpoints
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        self.logit_scale = model.logit_scale
        self.register_buffer("causal_mask", model.attn_mask.clone(), persistent=False)

        self.patch_size = visual.conv1.kernel_size[0]
        self.image_size = int(image_size)
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIP image size {image_size} is not a multiple of patch size {self.patch_size}")
        self.grid_size = self.image_size // self.patch_size
        self.width = visual.conv1.out_channels
        self.embed_dim = visual.proj.shape[1]
        num_blocks = len(visual.transformer.resblocks)
        self.guidance_layers = [int(i) for i in guidance_layers]
        if any(i < 0 or i >= num_blocks - 1 for i in self.guidance_layers):
            raise ValueError(f"guidance layers {self.guidance_layers} out of range for {num_blocks} blocks")
        self.dense_last_block = dense_last_block
        # recompute block activations in the backward pass (both towers; same results, less memory)
        self.checkpoint_activations = bool(checkpoint_activations)
        self.pos_embed_resize = pos_embed_resize
        self.templates = list(templates)
        self.synonyms = synonyms
        self.cache_text = cache_text
        self._text_cache: Dict[tuple, torch.Tensor] = {}
        self._token_cache: Dict[str, object] = {}
        self._pos_cache: Dict[tuple, torch.Tensor] = {}
        self.finetune = finetune
        self._set_trainable(finetune)
        # frozen weights from their own file: a full-model checkpoint need not hold them
        self.pretrained_from_file = bool(pretrained) and finetune == "none"

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _load_pretrained(model: nn.Module, arch: str, pretrained: str, allow_download: bool) -> None:
        """A local file (open_clip state dict, or an OpenAI TorchScript archive converted to
        open_clip's layout and loaded strictly: :mod:`.clip_files`), or an open_clip tag resolved
        from the local Hugging Face cache; a tag that is not cached downloads only when
        ``allow_download`` is set. The weights' activation must match ``arch``'s
        (:func:`~.clip_files.check_activation`)."""
        import open_clip

        is_file = os.path.exists(pretrained) or os.sep in pretrained or pretrained.endswith(
            (".pt", ".pth", ".bin", ".safetensors"))
        if is_file:
            path = check_path(pretrained, "MODEL.CLIP.PRETRAINED", "file",
                              f"an open_clip state dict for {arch}, an OpenAI TorchScript archive, or an open_clip "
                              "tag such as 'openai'")
            archive = is_torchscript_archive(path)
            check_activation(model, arch, "MODEL.CLIP.ARCH", pretrained, "MODEL.CLIP.PRETRAINED", openai_archive=archive)
            if archive:
                state = read_clip_file(path, "MODEL.CLIP.PRETRAINED").state
                loaded = load_state_strictly(model, state, f"{path}: OpenAI CLIP archive does not match MODEL.CLIP.ARCH "
                                             f"{arch!r}. File image tower: {describe_vit(state)}; model: "
                                             f"{describe_vit(model.state_dict())}")
                logger.info("Loaded CLIP weights from the OpenAI TorchScript archive %s: all %d tensors matched "
                            "(open_clip layout, cast from %s)", path, loaded, next(iter(state.values())).dtype)
                return
        else:
            check_activation(model, arch, "MODEL.CLIP.ARCH", pretrained, "MODEL.CLIP.PRETRAINED", is_tag=True)
            path = _cached_pretrained(arch, pretrained)
            if path is None:
                if not allow_download:
                    raise ConfigError(
                        f"MODEL.CLIP.PRETRAINED: CLIP weights {arch}/{pretrained} are not in the local cache and downloads are off: "
                        "set MODEL.CLIP.ALLOW_DOWNLOAD True or give MODEL.CLIP.PRETRAINED a local file")
                reference = open_clip.create_model(arch, pretrained=pretrained, require_pretrained=True)
                model.load_state_dict(reference.state_dict(), strict=True)
                logger.info("Loaded CLIP weights %s/%s (downloaded by open_clip)", arch, pretrained)
                return
        open_clip.load_checkpoint(model, path, strict=True)
        logger.info("Loaded CLIP weights from %s", path)

    def _set_trainable(self, mode: str) -> None:
        """Official trainable sets: q/v projection weights of every block of both towers
        ("attention"), every transformer-block parameter ("full") or nothing ("none"); and
        "image": every block of the image tower, the text tower frozen (for a random-initialised
        CLIP, whose text tower is nearly blind to the class word: its embeddings are fixed, distinct
        class codes that training cannot merge — see configs/quickstart.yaml)."""
        for name, param in self.named_parameters():
            in_block = name.startswith("visual.transformer.") or name.startswith("transformer.")
            if mode == "full":
                param.requires_grad_(in_block)
            elif mode == "image":
                param.requires_grad_(name.startswith("visual.transformer."))
            elif mode == "attention":
                param.requires_grad_(in_block and name.endswith(("attn.q_proj_weight", "attn.v_proj_weight")))
            else:
                param.requires_grad_(False)

    # ------------------------------------------------------------------ image tower
    def _pos_embed(self, grid: "int | Tuple[int, int]") -> torch.Tensor:
        """Positional embedding (1 + gh·gw, width) for a grid (g or (gh, gw)); bicubic resize
        (``pos_embed_resize``: to the grid size, or the official fixed-factor rule of
        ``dino.resize_pos_embed``) computed once per resolution and weight version (the
        official code redoes it every forward)."""
        pos = self.visual.positional_embedding
        gh, gw = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
        native = math.isqrt(int(pos.shape[0]) - 1)
        if (gh, gw) == (native, native):
            return pos
        key = (gh, gw, self.pos_embed_resize, pos.device, pos.dtype, pos._version, pos.data_ptr())
        if pos.requires_grad and torch.is_grad_enabled():
            key = None  # trainable: must stay in the autograd graph
        if key is not None and key in self._pos_cache:
            return self._pos_cache[key]
        resized = resize_pos_embed(pos[None], (gh, gw), self.pos_embed_resize)[0]
        if key is not None:
            self._pos_cache = {key: resized.detach()}
        return resized

    def embed_patches(self, images: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Token sequence entering block 0: CLIP-normalised images (B, 3, H, W), H and W
        multiples of the patch size → (B, 1 + gh·gw, width) with the CLS token first, and the
        grid (gh, gw)."""
        v = self.visual
        b = images.shape[0]
        x = v.conv1(images)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(grid).to(x.dtype)
        return v.ln_pre(x), grid

    def last_block_input(self, images: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Residual stream entering the last image block, (B, 1 + gh·gw, width), and the grid:
        every block but the last run unchanged (for last-block variants built outside)."""
        x, grid = self.embed_patches(images)
        for block in self.visual.transformer.resblocks[:-1]:
            x = _run_block(block, x)
        return x, grid

    def project_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """ln_post then proj on every token: (B, L, width) → (B, L, C) in the text space."""
        return self.visual.ln_post(x) @ self.visual.proj

    def encode_image(self, images: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Dense CLIP features of CLIP-normalised images (B, 3, S, S).

        Returns (dense, taps): dense (B, C, g, g) patch features after ln_post/proj (the image
        side of the cost volume and the appearance guidance), and the raw residual stream of
        each guidance layer as (B, width, g, g).
        """
        v = self.visual
        b = images.shape[0]
        x, (grid, _) = self.embed_patches(images)
        taps = []
        blocks = v.transformer.resblocks
        for i, block in enumerate(blocks):
            if i == len(blocks) - 1 and self.dense_last_block:
                x = _run_dense_block(block, x)
            else:
                x = checkpointed(_run_block, block, x, enabled=self.checkpoint_activations)
            if i in self.guidance_layers:
                taps.append(x[:, 1:].transpose(1, 2).reshape(b, -1, grid, grid))
        x = v.ln_post(x[:, 1:]) @ v.proj
        return x.transpose(1, 2).reshape(b, -1, grid, grid), taps

    # ------------------------------------------------------------------ text tower
    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prompt tokens (N, context) → text embeddings (N, C), read at each end-of-text token.
        Under the causal mask a position sees only earlier ones, so the padding after the latest
        end-of-text token cannot change any output: the sequence is cut there (the same result;
        the official code runs all 77 positions, ~7× the work for short prompts)."""
        tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        mask = self.causal_mask[: tokens.shape[1], : tokens.shape[1]].to(x.dtype)
        for block in self.transformer.resblocks:
            x = checkpointed(_run_block, block, x, mask, enabled=self.checkpoint_activations)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection

    def _text_key(self, class_names: Sequence[str]) -> tuple:
        """Vocabulary, prompts and the state of every text-tower tensor: in-place edits (an
        optimizer step, ``load_state_dict``) bump ``_version``; ``.to()``/``.double()`` change the
        data pointer, dtype or device."""
        params = (*self.transformer.parameters(), self.token_embedding.weight, self.positional_embedding,
                  *self.ln_final.parameters(), self.text_projection)
        state = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
        return (tuple(class_names), tuple(self.templates), self.synonyms, state)

    def _tokens(self, class_names: Sequence[str], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens of every prompt and its (class, template) slot; they depend only on the
        vocabulary, so fine-tuning steps reuse them instead of re-tokenising."""
        key = (tuple(class_names), tuple(self.templates), self.synonyms, device)
        if self._token_cache.get("key") != key:
            texts, slots = expand_prompts(class_names, self.templates, self.synonyms)
            self._token_cache = {"key": key, "value": (self.tokenizer(texts).to(device), slots.to(device))}
        return self._token_cache["value"]

    def encode_text(self, class_names: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (T, P, C) for T class names and P templates.

        Cached at evaluation (or whenever the text tower is frozen) per vocabulary and
        weight version; recomputed every training step when the tower is fine-tuned.
        """
        if len(class_names) == 0:
            raise ValueError("empty vocabulary: no class names to segment")
        cacheable = self.cache_text and not (self.training and self.finetune in ("attention", "full"))
        key = self._text_key(class_names) if cacheable else None
        if key is not None and key in self._text_cache:
            return self._text_cache[key]
        device = self.token_embedding.weight.device
        tokens, slots = self._tokens(class_names, device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cacheable):
            emb = F.normalize(self._encode_tokens(tokens), dim=-1)
            num_slots = len(class_names) * len(self.templates)
            if len(tokens) != num_slots:  # average synonyms into their (class, template) slot
                emb = torch.zeros(num_slots, emb.shape[-1], device=device, dtype=emb.dtype).index_add_(
                    0, slots, emb)
                emb = F.normalize(emb, dim=-1)
            emb = emb.view(len(class_names), len(self.templates), -1)
        if key is not None:
            if len(self._text_cache) >= 8:
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[key] = emb.detach()
        return emb
