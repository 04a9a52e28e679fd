#!/usr/bin/env python
"""fp32 / bf16 / fp16 / compiled side by side: inference and training steps of one model, same
weights, one run with the calls alternated (a shared machine's drifts hit every variant alike).

Variants: ``fp32``, ``bf16``, ``fp16`` (``MODEL.PRECISION``, the model's own autocast; fp16
training with the trainer's gradient scaler) and ``compiled`` (fp32 with ``torch.compile`` of
the aggregator and the decoder via ``nn.Module.compile``: state-dict names unchanged). Each
variant gets its own copy of the same initial weights and its own optimizer, so training steps
compare like for like. Reported per variant: median whole-image inference and training-step
wall time (after ``--warmup`` calls, the compile included there), the ratio to fp32, the max
|score difference| from fp32 on one seeded image, the first step's loss, and the memory a
training forward pass keeps for backward (the tensors autograd saves, counted once per storage:
exact and noise-free on any device, where a CPU process's peak RSS hides it in the allocator's
reuse).

    python tools/precision_benchmark.py --config-file configs/catseg/vitb16_384.yaml --iters 3
"""
from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import ovrsis  # noqa: F401  (CPU process defaults before torch, compat shims before detectron2)
import torch
from detectron2.utils.events import EventStorage

from _common import add_common_args, build, dummy_vocabulary, input_size, load_cfg, write_json
from ovrsis.engine import Trainer
from ovrsis.engine.trainer import PrecisionTrainer

VARIANTS = ("fp32", "bf16", "fp16", "compiled")


def make_variant(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """A copy of ``model`` (same weights) running as ``name``."""
    variant = copy.deepcopy(model)
    variant.precision = "fp32" if name == "compiled" else name
    if name == "compiled":
        variant.aggregator.compile()
        variant.decoder.compile()
    return variant


def saved_for_backward_mib(model: torch.nn.Module, batch: List[Dict]) -> float:
    """MiB of the distinct storages autograd saves during one training forward pass of ``model``."""
    storages: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(batch)
    sum(losses.values()).backward()  # frees the graph
    model.zero_grad(set_to_none=True)
    return sum(storages.values()) / 2**20


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--iters", type=int, default=3, help="timed calls per variant and phase (alternated)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per variant first (compiles)")
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory column")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if "fp32" not in args.variants:
        parser.error("--variants must include fp32 (the reference)")
    cfg = load_cfg(args.config_file, list(args.opts))
    torch.manual_seed(cfg.SEED)
    base = build(cfg)
    classes = dummy_vocabulary(args.num_classes)
    base.set_vocabulary(classes)
    base.set_vocabulary(classes, train=True)
    h, w = input_size(cfg, args.input_size)
    g = torch.Generator().manual_seed(0)
    image = [{"image": torch.rand(3, h, w, generator=g) * 255, "height": h, "width": w}]
    ch, cw = cfg.INPUT.CROP.SIZE
    batch = [{"image": torch.rand(3, ch, cw, generator=g) * 255,
              "sem_seg": torch.randint(0, len(classes), (ch, cw), generator=g)} for _ in range(args.train_batch)]
    device = base.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return 1e3 * (time.perf_counter() - start)

    models = {name: make_variant(base, name).eval() for name in args.variants}
    scores: Dict[str, torch.Tensor] = {}
    infer: Dict[str, List[float]] = {n: [] for n in models}
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            for name, model in models.items():
                t = timed(lambda: scores.__setitem__(name, model(image)[0]["sem_seg"].float().cpu()))
                if i == 0:
                    infer[name + "_first"] = [t]
                if i >= args.warmup:
                    infer[name].append(t)
    trainers, losses, train = {}, {}, {n: [] for n in models}
    for name, model in models.items():
        model.train()
        trainers[name] = PrecisionTrainer(model, itertools.repeat(batch), Trainer.build_optimizer(cfg, model),
                                          model.precision, device.type)
    with EventStorage(0) as storage:
        for i in range(args.warmup + args.iters):
            for name, trainer in trainers.items():
                t = timed(trainer.run_step)
                losses.setdefault(name, storage.latest()["total_loss"][0])
                if i >= args.warmup:
                    train[name].append(t)
    memory: Dict[str, float] = {}
    if args.memory:
        for name, model in models.items():
            memory[name] = saved_for_backward_mib(model.train(), batch)
    rows = []
    ref_infer, ref_train = statistics.median(infer["fp32"]), statistics.median(train["fp32"])
    for name in models:
        rows.append({
            "variant": name, "inference_ms": statistics.median(infer[name]),
            "inference_vs_fp32": statistics.median(infer[name]) / ref_infer,
            "first_inference_ms": infer[name + "_first"][0],
            "train_step_ms": statistics.median(train[name]), "train_vs_fp32": statistics.median(train[name]) / ref_train,
            "max_abs_diff_vs_fp32": float((scores[name] - scores["fp32"]).abs().max()),
            "first_loss": losses[name], "saved_for_backward_mib": memory.get(name, float("nan"))})
    print(f"{args.config_file}: {h}x{w} inference, train batch {args.train_batch} at {ch}x{cw}, "
          f"{len(classes)} classes, {torch.get_num_threads()} threads, {args.iters} alternated calls after "
          f"{args.warmup} warm-up")
    print("| variant | inference (ms) | vs fp32 | first call (ms) | train step (ms) | vs fp32 | max |Δ| vs fp32 | "
          "first loss | saved for backward (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['inference_ms']:.0f} | {r['inference_vs_fp32']:.2f} | "
              f"{r['first_inference_ms']:.0f} | {r['train_step_ms']:.0f} | {r['train_vs_fp32']:.2f} | "
              f"{r['max_abs_diff_vs_fp32']:.1e} | {r['first_loss']:.5f} | {r['saved_for_backward_mib']:.0f} |")
    report = {"config_file": args.config_file, "threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
