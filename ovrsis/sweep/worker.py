"""One run of a sweep, in its own process: train through ``train_net.py``'s ``main``, then score
the weights through ``eval_scripts/run_benchmark.py``'s ``main``, in one launch (same processes,
same process group), so a multi-GPU or multi-node run uses the project's launcher unchanged.

Started by :mod:`ovrsis.sweep.execute` as ``python eval_scripts/sweep.py _worker RUN_DIR ...``;
reads ``RUN_DIR/sweep_run.json`` (the plan) and ``RUN_DIR/sweep_config.yaml`` (the resolved config).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

from .spec import REPO_ROOT

TRAIN_SCRIPT = REPO_ROOT / "train_net.py"
BENCHMARK_SCRIPT = REPO_ROOT / "eval_scripts" / "run_benchmark.py"


def load_script(path: Path) -> ModuleType:
    """Import a script file (``train_net.py``, ``run_benchmark.py``) as a module, once per process."""
    name = f"_ovrsis_script_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def benchmark_argv(plan: dict, run_dir: str) -> list[str]:
    """``run_benchmark.py`` arguments scoring the run's weights on its evaluation datasets."""
    argv = ["--config-file", os.path.join(run_dir, "sweep_config.yaml"), "--output", os.path.join(run_dir, "benchmark")]
    argv += ["--suite", plan["suite"]] if plan.get("suite") else ["--datasets", *plan["datasets"]]
    argv += ["--method", plan["row"]]  # after the dataset list: it ends the list before the KEY VALUE overrides
    if plan.get("protocol"):
        argv += ["--protocol", plan["protocol"]]
    if plan["mode"] == "train":
        argv += ["MODEL.WEIGHTS", os.path.join(run_dir, "model_final.pth")]
    return argv


def _reset_logging() -> None:
    """Drop the training's log handlers before the benchmark runner sets up its own (detectron2's
    ``setup_logger`` adds a console handler per output folder: every line would print twice)."""
    from detectron2.utils.logger import setup_logger

    for name in ("detectron2", "fvcore", "ovrsis"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    setup_logger.cache_clear()


def _job(run_dir: str, train_argv: Sequence[str] | None, bench_argv: Sequence[str]) -> None:
    """Body of every launched process: train (unless done), then evaluate."""
    from detectron2.engine import default_argument_parser
    from detectron2.utils import comm

    if train_argv is not None:
        train_net = load_script(TRAIN_SCRIPT)
        train_net.main(default_argument_parser().parse_args(list(train_argv)))
        comm.synchronize()
        if comm.is_main_process():  # a later retry of a failed evaluation skips training
            from .state import update_state

            update_state(run_dir, trained=True)
        _reset_logging()
    bench = load_script(BENCHMARK_SCRIPT)
    bench.main(bench.build_parser().parse_args(list(bench_argv)))


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="sweep.py _worker", description="run one sweep run (internal)")
    parser.add_argument("run_dir")
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default="auto")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    plan = json.loads(Path(run_dir, "sweep_run.json").read_text())
    config = os.path.join(run_dir, "sweep_config.yaml")
    train_argv = None
    trained = plan.get("trained") and os.path.isfile(os.path.join(run_dir, "model_final.pth"))
    if plan["mode"] == "train" and not trained:
        train_argv = ["--config-file", config, "--num-gpus", str(args.num_gpus), "--num-machines",
                      str(args.num_machines), "--machine-rank", str(args.machine_rank), "--dist-url", args.dist_url]
        train_argv += ["--resume"] if args.resume else []

    import ovrsis  # noqa: F401  (compat shims before detectron2)
    from ovrsis.engine import launch, setup_cfg

    timeout = setup_cfg(config).DIST.TIMEOUT_MINUTES
    launch(_job, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(run_dir, train_argv, benchmark_argv(plan, run_dir)),
           timeout_minutes=timeout)
