#!/usr/bin/env python
"""Inference latency, training-step time and peak memory of a model (random init, dummy vocabulary).

Each phase runs ``--warmup`` untimed then ``--iters`` timed calls (wall clock, CUDA synchronised)
and reports median / mean / p90 in ms:

* whole / slide: one image (3×H×W float in 0..255, on the host as the data loader yields it)
  through the eval-mode forward in TEST.INFERENCE_MODE whole or slide. Text embeddings are
  cached per vocabulary in eval mode: the first warmup call computes them (shown as "first call").
* train (``--train``): forward + backward + optimizer step (the trainer's optimizer: AdamW
  param groups and gradient clipping as configured) on ``--batch`` random images and labels at
  INPUT.CROP.SIZE. A fine-tuned text tower is re-encoded every step (no cache in training).

Peak memory per phase: CUDA ``torch.cuda.max_memory_allocated``; CPU peak resident set size
(Linux VmHWM, reset per phase; elsewhere ``ru_maxrss``, a process-lifetime peak). Precision: MODEL.PRECISION.

    python tools/benchmark.py --config-file configs/catseg/vitb16_384.yaml --iters 10 --train --batch 2
"""
from __future__ import annotations

import argparse
import itertools
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import ovrsis  # noqa: F401  (compat shims first: before detectron2 and fvcore)
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.utils.events import EventStorage
from torch import nn

from _common import DEFAULT_CONFIG, add_common_args, build, dummy_vocabulary, input_size, load_cfg, write_json
from ovrsis.engine.cli import parse_args_with_overrides
from ovrsis.modeling.cost.rotation import fuse_rotation_costs
from ovrsis.modeling.cost.volume import cosine_cost
from ovrsis.modeling.text_templates import prompt_templates
from ovrsis.engine import Trainer, create_ddp_model
from ovrsis.engine.trainer import PrecisionTrainer

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Peak memory of the enclosed code: absolute peak and growth over the level at entry (MiB)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.result: Dict[str, Any] = {}

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    @staticmethod
    def _reset_hwm() -> bool:
        """Reset the kernel's peak-RSS mark (Linux ≥ 4.0); False where that is not possible."""
        try:
            _CLEAR_REFS.write_text("5")
            return True
        except OSError:
            return False

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated (live tensors; allocator cache not counted)"
        elif _STATUS.exists() and self._reset_hwm():
            self.base = self._status_kib("VmRSS") * 1024
            self.method = "peak RSS of the process (Linux VmHWM, reset at phase start via /proc/self/clear_refs)"
        else:
            self.base = self._maxrss_bytes()
            self.method = "resource ru_maxrss: process-lifetime peak RSS, not resettable (growth only)"
        return self

    @staticmethod
    def _maxrss_bytes() -> int:
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("peak RSS"):
            peak = self._status_kib("VmHWM") * 1024
        else:
            peak = self._maxrss_bytes()
        self.result = {"peak_mib": peak / 2**20, "delta_mib": (peak - self.base) / 2**20, "method": self.method}


