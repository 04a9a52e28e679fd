#!/usr/bin/env python
"""Segment whole scenes of any size, streaming: memory independent of the scene (``ovrsis.scene``).

    python tools/predict_scene.py SCENE|FOLDER|GLOB|LIST.txt [...] --config-file CFG --weights CKPT \\
        --classes water "tree, forest" building --output DIR [KEY VALUE ...]

Scenes: files (any GDAL raster: GeoTIFF, COG, JPEG 2000, VRT mosaics), folders (every raster
inside), glob patterns, and ``.txt`` list files (one scene per line; relative paths are read
from the list's folder). Each scene is read window by window, scored with the ``TEST.TILED``
tiles at its stored resolution, and written block by block into ``--output``:

* ``STEM_labels.tif`` — class ids as a cloud-optimised GeoTIFF (input CRS/transform, colour
  table, class names in its metadata, no-data where the input has none);
* ``STEM_probabilities.tif`` (``--probabilities uint8|float16|float32``) — per-class scores;
* ``STEM_polygons.geojson`` (``--polygons``) — the labels as polygons, merged across windows;
* ``STEM_quicklook.png`` — scene and prediction side by side, ``--quicklook`` pixels at most;
* ``STEM_metrics.json`` and ``metrics.json`` (``--labels RASTER|FOLDER``) — the evaluator's
  metrics of each scene and of all scenes together, from a label raster on the scene's grid
  (a folder: the raster with the scene's file stem inside).

A killed run resumes where it stopped; a finished scene is skipped; outputs of another config,
weights, vocabulary or option are never mixed (an error). ``--num-gpus N`` (N gloo processes on
CPU), ``torchrun`` and ``--num-machines``/``--machine-rank``/``--dist-url`` split the scenes across
processes (whole rounds of N scenes one per process, the remaining ones — one large scene on N
GPUs — shared panel by panel); ``--slurm`` submits them instead as ``--jobs`` Slurm jobs through the sweep's submitit
backend (``--slurm-partition``, ``--slurm-time``, ...), requeued when preempted.
Raster flags (``--bands``, ``--scaling``, ``--range``, ``--percentiles``) as in ``tools/demo.py``;
percentile stretches use statistics from overviews or sampled windows, never a full read.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

import ovrsis  # noqa: F401  (compat shims before detectron2)
from demo import (add_model_arguments, add_raster_arguments, expand_inputs, flag_hints, raster_overrides,
                  split_overrides)
from ovrsis.data.raster import RASTER_EXTENSIONS
from ovrsis.engine import launch, report_user_errors
from ovrsis.errors import ConfigError
from ovrsis.scene.outputs import PROBABILITY_FORMATS
from ovrsis.scene.source import scene_percentiles

LIST_EXTENSIONS = (".txt", ".lst")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="SCENE|FOLDER|GLOB|LIST", help="scenes to segment")
    add_model_arguments(parser)  # with --num-gpus, each rank uses its own GPU
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--probabilities", nargs="?", const="uint8", choices=PROBABILITY_FORMATS, default=None,
                        help="also write per-class probabilities (default format: uint8, step 1/254)")
    parser.add_argument("--polygons", action="store_true", help="also write the labels as GeoJSON polygons")
    parser.add_argument("--min-polygon-pixels", type=int, default=0, metavar="N", help="drop smaller regions")
    parser.add_argument("--quicklook", type=int, default=512, metavar="PX",
                        help="long side of the quick-look PNG, 0 = none (default: %(default)s)")
    parser.add_argument("--panel-width", type=int, default=2048, metavar="PX",
                        help="columns scored per panel: memory vs. re-scored seam tiles (default: %(default)s)")
    parser.add_argument("--compress", default="deflate", help="COG compression (default: %(default)s)")
    parser.add_argument("--labels", metavar="RASTER|FOLDER", help="ground truth on the scene's grid: evaluate")
    parser.add_argument("--ignore-value", type=int, default=255, help="ignore id of --labels (default: %(default)s)")
    parser.add_argument("--seen", nargs="+", default=(), metavar="NAME", help="seen classes (s-/u-/h-mIoU)")
    parser.add_argument("--unseen", nargs="+", default=(), metavar="NAME", help="unseen classes")
    add_raster_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    dist = parser.add_argument_group("several processes or machines (the project's launcher)")
    dist.add_argument("--num-gpus", type=int, default=1, help="processes per machine (GPUs; CPU: gloo processes)")
    dist.add_argument("--num-machines", type=int, default=1)
    dist.add_argument("--machine-rank", type=int, default=0)
    dist.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 (several machines)")
    slurm = parser.add_argument_group("Slurm (the sweep's submitit backend)")
    slurm.add_argument("--slurm", nargs="?", const="slurm", choices=("slurm", "local", "debug"), default=None,
                       help="submit the scenes as jobs instead of running them here (local/debug: submitit's "
                            "executors without Slurm)")
    slurm.add_argument("--jobs", type=int, default=1, help="jobs to split the scenes into (default: %(default)s)")
    slurm.add_argument("--slurm-folder", default=None, metavar="DIR", help="submitit logs (default: OUTPUT/slurm)")
    for key in ("partition", "time", "account", "qos", "constraint"):
        slurm.add_argument(f"--slurm-{key}", default=None)
    slurm.add_argument("--slurm-cpus", type=int, default=None, help="CPUs per task")
    slurm.add_argument("--slurm-mem-gb", type=float, default=None)
    parser.epilog = "Config overrides go last, as KEY VALUE pairs (e.g. MODEL.DEVICE cpu TEST.TILED.BATCH 16)."
    return parser


def read_list(path: str) -> list[str]:
    """Scenes named in a list file (one per line; ``#`` comments; relative to the list's folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line if os.path.isabs(line) else os.path.join(folder, line) for line in lines if line]


def expand_scenes(specs: list[str]) -> list[str]:
    """Files, folders, globs (:func:`demo.expand_inputs`) and list files, in order.

    Raises:
        ConfigError: a spec matching nothing, an empty list, or two scenes with one file stem.
    """
    expanded: list[str] = []
    for spec in specs:
        if os.path.isfile(spec) and spec.lower().endswith(LIST_EXTENSIONS):
            listed = read_list(spec)
            if not listed:
                raise ConfigError(f"list file {spec} names no scenes")
            expanded.extend(listed)
        else:
            expanded.append(spec)
    return expand_inputs(expanded)


def label_raster(labels: Optional[str], scene: str) -> Optional[str]:
    """The ground truth of ``scene``: ``labels`` itself, or the raster with the scene's stem in
    the folder ``labels``.

    Raises:
        ConfigError: a folder without that raster, or one raster given for several scenes.
    """
    if labels is None or not os.path.isdir(labels):
        return labels
    stem = Path(scene).stem
    found = sorted(str(p) for p in Path(labels).iterdir() if p.stem == stem and p.suffix.lower() in RASTER_EXTENSIONS)
    if not found:
        raise ConfigError(f"--labels {labels}: no raster named {stem}.* for scene {scene}")
    return found[0]


def scene_options(args: argparse.Namespace, scene: str):
    from ovrsis.scene import SceneOptions

    return SceneOptions(probabilities=args.probabilities, polygons=args.polygons,
                        min_polygon_pixels=args.min_polygon_pixels, quicklook=args.quicklook,
                        panel_width=args.panel_width, compress=args.compress,
                        labels=label_raster(args.labels, scene), ignore_value=args.ignore_value,
                        seen=tuple(args.seen), unseen=tuple(args.unseen))


@flag_hints()
def main(args: argparse.Namespace, overrides: list[str], scenes: list[str]) -> int:
    """One process's share of the scenes: whole rounds of ``world`` scenes are dealt one per
    process, the remaining scenes are shared by all processes panel by panel (one large scene on
    N GPUs); rank 0 prints the totals and, with ``--labels``, writes ``metrics.json`` over all scenes."""
    import torch
    from detectron2.utils import comm
    from tqdm import tqdm

    from ovrsis.predictor import Predictor
    from ovrsis.scene.evaluate import write_metrics
    from ovrsis.scene.predict import peak_rss_mb

    logging.basicConfig(format="%(message)s")
    logging.getLogger("ovrsis.scene").setLevel(logging.INFO)  # the scene evaluation's tables
    rank, world = comm.get_rank(), comm.get_world_size()
    device = args.device
    if device is None and world > 1 and torch.cuda.is_available():
        device = f"cuda:{comm.get_local_rank()}"
    # the stored resolution: no test-time resize, and no whole-image resize before tiling (SegEarth-OV's P-C)
    opts = overrides + raster_overrides(args) + ["INPUT.MIN_SIZE_TEST", "0", "TEST.TILED.LONG_SIDE", "0"]
    predictor = Predictor(args.config_file, args.weights, device=device, inference_mode="tiled", opts=opts)
    names = predictor.set_vocabulary(args.classes if args.classes else args.classes_file)
    raster = predictor.raster
    stats = scene_percentiles(scenes, raster) if raster.scaling == "percentile_dataset" else None
    # whole rounds of `world` scenes go one per process; the remaining scenes are shared panel-wise
    dealt = len(scenes) - len(scenes) % world
    mine = [(s, (0, 1)) for s in scenes[rank:dealt:world]] + [(s, (rank, world)) for s in scenes[dealt:]]
    if rank == 0:
        print(f"{len(scenes)} scene(s), {len(names)} classes, {world} process(es), tiles {predictor.cfg.TEST.TILED.TILE}"
              f" every {predictor.cfg.TEST.TILED.STRIDE}, device {predictor.cfg.MODEL.DEVICE} → {args.output}",
              flush=True)
    start = time.perf_counter()
    confusion = np.zeros((len(names), len(names)), np.int64)
    pixels = 0
    for scene, part in mine:
        result = predictor.predict_scene(scene, names, args.output, scene_options(args, scene), raster, stats,
                                         progress=not args.no_progress, part=part)
        if part[0] != 0:  # a shared scene: process 0 reports it
            continue
        tqdm.write(result.summary() + (f" ({part[1]} processes)" if part[1] > 1 else ""))
        if result.confusion is not None:
            confusion += result.confusion
        pixels += 0 if result.skipped else result.height * result.width
    seconds = time.perf_counter() - start
    totals = comm.all_gather((confusion, pixels, peak_rss_mb()))
    if rank == 0:
        pixels = sum(t[1] for t in totals)
        rate = pixels / 1e6 / seconds if seconds > 0 else float("inf")
        print(f"done: {len(scenes)} scene(s), {pixels / 1e6:.1f} Mpx predicted in {seconds:.1f} s, {rate:.2f} Mpx/s, "
              f"peak RSS {max(t[2] for t in totals):.0f} MB per process", flush=True)
        if args.labels is not None and len(scenes) > 1:
            total = np.sum([t[0] for t in totals], axis=0)
            res = write_metrics(os.path.join(args.output, "metrics.json"), total, names, f"{len(scenes)} scenes",
                                args.seen, args.unseen, args.ignore_value)
            print(f"all scenes: mIoU {res['mIoU']:.2f}, pACC {res['pACC']:.2f} → {args.output}/metrics.json")
    return 0


@dataclass(frozen=True)
class SceneJob:
    """One Slurm job: this tool on a chunk of scenes (picklable for submitit). A job stopped by its
    time limit or preempted is requeued as is; the rerun resumes its scenes from their partial files."""

    argv: tuple
    cwd: str = field(default_factory=os.getcwd)
    python: str = sys.executable

    def __call__(self) -> int:
        import subprocess

        return subprocess.call([self.python, os.path.abspath(__file__), *self.argv], cwd=self.cwd)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def submit(args: argparse.Namespace, argv: list[str], scenes: list[str]) -> list:
    """Submit ``args.jobs`` jobs, each running this tool on every ``jobs``-th scene, through the
    sweep's submitit backend (:func:`ovrsis.sweep.execute.slurm_parameters`); returns the jobs."""
    import submitit

    from ovrsis.sweep.execute import slurm_parameters

    valued = {"--jobs", "--slurm-folder", "--slurm-partition", "--slurm-time", "--slurm-account", "--slurm-qos",
              "--slurm-constraint", "--slurm-cpus", "--slurm-mem-gb"}
    arguments, overrides = split_overrides(argv)
    positional, kept, i = set(args.inputs), [], 0
    while i < len(arguments):  # the job's own arguments: no Slurm flags, no scenes (given per job)
        word = arguments[i]
        if word == "--slurm":
            i += 2 if i + 1 < len(arguments) and arguments[i + 1] in ("slurm", "local", "debug") else 1
        elif word.split("=", 1)[0] in valued:
            i += 1 if "=" in word else 2
        else:
            if word not in positional:
                kept.append(word)
            i += 1
    kept += overrides
    folder = args.slurm_folder or os.path.join(args.output, "slurm")
    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=args.slurm)
    settings = {"partition": args.slurm_partition, "time": args.slurm_time or 1440, "account": args.slurm_account,
                "qos": args.slurm_qos, "constraint": args.slurm_constraint, "gpus_per_node": args.num_gpus,
                "cpus_per_task": args.slurm_cpus, "mem_gb": args.slurm_mem_gb}
    jobs = []
    for i in range(min(args.jobs, len(scenes))):
        executor.update_parameters(**slurm_parameters(settings, f"predict_scene/{i}"))
        chunk = [os.path.abspath(s) for s in scenes[i::args.jobs]]
        jobs.append(executor.submit(SceneJob(tuple(chunk + kept))))
        print(f"job {jobs[-1].job_id}: {len(chunk)} scene(s)", flush=True)
    return jobs


def run(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    arguments, overrides = split_overrides(argv)
    args = build_parser().parse_args(arguments)
    scenes = expand_scenes(args.inputs)
    if args.labels is not None and not os.path.isdir(args.labels) and len(scenes) > 1:
        raise ConfigError(f"--labels {args.labels} is one raster but {len(scenes)} scenes are given: pass a folder "
                          "holding one label raster per scene stem")
    if args.slurm:
        jobs = submit(args, argv, scenes)
        if args.slurm == "debug":  # submitit runs debug jobs in this process when asked for their results
            return max((job.result() for job in jobs), default=0)
        return 0
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args, overrides, scenes))
    return 0


if __name__ == "__main__":
    sys.exit(report_user_errors(run))
