#!/usr/bin/env python
"""Parameter counts (total / trainable / frozen, per module) and, optionally, FLOPs of a model.

Parameters are counted once each (shared tensors are not double-counted); "trainable" means
``requires_grad`` as the config leaves it (MODEL.CLIP.FINETUNE decides the CLIP part). The
model is randomly initialised unless ``--load-weights`` is given, and built on the CPU: neither
the counts nor the FLOPs depend on weights or device.

FLOPs (``--flops``) come from fvcore's ``FlopCountAnalysis`` on one eval-mode forward of a
batch of one image in whole-image mode, with the text embeddings of the vocabulary already
cached (the per-image cost); the text tower's one-off cost per vocabulary is reported apart.
fvcore counts one fused multiply-add as one flop; element-wise ops are not counted.

    python tools/model_stats.py --config-file configs/catseg/vitb16_384.yaml --depth 2 --flops
    python tools/model_stats.py MODEL.CLIP.ARCH ViT-L-14-336-quickgelu MODEL.CLIP.IMAGE_SIZE 336 \\
        MODEL.CLIP.GUIDANCE_LAYERS "[7, 15]"
"""
from __future__ import annotations

import argparse
import os
import warnings
from collections import Counter
from math import prod
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ovrsis  # noqa: F401  (compat shims first: before detectron2 and fvcore)
import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from _common import DEFAULT_CONFIG, add_common_args, build, dummy_vocabulary, input_size, load_cfg, write_json
from ovrsis.engine.cli import parse_args_with_overrides

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parameter_stats(model: nn.Module, depth: int = 2) -> Dict[str, Any]:
    """Parameter counts of ``model``, overall and per dotted path up to ``depth`` components.

    Returns ``{"total", "trainable", "frozen", "depth", "modules"}``; ``modules`` lists rows
    ``{"name", "type", "level", "leaf", "total", "trainable", "frozen"}`` in definition order,
    a row for every prefix of every parameter name up to ``depth``. A parameter owned directly
    by a shallower module gets a row of its own (type ``Parameter``), so the ``leaf`` rows,
    like the level-1 rows, partition the model: their totals sum to ``total``.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    module_types = {name: type(m).__name__ for name, m in model.named_modules()}
    counts: Dict[str, List[int]] = {}
    leaves = set()
    total = trainable = 0
    for name, param in model.named_parameters():
        n, grad = param.numel(), param.requires_grad
        total += n
        trainable += n if grad else 0
        parts = name.split(".")
        keep = min(len(parts), depth)
        for level in range(1, keep + 1):
            row = counts.setdefault(".".join(parts[:level]), [0, 0])
            row[0] += n
            row[1] += n if grad else 0
        leaves.add(".".join(parts[:keep]))
    modules = [
        {"name": name, "type": module_types.get(name, "Parameter"), "level": name.count(".") + 1,
         "leaf": name in leaves, "total": n, "trainable": t, "frozen": n - t}
        for name, (n, t) in counts.items()
    ]
    return {"total": total, "trainable": trainable, "frozen": total - trainable, "depth": depth, "modules": modules}


def _sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """aten::scaled_dot_product_attention: Q·Kᵀ and attention·V, in multiply-adds."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


