"""Every warning once per run: a training run prints no notice that asks nothing of the user
(detectron2's "has no VERSION", torch's "No CUDA runtime is found", open_clip's "initialized
randomly" before the weights load, DDP's FutureWarning per rank), and a raster warning raised in
every data-loader worker and pre-flight process appears once."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import ovrsis  # noqa: F401  (compat shims before detectron2)

REPO = Path(__file__).resolve().parents[1]
NOISE = ("has no VERSION", "No CUDA runtime is found", "initialized randomly", "FutureWarning", "Traceback")


def _sixteen_bit_dataset(root: Path, count: int = 6) -> None:
    """4-band uint16 GeoTIFFs whose values exceed RANGE [0, 2500] in ~25 % of the pixels."""
    import cv2
    import rasterio

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        bands = rng.integers(0, 2500, (4, 64, 64)).astype(np.uint16)
        bands[:, :16] = 4000
        with rasterio.open(root / "images" / f"t{i}.tif", "w", driver="GTiff", height=64, width=64, count=4,
                           dtype="uint16") as dst:
            dst.write(bands)
        cv2.imwrite(str(root / "masks" / f"t{i}.png"), rng.integers(0, 2, (64, 64)).astype(np.uint8))


def test_training_run_prints_each_warning_once_and_no_noise(tmp_path):
    _sixteen_bit_dataset(tmp_path / "data")
    entry = {"IMAGE_ROOT": str(tmp_path / "data" / "images"), "MASK_ROOT": str(tmp_path / "data" / "masks"),
             "CLASS_NAMES": ["water", "land"], "BANDS": [3, 2, 1], "SCALING": "fixed", "RANGE": [0, 2500]}
    command = [sys.executable, str(REPO / "train_net.py"), "--config-file", str(REPO / "configs" / "quickstart.yaml"),
               "DATASETS.REGISTER", str({"noisy": entry}), "DATASETS.TRAIN", "('noisy',)", "DATASETS.TEST", "('noisy',)",
               "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "2",
               "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64", "INPUT.CROP.SIZE", "(64, 64)",
               "OUTPUT_DIR", str(tmp_path / "run")]
    env = dict(os.environ, OMP_NUM_THREADS="1", OVRSIS_CACHE=str(tmp_path / "cache"), CUDA_HOME="/usr/local")
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    for text in NOISE:
        assert text not in output, f"{text!r} printed:\n{output[-3000:]}"
    clipped = [line for line in output.splitlines() if "lie outside RANGE" in line]
    assert len(clipped) == 1, "\n".join(clipped)  # pre-flight + 2 loader workers + evaluation: one line


def test_once_marker_is_shared_by_multiprocessing_children_only(tmp_path):
    """A multiprocessing child joins its program's run; another program starts its own."""
    import multiprocessing

    from ovrsis.once import ENV, first_time

    key = f"test-once-{tmp_path.name}"
    assert first_time(key) and not first_time(key)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(first_time, (key,)) is False  # the spawned child sees the parent's marker
        assert pool.apply(first_time, (key + "-child",)) is True
    assert not first_time(key + "-child")
    code = f"from ovrsis.once import first_time; print(first_time({key!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ))
    assert other.stdout.strip().splitlines()[-1] == "True" and os.environ.get(ENV)


def test_ddp_wrapper_raises_no_deprecation_warning(tmp_path, monkeypatch):
    import torch.distributed as dist
    from detectron2.utils import comm

    from ovrsis.engine.trainer import create_ddp_model

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)  # take the DDP branch with one real rank
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            wrapped = create_ddp_model(torch.nn.Linear(2, 2))
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
    finally:
        dist.destroy_process_group()
