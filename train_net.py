#!/usr/bin/env python
"""Train or evaluate an ovrsis model.

    python train_net.py --config-file configs/quickstart.yaml                 # CPU quickstart
    python train_net.py --config-file configs/catseg/vitb16_384.yaml --num-gpus 4
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model.pth
    torchrun --nproc_per_node 2 train_net.py --config-file CFG                  # env:// launch

On CPU, ``--num-gpus N`` starts N gloo processes.
"""
from __future__ import annotations

import json
import logging
import os

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.engine import default_argument_parser
from detectron2.utils import comm

import ovrsis.modeling  # noqa: F401  (registers the meta-architecture)
from ovrsis.checkpoint import OVRSISCheckpointer
from ovrsis.engine import Trainer, launch, report_user_errors, run_preflight, setup_cfg
from ovrsis.engine.cli import parse_args_with_overrides
from ovrsis.evaluation import SUMMARY_KEYS

logger = logging.getLogger("ovrsis")


def loss_trend(output_dir: str) -> str:
    """First and last logged training loss, from metrics.json."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        logged = [(r["iteration"] + 1, r["total_loss"]) for r in map(json.loads, f) if "total_loss" in r]
    if len(logged) < 2:
        return ""
    (i0, l0), (i1, l1) = logged[0], logged[-1]
    return f"training loss (median of the logging window): {l0:.4f} at iteration {i0} -> {l1:.4f} at iteration {i1}"


def summarize(cfg, results) -> None:
    """Print the results table and where everything was written."""
    if not comm.is_main_process() or not results:
        return
    per_dataset = results if all(isinstance(v, dict) and "sem_seg" in v for v in results.values()) else {
        cfg.DATASETS.TEST[0]: results}
    lines = ["", "=" * 72, "Results"]
    for name, res in per_dataset.items():
        metrics = res["sem_seg"]
        cells = [f"{k} {metrics[k]:.2f}" for k in SUMMARY_KEYS if k in metrics]
        lines.append(f"  {name}: " + " | ".join(cells))
    if len(per_dataset) > 1:  # cross-dataset transfer: the mean over the test sets
        mious = [res["sem_seg"]["mIoU"] for res in per_dataset.values() if "mIoU" in res["sem_seg"]]
        lines.append(f"  m-mIoU (mean mIoU over the {len(mious)} test datasets): {sum(mious) / len(mious):.2f}")
    trend = loss_trend(cfg.OUTPUT_DIR)
    if trend:
        lines.append("  " + trend)
    out = os.path.abspath(cfg.OUTPUT_DIR)
    written = [
        ("checkpoint", os.path.join(out, "model_final.pth")),
        ("training metrics", os.path.join(out, "metrics.json")),
        ("resolved config", os.path.join(out, "config.yaml")),
    ] + [(f"{name} metrics", os.path.join(out, "inference", name, "sem_seg_metrics.json")) for name in per_dataset]
    lines.append(f"Output directory: {out}")
    lines += [f"  {what}: {path}" for what, path in written if os.path.exists(path)]
    if any(f.startswith("events.out.tfevents") for f in os.listdir(out)):
        lines.append(f"  TensorBoard events: tensorboard --logdir {out}")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)


def main(args):
    cfg = setup_cfg(args.config_file, args.opts, args)
    run_preflight(cfg, train=not args.eval_only)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS and not args.resume:
            logger.warning("--eval-only without MODEL.WEIGHTS: evaluating a randomly initialised model")
        model = Trainer.build_model(cfg)
        OVRSISCheckpointer.from_config(cfg, model).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results = getattr(trainer, "_last_eval_results", None)  # set by the final evaluation hook
    summarize(cfg, results)
    return results


if __name__ == "__main__":
    args = parse_args_with_overrides(default_argument_parser())  # KEY VALUE pairs may precede options
    timeout = report_user_errors(setup_cfg, args.config_file, args.opts).DIST.TIMEOUT_MINUTES
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), timeout_minutes=timeout)
