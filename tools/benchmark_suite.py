#!/usr/bin/env python
"""One-shot efficiency table of every method config (the Pi-Seg paper's Table XII columns).

For each config: parameters (total / trainable), eval GFLOPs (fvcore, one whole image, vocabulary
cached), and under each precision — fp32 (TF32 off), TF32 (CUDA matmul/cuDNN TF32 on), bf16 and
fp16 (``MODEL.PRECISION``: the model's own autocast; weights, gradients and optimizer state stay
fp32; fp16 training steps scale the loss with ``torch.amp.GradScaler``):

* peak training memory and step time: the trainer's step (``PrecisionTrainer``: forward,
  backward, the trainer's optimizer and trainable set) at ``--train-batch`` random images of
  INPUT.CROP.SIZE, and the number of trainable parameters that step leaves without a gradient
  (non-zero: DDP needs ``DIST.FIND_UNUSED_PARAMETERS True``);
* inference FPS of one ``--input-size`` image (default 600×800) in whole-image and sliding-window
  mode (TEST.SLIDE), batch 1, text embeddings cached, and the peak memory of whole-image inference;
* the max |difference| of the whole-image scores from fp32 on one fixed seeded image;
* with ``--ddp N`` (default on CUDA: every visible GPU when there are several), the same training
  step in N processes under DistributedDataParallel (the trainer's wrapping: NCCL on GPUs, gloo
  on the CPU), ``--train-batch`` per process: its step time and the scaling efficiency, one
  process's step time ÷ the DDP step time (1.0 = N times the images per second).

Random weights (no downloads), ``--num-classes`` dummy class names. Written as Markdown, CSV and
JSON to ``--output-dir``. On one GPU the default settings take a few minutes for all methods:

    python tools/benchmark_suite.py --device cuda
    python tools/benchmark_suite.py --device cuda --configs configs/catseg/vitb16_384.yaml --precisions bf16

On the CPU TF32 does nothing (it is reported as such) and the peak memory is the process's peak
RSS, so CPU tables are for smoke tests at tiny sizes, not for comparison with GPU papers.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import ovrsis  # noqa: F401  (compat shims first: before detectron2 and fvcore)
import torch
from detectron2.config import CfgNode

from _common import build, dummy_vocabulary, load_cfg, parse_size, write_json
from ovrsis.engine.cli import parse_args_with_overrides
from ovrsis.engine.launch import launch
from benchmark import bench_inference, bench_train
from model_stats import flop_stats
from ovrsis.modeling.precision import set_tf32

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# not method configs: sweeps, real_imagery (a small example); segearth_ov: training-free, with its own
# inference protocol (P-C)
SKIP_DIRS = {"sweeps", "real_imagery", "segearth_ov"}
COLUMNS = ("config", "precision", "params_M", "trainable_M", "eval_gflops", "train_batch", "train_peak_mem_mib",
           "train_step_ms", "unused_params", "ddp_processes", "ddp_step_ms", "ddp_efficiency", "fps_whole",
           "fps_slide", "infer_peak_mem_mib", "max_abs_diff_vs_fp32")


def default_configs(root: Path = REPO / "configs") -> List[str]:
    """One config per method folder of ``configs/``: its first ViT-B config in name order, else
    its first config (folders without configs, ablations and sweeps are skipped)."""
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP_DIRS):
        files = sorted(folder.glob("*.yaml"))
        vitb = [f for f in files if f.name.startswith("vitb")]
        if files:
            found.append(str((vitb or files)[0].relative_to(REPO)))
    return found


@contextlib.contextmanager
def precision(name: str, model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` at ``name`` (fp32 | tf32 | bf16 | fp16): the model's precision
    (``MODEL.PRECISION``; tf32 = fp32 with the CUDA TF32 flags on). The model's precision and
    the flags are restored on exit. Raises ValueError on an unknown precision."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, model.precision)
    set_tf32(name == "tf32")
    model.precision = "fp32" if name == "tf32" else name
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, model.precision = saved


@torch.no_grad()
def fixed_output(model: torch.nn.Module, size: Tuple[int, int]) -> torch.Tensor:
    """Whole-image scores (T, H, W) of one seeded random image, as float32 on the CPU."""
    model.eval()
    model.inference_mode = "whole"
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, *size, generator=g) * 255
    return model([{"image": image}])[0]["sem_seg"].float().cpu()


def seeded_model(config_file: str, opts: Sequence[str], args: argparse.Namespace
                 ) -> Tuple[CfgNode, torch.nn.Module, List[str]]:
    """The config on ``args.device``, its randomly initialised model (seeded by ``SEED``: every
    process and call builds the same weights) and ``args.num_classes`` dummy class names."""
    cfg = load_cfg(config_file, [*opts, "MODEL.DEVICE", args.device])
    torch.manual_seed(cfg.SEED)
    return cfg, build(cfg), dummy_vocabulary(args.num_classes)


def measure_config(config_file: str, opts: Sequence[str], args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Every column of ``config_file`` under each precision: one row per precision."""
    cfg, model, classes = seeded_model(config_file, opts, args)
    model.set_vocabulary(classes)
    size = args.input_size
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gflops = flop_stats(model, size, classes)["per_image_gflops"] if args.flops else float("nan")
    with precision("fp32", model):
        reference = fixed_output(model, size)
    rows = []
    for name in args.precisions:  # inference first: training steps change the weights
        with precision(name, model):
            out = fixed_output(model, size)
            runs = {mode: bench_inference(model, mode, size, args.warmup, args.iters) for mode in ("whole", "slide")}
        rows.append({"config": config_file, "precision": name, "params_M": params / 1e6, "trainable_M": trainable / 1e6,
                     "eval_gflops": gflops, "fps_whole": 1e3 / runs["whole"]["median_ms"],
                     "fps_slide": 1e3 / runs["slide"]["median_ms"],
                     "infer_peak_mem_mib": runs["whole"]["memory"]["peak_mib"],
                     "max_abs_diff_vs_fp32": float((out - reference).abs().max())})
    for row in rows:
        row.update(train_batch=args.train_batch, train_peak_mem_mib=float("nan"), train_step_ms=float("nan"),
                   unused_params=-1, ddp_processes=0, ddp_step_ms=float("nan"), ddp_efficiency=float("nan"))
        if trainable == 0:  # training-free method: no training columns
            continue
        with precision(row["precision"], model):
            r = bench_train(model, cfg, classes, args.train_batch, args.warmup, args.iters)
        row.update(train_peak_mem_mib=r["memory"]["peak_mib"], train_step_ms=r["median_ms"],
                   unused_params=len(r["unused_parameters"]))
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    if args.ddp > 1 and trainable:
        steps = ddp_step_times(config_file, opts, args)
        for row in rows:
            ms = steps[row["precision"]]
            row.update(ddp_processes=args.ddp, ddp_step_ms=ms, ddp_efficiency=row["train_step_ms"] / ms)
    return rows