def time_calls(fn: Callable[[], Any], warmup: int, iters: int, device: torch.device) -> Dict[str, float]:
    """Run ``fn`` warmup + iters times; latency statistics (ms) of the timed calls."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: List[float] = []
    cpu: List[float] = []
    for _ in range(warmup + iters):
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
        cpu.append(1e3 * (time.process_time() - cpu_start))
    timed = np.array(times[warmup:])
    # process CPU time (all threads): on a shared CPU machine steadier than the wall clock
    return {"median_ms": float(np.median(timed)), "median_cpu_ms": float(np.median(cpu[warmup:])),
            "mean_ms": float(timed.mean()),
            "p90_ms": float(np.percentile(timed, 90)), "first_call_ms": times[0], "warmup": warmup, "iters": iters}


def slide_layout(cfg: CfgNode) -> Dict[str, Any]:
    """Tiles of the sliding-window protocol (fixed by the canvas, independent of the input size)."""
    s = cfg.TEST.SLIDE
    kernel = s.WINDOW
    stride = int(kernel * (1 - s.OVERLAP))
    tiles = ((s.CANVAS[0] - kernel) // stride + 1) * ((s.CANVAS[1] - kernel) // stride + 1)
    return {"canvas": list(s.CANVAS), "window": kernel, "stride": stride, "tiles": tiles,
            "global_view": bool(s.GLOBAL_VIEW), "clip_crops_per_image": tiles + int(s.GLOBAL_VIEW)}


@torch.no_grad()
def bench_inference(model: nn.Module, mode: str, size: Tuple[int, int], warmup: int, iters: int) -> Dict[str, Any]:
    """Eval-mode forward of one image in ``mode`` (whole | slide)."""
    model.eval()
    model.inference_mode = mode
    h, w = size
    inputs = [{"image": torch.rand(3, h, w) * 255, "height": h, "width": w}]
    with PeakMemory(model.device) as mem:
        stats = time_calls(lambda: model(inputs), warmup, iters, model.device)
    return {**stats, "memory": mem.result}


def bench_train(model: nn.Module, cfg: CfgNode, class_names: Sequence[str], batch: int, warmup: int,
                iters: int, ddp: bool = False) -> Dict[str, Any]:
    """Trainer steps (:class:`~ovrsis.engine.trainer.PrecisionTrainer`: forward at the model's
    precision, backward, fp16 gradient scaling, the trainer's optimizer step) on random
    images/labels at INPUT.CROP.SIZE. Also counts the trainable parameters the step leaves
    without a gradient (they make DDP need ``DIST.FIND_UNUSED_PARAMETERS``). With ``ddp`` (in
    a launched process group) the model is wrapped as the trainer wraps it, ``batch`` per rank."""
    model.train()
    model.set_vocabulary(class_names, train=True)
    optimizer = Trainer.build_optimizer(cfg, model)
    h, w = cfg.INPUT.CROP.SIZE
    data = [{"image": torch.rand(3, h, w) * 255, "sem_seg": torch.randint(0, len(class_names), (h, w))}
            for _ in range(batch)]
    net = create_ddp_model(model, find_unused_parameters=cfg.DIST.FIND_UNUSED_PARAMETERS) if ddp else model
    trainer = PrecisionTrainer(net, itertools.repeat(data), optimizer, model.precision, model.device.type)
    optimizer.zero_grad(set_to_none=True)
    with EventStorage(0), PeakMemory(model.device) as mem:
        stats = time_calls(trainer.run_step, warmup, iters, model.device)
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.eval()
    return {**stats, "batch": batch, "crop_hw": [h, w], "optimizer": type(optimizer).__name__,
            "images_per_s": 1e3 * batch / stats["median_ms"], "memory": mem.result, "unused_parameters": unused}


def _line(name: str, r: Dict[str, Any], extra: str = "") -> str:
    m = r["memory"]
    return (f"{name:<6} median {r['median_ms']:9.1f} ms  mean {r['mean_ms']:9.1f}  p90 {r['p90_ms']:9.1f}  "
            f"first call {r['first_call_ms']:9.1f}  | peak {m['peak_mib']:8.0f} MiB (+{m['delta_mib']:.0f}){extra}")


@torch.no_grad()
def bench_rotations(model: nn.Module, class_names: Sequence[str], warmup: int, iters: int) -> Dict[str, Any]:
    """Multi-rotation cost volume: one batched encoder call (ovrsis) vs one call per rotation
    (the official OVRS/RSKT-Seg way); both results are checked equal before timing."""
    model.eval()
    rotations = model.rotations
    size = model.clip.image_size
    images = (torch.rand(1, 3, size, size, device=model.device) * 255 - model.pixel_mean) / model.pixel_std
    text = model.clip.encode_text(class_names)

    def sequential() -> torch.Tensor:
        views = []
        for k in rotations:
            dense, _ = model.clip.encode_image(torch.rot90(images, k, dims=(2, 3)))
            views.append(torch.rot90(F.normalize(dense, dim=1), -k, dims=(2, 3)))
        return fuse_rotation_costs(cosine_cost(torch.stack(views, dim=1), text), model.rotation_fusion)

    max_diff = (model.cost_volume(images, text)[0] - sequential()).abs().max().item()
    batched_stats = time_calls(lambda: model.cost_volume(images, text), warmup, iters, model.device)
    sequential_stats = time_calls(sequential, warmup, iters, model.device)
    return {"rotations": list(rotations), "batched": batched_stats, "sequential": sequential_stats,
            "ratio_batched_over_sequential": batched_stats["median_ms"] / sequential_stats["median_ms"],
            "max_abs_diff": max_diff}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("whole", "slide", "both"), default="both", help="inference protocol(s)")
    parser.add_argument("--train", action="store_true", help="also time training steps")
    parser.add_argument("--rotations", action="store_true",
                        help="also time the multi-rotation cost: batched vs one encoder call per rotation")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default SOLVER.IMS_PER_BATCH)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per phase")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (>= 1 keeps text encoding out)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    add_common_args(parser)
    args = parse_args_with_overrides(parser, argv)  # KEY VALUE pairs may precede options
    if args.iters < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
        parser.error("--iters and --batch must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    modes = ("whole", "slide") if args.mode == "both" else (args.mode,)
    slide = ["TEST.INFERENCE_MODE", "slide"] if "slide" in modes else []  # the model then checks TEST.SLIDE
    cfg = load_cfg(args.config_file, [*args.opts, *slide])
    torch.manual_seed(cfg.SEED)
    model = build(cfg)
    class_names = dummy_vocabulary(args.num_classes)
    model.set_vocabulary(class_names)
    size = input_size(cfg, args.input_size)
    device = model.device
    if device.type == "cuda":
        device_name = f"{torch.cuda.get_device_name(device)} ({device})"
    else:
        device_name = f"CPU, {os.cpu_count()} logical cores"
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report: Dict[str, Any] = {
        "device": str(device), "device_name": device_name, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "config_file": args.config_file or DEFAULT_CONFIG, "overrides": list(args.opts),
        "arch": cfg.MODEL.CLIP.ARCH, "clip_image_size": cfg.MODEL.CLIP.IMAGE_SIZE,
        "parameters": params, "trainable_parameters": trainable, "precision": model.precision, "weights": "random init",
        "input_hw": list(size), "num_classes": len(class_names), "templates": len(prompt_templates(cfg)),
        "results": {},
    }
    h, w = size
    print(f"device    {device_name}, torch {torch.__version__}, "
          f"{report['threads']} intra-op / {report['interop_threads']} inter-op threads")
    print(f"config    {report['config_file']}   overrides {' '.join(args.opts) or '(none)'}")
    print(f"model     CLIP {cfg.MODEL.CLIP.ARCH}@{cfg.MODEL.CLIP.IMAGE_SIZE}, {params / 1e6:.2f} M parameters "
          f"({trainable / 1e6:.2f} M trainable), random init, {model.precision} (MODEL.PRECISION)")
    print(f"protocol  {args.warmup} warmup + {args.iters} timed calls per phase (wall clock, CUDA synchronised); "
          f"T={len(class_names)} dummy classes, P={report['templates']} template(s)")
    print(f"          inference: batch 1, input 3×{h}×{w} on the host; text embeddings cached in eval mode "
          f"(computed by the first warmup call)")

    for mode in modes:
        result = bench_inference(model, mode, size, args.warmup, args.iters)
        extra = ""
        if mode == "slide":
            result["layout"] = layout = slide_layout(cfg)
            extra = (f"\n       canvas {layout['canvas'][0]}×{layout['canvas'][1]}, window {layout['window']}, "
                     f"stride {layout['stride']}: {layout['tiles']} tiles"
                     f"{' + global view' if layout['global_view'] else ''} = {layout['clip_crops_per_image']} "
                     f"CLIP crops in one batch")
        else:
            extra = f"\n       squashed to CLIP {cfg.MODEL.CLIP.IMAGE_SIZE}×{cfg.MODEL.CLIP.IMAGE_SIZE}"
        report["results"][mode] = result
        print(_line(mode, result, extra))
    if args.train:
        batch = args.batch or cfg.SOLVER.IMS_PER_BATCH
        result = bench_train(model, cfg, class_names, batch, args.warmup, args.iters)
        report["results"]["train"] = result
        print(_line("train", result, f"\n       batch {batch} at {result['crop_hw'][0]}×{result['crop_hw'][1]}, "
                                     f"forward+backward+{result['optimizer']} step, "
                                     f"{result['images_per_s']:.2f} images/s"))
    if args.rotations:
        result = bench_rotations(model, class_names, args.warmup, args.iters)
        report["results"]["rotations"] = result
        print(f"rotations {result['rotations']}: batched median {result['batched']['median_ms']:.1f} ms, "
              f"sequential median {result['sequential']['median_ms']:.1f} ms, "
              f"ratio {result['ratio_batched_over_sequential']:.3f} (max |diff| {result['max_abs_diff']:.2e})")
    print(f"memory    {next(iter(report['results'].values()))['memory']['method']}; "
          f"peak is absolute, (+x) the growth during the phase")
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