class _WholeImage(nn.Module):
    """One image through the segmentor's public forward (batch of one, sigmoid scores out)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model([{"image": image}])[0]["sem_seg"]


class _TextTower(nn.Module):
    """Text embeddings of a fixed vocabulary (the input only anchors the trace)."""

    def __init__(self, clip: nn.Module, class_names: Sequence[str]) -> None:
        super().__init__()
        self.clip = clip
        self.class_names = list(class_names)

    def forward(self, anchor: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(self.class_names)


def _count(module: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> Tuple[int, Dict[str, int], Dict[str, int]]:
    """fvcore total, per-module counts and skipped (unhandled) operators of one traced call."""
    analysis = FlopCountAnalysis(module, inputs).set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        total = analysis.total()
    return total, dict(analysis.by_module()), dict(analysis.unsupported_ops())


@torch.no_grad()
def flop_stats(model: nn.Module, size: Tuple[int, int], class_names: Sequence[str]) -> Dict[str, Any]:
    """GFLOPs of one whole-image eval forward (vocabulary cached) and of encoding the vocabulary.

    Sets ``model``'s evaluation vocabulary to ``class_names``; its inference mode is restored.
    """
    model.eval()
    model.set_vocabulary(class_names)
    image = torch.rand(3, *size, device=model.device) * 255
    mode, model.inference_mode = model.inference_mode, "whole"
    try:
        model([{"image": image}])  # fills the text cache, so the traced forward is the per-image cost
        total, by_module, skipped = _count(_WholeImage(model), (image,))
    finally:
        model.inference_mode = mode
    parts = {name: by_module.get(f"model.{name}", 0) for name, _ in model.named_children()}
    parts["(cost volume, resizing: top level)"] = total - sum(parts.values())

    clip = model.clip
    cache_text, clip.cache_text = clip.cache_text, False
    try:
        text_total, _, text_skipped = _count(_TextTower(clip, class_names), (image,))
    finally:
        clip.cache_text = cache_text
    skipped = Counter(skipped) + Counter(text_skipped)
    return {
        "protocol": {"input_hw": list(size), "num_classes": len(class_names), "templates": len(clip.templates),
                     "mode": "whole", "batch": 1, "clip_input": clip.image_size,
                     "counting": "fvcore FlopCountAnalysis; 1 multiply-add = 1 flop; element-wise ops not counted"},
        "per_image_gflops": total / 1e9,
        "per_image_by_part_gflops": {k: v / 1e9 for k, v in parts.items()},
        "text_per_vocabulary_gflops": text_total / 1e9,
        "skipped_ops": dict(sorted(skipped.items())),
    }


# Total parameters of the official code's build (random weights) for released configs, shown next to ours.
OFFICIAL_TOTALS = {
    "configs/catseg/vitb16_384.yaml": 154_289_378,
    "configs/catseg/vitl14_336.yaml": 433_726_946,
    "configs/ovrs/vitb16_384.yaml": 154_312_086,
    "configs/gsnet/vitb16_384_landdiscover.yaml": 243_988_242,
    "configs/rsktseg/vitb16_384_dlrsd.yaml": 400_558_019,  # 5 layers (2: 398,066,243)
    "configs/rsktseg/vitb16_384_isaid.yaml": 398_896_835,  # 3 layers
    "configs/rsktseg/vitl14_336_isaid.yaml": 678_290_499,  # 2 layers
}


def _fmt(n: int) -> str:
    return f"{n:,}"


def print_parameter_table(stats: Dict[str, Any]) -> None:
    total = stats["total"]
    print(f"parameters  total {_fmt(total)} ({total / 1e6:.2f} M)   "
          f"trainable {_fmt(stats['trainable'])} ({stats['trainable'] / 1e6:.2f} M)   "
          f"frozen {_fmt(stats['frozen'])} ({stats['frozen'] / 1e6:.2f} M)")
    rows = [("  " * (r["level"] - 1) + r["name"], r["type"], _fmt(r["total"]), _fmt(r["trainable"]),
             _fmt(r["frozen"]), f"{100 * r['total'] / max(total, 1):.1f}") for r in stats["modules"]]
    header = ("module (depth ≤ %d)" % stats["depth"], "type", "total", "trainable", "frozen", "% total")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    line = f"{{:<{widths[0]}}}  {{:<{widths[1]}}}" + "".join(f"  {{:>{w}}}" for w in widths[2:])
    print()
    print(line.format(*header))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        print(line.format(*row))


def print_flops(flops: Dict[str, Any]) -> None:
    p = flops["protocol"]
    h, w = p["input_hw"]
    print(f"\nFLOPs  input {h}×{w} (squashed to CLIP {p['clip_input']}×{p['clip_input']}), T={p['num_classes']} classes, "
          f"P={p['templates']} template(s), whole-image mode, batch 1, eval")
    print(f"       {p['counting']}")
    print(f"  per image (text embeddings cached): {flops['per_image_gflops']:.2f} GFLOPs")
    for name, value in flops["per_image_by_part_gflops"].items():
        print(f"    {name:<36} {value:9.2f}")
    print(f"  text tower, once per vocabulary:    {flops['text_per_vocabulary_gflops']:.2f} GFLOPs")
    if flops["skipped_ops"]:
        names = ", ".join(k.replace("aten::", "") for k in flops["skipped_ops"])
        print(f"  not counted (no fvcore handle; counts per op in --json): {names}")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=2, help="module path depth of the breakdown (default 2)")
    parser.add_argument("--flops", action="store_true", help="also count FLOPs of one whole-image forward")
    parser.add_argument("--load-weights", action="store_true",
                        help="honour MODEL.CLIP.PRETRAINED / MODEL.WEIGHTS (default: random init, no files needed)")
    add_common_args(parser)
    args = parse_args_with_overrides(parser, argv)  # KEY VALUE pairs may precede options

    cfg = load_cfg(args.config_file, [*args.opts, "MODEL.DEVICE", "cpu"], load_weights=args.load_weights)
    model = build(cfg)
    stats = parameter_stats(model, args.depth)
    report: Dict[str, Any] = {"config_file": args.config_file or DEFAULT_CONFIG, "overrides": list(args.opts),
                              "arch": cfg.MODEL.CLIP.ARCH, "clip_finetune": cfg.MODEL.CLIP.FINETUNE,
                              "weights_loaded": args.load_weights, "parameters": stats}
    print(f"config  {report['config_file']}   overrides {' '.join(args.opts) or '(none)'}")
    print(f"model   {cfg.MODEL.META_ARCHITECTURE}, CLIP {cfg.MODEL.CLIP.ARCH}@{cfg.MODEL.CLIP.IMAGE_SIZE}, "
          f"MODEL.CLIP.FINETUNE {cfg.MODEL.CLIP.FINETUNE}, "
          f"{'weights as configured' if args.load_weights else 'random init (counts need no weights)'}, built on CPU")
    print_parameter_table(stats)
    official = OFFICIAL_TOTALS.get(os.path.relpath(os.path.abspath(report["config_file"]), _REPO)) if not args.opts else None
    if official is not None:
        report["official_total"] = official
        print(f"official build: {_fmt(official)} parameters ({'match' if official == stats['total'] else 'MISMATCH'})")
    if args.flops:
        report["flops"] = flop_stats(model, input_size(cfg, args.input_size), dummy_vocabulary(args.num_classes))
        print_flops(report["flops"])
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