def _ddp_rank(config_file: str, opts: Sequence[str], args: argparse.Namespace, result: str) -> None:
    """One process of :func:`ddp_step_times`: the same seeded model on every rank, each precision's
    training step under DDP; rank 0 writes ``{precision: median ms}`` to ``result``."""
    from detectron2.utils import comm

    cfg, model, classes = seeded_model(config_file, opts, args)
    times = {}
    for name in args.precisions:
        with precision(name, model):
            times[name] = bench_train(model, cfg, classes, args.train_batch, args.warmup, args.iters,
                                      ddp=True)["median_ms"]
    if comm.is_main_process():
        write_json(result, times)


def ddp_step_times(config_file: str, opts: Sequence[str], args: argparse.Namespace) -> Dict[str, float]:
    """Median DDP training-step time (ms) per precision over ``args.ddp`` processes on this
    machine (``ovrsis.engine.launch``: one per GPU, or gloo CPU processes sharing the cores)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp) / "ddp.json")
        launch(_ddp_rank, args.ddp, args=(config_file, list(opts), args, result))
        return json.loads(Path(result).read_text())


def markdown(rows: Sequence[Dict[str, Any]], header: str) -> str:
    """The rows as a Markdown table under a one-paragraph ``header``."""
    names = ("config", "precision", "params (M)", "trainable (M)", "eval GFLOPs", "train batch",
             "train peak memory (MiB)", "train step (ms)", "unused trainable params", "DDP processes",
             "DDP step (ms)", "DDP efficiency", "FPS whole", "FPS slide", "inference peak memory (MiB)",
             "max |Δ| vs fp32")
    lines = [header, "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["config"], r["precision"], f"{r['params_M']:.2f}", f"{r['trainable_M']:.2f}", f"{r['eval_gflops']:.1f}",
            str(r["train_batch"]), f"{r['train_peak_mem_mib']:.0f}", f"{r['train_step_ms']:.1f}",
            str(r["unused_params"]) if r["unused_params"] >= 0 else "-",
            str(r["ddp_processes"] or "-"), f"{r['ddp_step_ms']:.1f}", f"{r['ddp_efficiency']:.2f}",
            f"{r['fps_whole']:.1f}", f"{r['fps_slide']:.2f}", f"{r['infer_peak_mem_mib']:.0f}",
            f"{r['max_abs_diff_vs_fp32']:.2e}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=None, metavar="FILE",
                        help="method configs (default: one per configs/<method>/ folder)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--input-size", type=parse_size, default=(600, 800), metavar="S|HxW",
                        help="inference image size (default 600x800, as Pi-Seg's Table XII)")
    parser.add_argument("--num-classes", type=int, default=15, metavar="T", help="vocabulary size (dummy names)")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch for the memory column")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each timed phase")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per phase (median reported)")
    parser.add_argument("--ddp", type=int, default=None, metavar="N",
                        help="also time the training step under DDP in N processes (default: every visible GPU "
                             "when --device cuda has several, else off)")
    parser.add_argument("--no-flops", dest="flops", action="store_false", help="skip the fvcore GFLOPs column")
    parser.add_argument("--output-dir", default="output/benchmark_suite", help="where table.md/.csv/.json go")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides applied to every config (e.g. tiny test models)")
    args = parse_args_with_overrides(parser, argv)  # KEY VALUE pairs may precede options
    if args.device not in ("cuda", "cpu"):
        parser.error(f"--device must be cuda or cpu, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.ddp is None:
        args.ddp = torch.cuda.device_count() if args.device == "cuda" and torch.cuda.device_count() > 1 else 0
    if args.device == "cuda" and args.ddp > torch.cuda.device_count():
        parser.error(f"--ddp {args.ddp}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if min(args.iters, args.train_batch, args.num_classes) < 1 or args.warmup < 0:
        parser.error("--iters, --train-batch and --num-classes must be >= 1, --warmup >= 0")
    configs = args.configs or default_configs()
    start = time.perf_counter()
    rows: List[Dict[str, Any]] = []
    for config_file in configs:
        t0 = time.perf_counter()
        rows.extend(measure_config(config_file, args.opts, args))
        print(f"{config_file}: {time.perf_counter() - t0:.1f} s", flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    h, w = args.input_size
    header = (f"{device}, torch {torch.__version__}; random weights, T={args.num_classes} classes; inference "
              f"batch 1 at {h}×{w} (whole image / sliding window, TEST.SLIDE), median of {args.iters} after "
              f"{args.warmup} warm-up calls; training: batch {args.train_batch} at each config's crop, "
              f"the trainer's step{f' (DDP: {args.ddp} processes, the batch per process)' if args.ddp > 1 else ''}; "
              f"bf16/fp16 = MODEL.PRECISION (the model's autocast; fp16 training with a "
              f"gradient scaler); max |Δ|: whole-image scores vs fp32 on one fixed image. "
              f"Total {time.perf_counter() - start:.0f} s.")
    table = markdown(rows, header)
    print(table)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    write_json(str(out / "table.json"), {"header": header, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
